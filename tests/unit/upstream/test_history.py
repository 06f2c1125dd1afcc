"""The history ring (zmqwamp/upstream/history.py): bounds, coverage, last value and replay, without a reactor."""

import pytest

from zmqwamp.upstream.history import MessageHistory, message_cost


def ids(held) -> list[int]:
    return [h[0] for h in held]


def test_bounded_by_count_oldest_evicted_first():
    """Past max_messages the oldest message goes first, and the ring no longer covers the ids before the oldest kept."""
    ring = MessageHistory(3, 1000)
    ring.restart(0)
    for pid in range(1, 6):
        assert ring.add(pid, [f"m{pid}".encode()])
    assert ids(ring.messages()) == [3, 4, 5]
    assert len(ring) == 3 and ring.bytes == 3 * message_cost([b"m1"])
    assert ring.complete_after == 2  # 1 and 2 were evicted


def test_bounded_by_bytes_counting_every_frame_and_the_overhead():
    """max_bytes counts each message's frames and Python's overhead per message and per frame; the oldest go to make room."""
    two, one = message_cost([b"aaaa", b"b"]), message_cost([b"cccc"])
    assert two == one + 1 + 56 and one == 184 + 56 + 4  # the per-message and per-frame overhead counts
    ring = MessageHistory(100, two + one + 10)
    ring.restart(0)
    ring.add(1, [b"aaaa", b"b"])
    ring.add(2, [b"cccc"])
    assert ids(ring.messages()) == [1, 2] and ring.bytes == two + one
    ring.add(3, [b"dd" * 6])  # over -> evicts 1
    assert ids(ring.messages()) == [2, 3] and ring.bytes == one + message_cost([b"dd" * 6])
    assert ring.complete_after == 1


def test_a_message_over_max_bytes_is_not_kept_and_restarts_coverage():
    """A message larger than the whole ring is not kept: the ring empties and starts again after it, with no stale last value."""
    ring = MessageHistory(100, message_cost([b"x" * 10]))
    ring.restart(0)
    ring.add(1, [b"small"])
    generation = ring.generation
    assert not ring.add(2, [b"x" * 11])
    assert ring.generation == generation + 1
    assert len(ring) == 0 and ring.bytes == 0 and ring.too_large == 1
    assert not ring.covers(1) and ring.covers(2)
    assert ring.newest(b"") is None  # the stale value before it is not the last value
    ring.add(3, [b"next"])
    assert ids(ring.since(2, b"")) == [3]


def test_newest_matching_a_prefix_of_the_first_frame():
    """The last value for a filter is the newest message whose first frame starts with it (later frames do not count)."""
    ring = MessageHistory(10, 1000)
    ring.restart(0)
    ring.add(1, [b"eur 1"])
    ring.add(2, [b"usd 1", b"eur in the second frame"])
    ring.add(3, [b"eur 2"])
    ring.add(4, [b"usd 2"])
    assert ring.newest(b"eur")[0] == 3
    assert ring.newest(b"usd")[1] == (b"usd 2",)
    assert ring.newest(b"")[0] == 4
    assert ring.newest(b"chf") is None


def test_since_in_order_after_the_id_matching_the_filter():
    """since(id, filter): the messages after id that match, in order; the ring covers the ids since it started."""
    ring = MessageHistory(10, 1000)
    ring.restart(10)
    for pid, topic in [(11, b"a"), (13, b"b"), (14, b"a"), (20, b"a")]:  # ids are shared by every address
        ring.add(pid, [topic])
    assert ids(ring.since(11, b"a")) == [14, 20]
    assert ids(ring.since(0, b"")) == [11, 13, 14, 20]
    assert ids(ring.since(20, b"")) == []
    assert ring.covers(10) and ring.covers(12) and not ring.covers(9)


def test_restart_forgets_and_moves_the_coverage_start():
    """restart(id) forgets every message and covers only from id on."""
    ring = MessageHistory(10, 1000)
    ring.restart(0)
    ring.add(1, [b"a"])
    ring.restart(7)
    assert len(ring) == 0 and ring.bytes == 0
    assert not ring.covers(1) and ring.covers(7)


@pytest.mark.parametrize("count, size", [(0, 10), (10, 0), (-1, 10)])
def test_empty_bounds_refused(count, size):
    """A ring of no messages or no bytes is refused (ValueError)."""
    with pytest.raises(ValueError):
        MessageHistory(count, size)


# -- issue 21: positions, binary search, generations, memory accounting ---------------------------------------


def test_positions_survive_eviction_and_compaction():
    """Absolute positions: at() reads by position in O(1); evicted positions fall below start, others stay valid."""
    ring = MessageHistory(3000, 1 << 30)
    ring.restart(0)
    for pid in range(1, 10_001):
        ring.add(pid, [b"m"])
    assert (ring.start, ring.end, len(ring)) == (7000, 10_000, 3000)
    assert ring.at(7000)[0] == 7001 and ring.at(9999)[0] == 10_000
    assert len(ring._items) < 2 * 3000 + 1024  # compacted: evicted slots do not pile up
    assert [h[0] for h in ring.window(9997, 10_000)] == [9998, 9999, 10_000]


def test_position_after_is_a_binary_search_over_publication_ids():
    """_since: 2**53 on a full ring cost 3.4 s when it walked the ring (issue 21): now O(log n) reads."""
    ring = MessageHistory(100_000, 1 << 30)
    ring.restart(0)
    for pid in range(10, 1_000_010, 10):  # ids with holes (an id skipped at each reopen)
        ring.add(pid, [b"x"])
    reads = 0

    class CountingList(list):
        def __getitem__(self, index):
            nonlocal reads
            reads += 1
            return super().__getitem__(index)

    ring._items = CountingList(ring._items)
    assert ring.position_after(2**53) == ring.end
    assert reads <= 20, reads  # log2(100,000) ~ 17
    assert ring.at(ring.position_after(999_995))[0] == 1_000_000
    assert ring.at(ring.position_after(999_990))[0] == 1_000_000
    assert ring.position_after(0) == ring.start


def test_a_restart_bumps_the_generation_and_positions_go_on():
    """A restart starts a new generation whose positions go on from the old end, so a replay's cursor can tell."""
    ring = MessageHistory(10, 1 << 20)
    ring.restart(0)
    for pid in (1, 2, 3):
        ring.add(pid, [b"a"])
    generation, end = ring.generation, ring.end
    ring.restart(5)
    assert ring.generation == generation + 1
    assert ring.start == ring.end == end  # the new generation's positions start where the old ones ended
    ring.add(6, [b"b"])
    assert ring.at(end)[0] == 6


def test_history_bytes_bounds_the_memory_held_not_only_the_frames():
    """Issue 21 item 5: 100,000 six-byte messages grew RSS 24 MiB with history_bytes 4 MiB (frames only were
    counted); 100 empty frames per message, 111 MiB.  The cost counted is at least what tracemalloc sees."""
    import tracemalloc

    cases = {
        "six bytes": lambda i: [b"seq %02d" % (i % 100)],
        "100 empty frames": lambda i: [bytes(0) for _ in range(100)],
        "100 two-byte frames": lambda i: [b"%02d" % (j % 100) for j in range(100)],
        "three 17-byte frames": lambda i: [bytes([i % 256]) * 17 for _ in range(3)],
        "one 1000-byte frame": lambda i: [bytes([i % 256]) * 1000],
    }
    for name, make in cases.items():
        ring = MessageHistory(5000, 1 << 40)
        ring.restart(0)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for pid in range(1, 5001):
            ring.add(pid, make(pid))  # frames made here, as pyzmq makes them: only the ring holds them
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert grown <= ring.bytes, f"{name}: {grown / 5000:.0f} bytes per message, {ring.bytes / 5000} counted"
        assert ring.bytes <= 7 * grown, name  # an upper bound, but not a wild one (empty frames: ~6x)
    ring = MessageHistory(100_000, 4 * 1024 * 1024)
    ring.restart(0)
    for pid in range(1, 100_001):
        ring.add(pid, [bytes(100)] * 1 + [b""] * 99)
    assert ring.bytes <= 4 * 1024 * 1024 and len(ring) < 1000  # the byte limit engages
