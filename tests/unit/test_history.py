"""The history ring (zmqwamp/history.py): bounds, coverage, last value and replay, without a reactor."""

import pytest

from zmqwamp.history import MessageHistory


def ids(held) -> list[int]:
    return [h.publication for h in held]


def test_bounded_by_count_oldest_evicted_first():
    ring = MessageHistory(3, 1000)
    ring.restart(0)
    for pid in range(1, 6):
        assert ring.add(pid, [f"m{pid}".encode()])
    assert ids(ring.messages) == [3, 4, 5]
    assert len(ring) == 3 and ring.bytes == 6
    assert ring.complete_after == 2  # 1 and 2 were evicted


def test_bounded_by_bytes_counting_every_frame():
    ring = MessageHistory(100, 10)
    ring.restart(0)
    ring.add(1, [b"aaaa", b"b"])  # 5
    ring.add(2, [b"cccc"])  # 9
    assert ids(ring.messages) == [1, 2] and ring.bytes == 9
    ring.add(3, [b"dd"])  # 11 -> evicts 1
    assert ids(ring.messages) == [2, 3] and ring.bytes == 6
    assert ring.complete_after == 1


def test_a_message_over_max_bytes_is_not_kept_and_restarts_coverage():
    ring = MessageHistory(100, 10)
    ring.restart(0)
    ring.add(1, [b"small"])
    assert not ring.add(2, [b"x" * 11])
    assert len(ring) == 0 and ring.bytes == 0 and ring.too_large == 1
    assert not ring.covers(1) and ring.covers(2)
    assert ring.newest(b"") is None  # the stale value before it is not the last value
    ring.add(3, [b"next"])
    assert ids(ring.since(2, b"")) == [3]


def test_newest_matching_a_prefix_of_the_first_frame():
    ring = MessageHistory(10, 1000)
    ring.restart(0)
    ring.add(1, [b"eur 1"])
    ring.add(2, [b"usd 1", b"eur in the second frame"])
    ring.add(3, [b"eur 2"])
    ring.add(4, [b"usd 2"])
    assert ring.newest(b"eur").publication == 3
    assert ring.newest(b"usd").frames == [b"usd 2"]
    assert ring.newest(b"").publication == 4
    assert ring.newest(b"chf") is None


def test_since_in_order_after_the_id_matching_the_filter():
    ring = MessageHistory(10, 1000)
    ring.restart(10)
    for pid, topic in [(11, b"a"), (13, b"b"), (14, b"a"), (20, b"a")]:  # ids are shared by every address
        ring.add(pid, [topic])
    assert ids(ring.since(11, b"a")) == [14, 20]
    assert ids(ring.since(0, b"")) == [11, 13, 14, 20]
    assert ids(ring.since(20, b"")) == []
    assert ring.covers(10) and ring.covers(12) and not ring.covers(9)


def test_restart_forgets_and_moves_the_coverage_start():
    ring = MessageHistory(10, 1000)
    ring.restart(0)
    ring.add(1, [b"a"])
    ring.restart(7)
    assert len(ring) == 0 and ring.bytes == 0
    assert not ring.covers(1) and ring.covers(7)


@pytest.mark.parametrize("count, size", [(0, 10), (10, 0), (-1, 10)])
def test_empty_bounds_refused(count, size):
    with pytest.raises(ValueError):
        MessageHistory(count, size)
