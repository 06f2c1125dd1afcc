"""zmqwamp.upstream.replay: history replays in memory (issue 21): in steps across reactor turns, catching up with what
arrives meanwhile, joining live delivery in the turn they reach the ring's end, gaps, a full outgoing buffer,
duplicate SUBSCRIBEs, the cost charged per client address, leaving and revocation during a replay.  The publication
counter per address: test_hub.py; the SUBSCRIBE rate: tests/unit/wamp/test_session.py; a reload during a SUBSCRIBE:
tests/unit/wamp/test_router.py.

The replays' cooperator is stepped by the test (:class:`Steps`): one replay step per tick, so a test can publish
between two steps as the SUB socket would between two reactor turns.
"""

from __future__ import annotations

import pytest
from twisted.logger import LogLevel

from zmqwamp.testing import events, joined, received, send
from zmqwamp.upstream.endpoints import Endpoint
from zmqwamp.upstream.history import message_cost
from zmqwamp.upstream.replay import SEND_STEP, ReplayBudget, Replayer

from memory import PUB, SlowNames, configure, publish_each

TICKS = Endpoint(PUB, kind="sub", alias="ticks", history=1000, history_bytes=1 << 24, keep_open=True)
LIMIT = "zmqwamp.error.limit_exceeded"


class _Call:
    def __init__(self, steps: Steps, work) -> None:
        self.steps, self.work = steps, work

    def cancel(self) -> None:
        self.steps.pending.remove(self)


class Steps:
    """The replays' cooperator scheduler, driven by the test: ``tick()`` runs one step of one replay."""

    def __init__(self) -> None:
        self.pending: list[_Call] = []

    def __call__(self, work) -> _Call:
        call = _Call(self, work)
        self.pending.append(call)
        return call

    def tick(self) -> bool:
        if not self.pending:
            return False
        self.pending.pop(0).work()
        return True

    def run(self, limit: int = 100_000) -> int:
        for ticks in range(limit):
            if not self.tick():
                return ticks
        raise AssertionError("replays still stepping")


def use_replayer(world, *, rate: float = 1e12, burst: float | None = None) -> Steps:
    """The hub's replays on a cooperator the test steps, one replay step per tick, and a budget on its clock."""
    steps = Steps()
    world.hub.replayer = Replayer(
        world.clock,
        world.metrics,
        ReplayBudget(rate, burst, clock=world.clock.seconds),
        world.hub.epoch,
        world.context.client_log,
        time_slice=0,
        scheduler=steps,
    )
    return steps


@pytest.fixture
def steps(world) -> Steps:
    s = use_replayer(world)
    configure(world, TICKS)
    return s


def numbered(world, n: int, prefix: bytes = b"m") -> list[int]:
    return publish_each(world, *[b"%s %d" % (prefix, i) for i in range(n)])


def ids_of(channel) -> list[int]:
    return [e[2] for e in events(channel)]


def sample(world, name: str, **labels) -> float:
    return world.metrics.registry.get_sample_value(name, labels) or 0.0


def start(world, options: dict, uri: str = "ticks", peer: str = "test-peer", roles: dict | None = None):
    """A new session's SUBSCRIBE: (session, channel, subscription id); nothing replayed yet (the test steps it)."""
    session, channel = joined(world, peer=peer, roles=roles)
    send(session, 32, 1, options, uri)
    (reply,) = received(channel)
    assert reply[:2] == [33, 1], reply
    return session, channel, reply[2]


def subscription(world, sid: int):
    return world.hub._by_id[sid]


# -- in steps, catching up, joining live ------------------------------------------------------------------------


def test_a_replay_runs_in_steps_across_reactor_turns(world, steps):
    """_since: 0 on a 100,000-message ring was 2.5 s of CPU in one reactor turn; now at most SEND_STEP EVENTs a step."""
    held = numbered(world, 1000)
    _, channel, _ = start(world, {"_since": 0})
    assert events(channel) == []  # SUBSCRIBED first, the replay in later turns
    assert steps.tick()
    assert ids_of(channel) == held[:SEND_STEP]
    ticks = steps.run()
    assert ids_of(channel) == held
    assert ticks + 1 >= 1000 // SEND_STEP
    assert world.hub.replayer.running == 0 and sample(world, "zmqwamp_history_replays_running") == 0


def test_what_arrives_during_a_replay_is_caught_up_then_live_nothing_lost_or_twice(world, steps):
    """Messages that arrive while a replay runs are replayed too; the subscriber joins live in the turn it catches up: each once, in order."""
    held = numbered(world, 300)
    _, watcher, sid = start(world, {})  # live all along
    session, channel, sid2 = start(world, {"_since": held[9]})
    assert sid2 == sid
    sub = subscription(world, sid)
    arrived = []
    while session in sub.replays:
        assert session not in sub.subscribers  # not in the live fan-out while its replay runs
        steps.tick()
        arrived += numbered(world, 7, b"late")
    assert session in sub.subscribers and not steps.pending  # joined in the turn the cursor reached the end
    live = numbered(world, 5, b"live")
    assert ids_of(channel) == held[10:] + arrived + live  # in order, each once
    assert ids_of(watcher) == arrived + live  # the live subscriber was not disturbed
    assert all("_gap" not in e[3] for e in events(channel))


def test_replays_of_several_sessions_take_turns(world, steps):
    """Replays take turns, one step of SEND_STEP EVENTs each, and all finish."""
    held = numbered(world, 1000)
    _, a, _ = start(world, {"_since": 0})
    _, b, _ = start(world, {"_since": 0})
    for _ in range(4):
        steps.tick()
    assert len(events(a)) == len(events(b)) == 2 * SEND_STEP  # round robin, one step each
    steps.run()
    assert ids_of(a) == ids_of(b) == held


def test_since_above_any_id_of_that_address_costs_a_binary_search_and_says_history(world, steps):
    """_since: 2**53 walked the whole ring (3.4 s on 100,000 messages); it is no id of this address: a gap."""
    numbered(world, 1000)
    _, channel, _ = start(world, {"_since": 2**53})
    steps.run()
    assert sample(world, "zmqwamp_history_scanned_total") == 0 and events(channel) == []
    (live,) = publish_each(world, b"next")
    assert events(channel) == [
        [36, events(channel)[0][1], live, {"_epoch": world.hub.epoch, "_gap": {"since": 2**53, "reason": "history", "first": live}}, ["next"]]
    ]


# -- gaps -----------------------------------------------------------------------------------------------------


def test_eviction_past_the_cursor_is_a_history_gap_then_the_rest_in_order(world):
    """Messages evicted before the replay reached them become one _gap (reason history); the rest follow in order."""
    steps = use_replayer(world)
    configure(world, Endpoint(PUB, kind="sub", alias="ticks", history=200, history_bytes=1 << 24, keep_open=True))
    held = numbered(world, 200)
    _, channel, _ = start(world, {"_since": held[0]})
    steps.tick()
    last = ids_of(channel)[-1]
    assert last == held[SEND_STEP]
    later = numbered(world, 300, b"later")  # the ring (200) evicts past the cursor
    steps.run()
    got = events(channel)
    after = got[SEND_STEP:]
    assert after[0][3]["_gap"] == {"since": last, "reason": "history", "first": later[100]}
    assert [e[2] for e in after] == later[100:]  # what the ring still holds, in order
    assert all("_gap" not in e[3] for e in after[1:])
    assert sample(world, "zmqwamp_history_gaps_total", reason="history") == 1


def test_a_ring_that_starts_again_during_a_replay_is_a_history_gap_and_the_subscriber_joins_live(world):
    """A ring that starts again under a running replay ends it: the subscriber joins live, its next EVENT carries the _gap."""
    steps = use_replayer(world)
    ticks = Endpoint(PUB, kind="sub", alias="ticks", history=1000, history_bytes=message_cost([b"x" * 100]) * 1000,
                     keep_open=True)
    configure(world, ticks)
    held = numbered(world, 500)
    _, channel, _ = start(world, {"_since": 0})
    steps.tick()
    publish_each(world, b"x" * (message_cost([b"x" * 100]) * 1000))  # too large to keep: the ring starts again
    steps.run()
    (live,) = publish_each(world, b"after")
    got = events(channel)
    assert [e[2] for e in got] == held[:SEND_STEP] + [live]
    assert got[-1][3]["_gap"] == {"since": held[SEND_STEP - 1], "reason": "history", "first": live}


def test_a_full_outgoing_buffer_stops_the_replay_and_the_client_can_resume_from_the_gap(world, steps):
    """A full outgoing buffer stops the replay (the subscriber goes live, owed a slow_consumer _gap); SUBSCRIBE again with that _since resumes it, nothing lost."""
    held = numbered(world, 500)
    session, channel = joined(world)
    channel.room = 10 * 60  # about ten EVENTs, then the client reads nothing
    send(session, 32, 1, {"_since": 0}, "ticks")
    steps.run()
    got = events(channel)
    assert 5 <= len(got) < 20 and [e[2] for e in got] == held[: len(got)]
    last = got[-1][2]
    assert world.hub.replayer.running == 0  # stopped, not waiting: the subscriber is live now
    assert sample(world, "zmqwamp_history_gaps_total", reason="slow_consumer") == 1
    (skipped,) = publish_each(world, b"while full")  # live, but no room: skipped, still within the gap owed
    assert len(events(channel)) == len(got)
    assert sample(world, "zmqwamp_dropped_total", reason="slow_consumer") == 1
    channel.room = 1 << 30  # the client reads again
    (live,) = publish_each(world, b"after")
    gap_event = events(channel)[-1]
    assert gap_event[2] == live and gap_event[3]["_gap"] == {"since": last, "reason": "slow_consumer", "first": live}
    # resume: SUBSCRIBE again with _since = the gap's since (WAMP: the same subscription id)
    channel.sent.clear()
    send(session, 32, 2, {"_since": last, "_epoch": world.hub.epoch}, "ticks")
    assert received(channel)[0][:2] == [33, 2]
    steps.run()
    (more,) = publish_each(world, b"more")
    assert ids_of(channel) == held[len(got) :] + [skipped, live, more]


def test_get_retained_with_a_full_buffer_says_slow_consumer_since_the_subscribe(world, steps):
    """get_retained into a full buffer sends nothing and the next EVENT says slow_consumer since the SUBSCRIBE."""
    numbered(world, 10)
    session, channel = joined(world)
    channel.room = 0
    send(session, 32, 1, {"get_retained": True}, "ticks")
    steps.run()
    channel.room = 1 << 30
    (live,) = publish_each(world, b"next")
    (event,) = events(channel)
    assert event[3]["_gap"] == {"since": live - 1, "reason": "slow_consumer", "first": live}


# -- get_retained ---------------------------------------------------------------------------------------------


def test_get_retained_scans_back_in_steps_then_sends_what_arrived_during_the_scan(world, steps):
    """1,000 get_retained SUBSCRIBEs with a filter matching nothing walked the ring each (10 s): now in steps,
    charged; the newest match at SUBSCRIBE time, then the matches that arrived during the scan, then live."""
    configure(world, Endpoint(PUB, kind="sub", alias="ticks", history=20_000, history_bytes=1 << 26, keep_open=True))
    (old,) = publish_each(world, b"eur old")
    numbered(world, 10_000, b"usd")
    _, channel, _ = start(world, {"get_retained": True, "_filter": "eur"})
    steps.tick()
    assert events(channel) == []  # 4,096 looked at, no match yet
    new1, _, new2 = publish_each(world, b"eur new 1", b"usd x", b"eur new 2")
    steps.run()
    (live,) = publish_each(world, b"eur live")
    got = events(channel)
    assert [(e[2], e[3].get("retained", False)) for e in got] == [(old, True), (new1, False), (new2, False), (live, False)]
    assert sample(world, "zmqwamp_history_scanned_total") == 10_001 + 3


def test_get_retained_with_nothing_matching_sends_nothing_and_joins_live(world, steps):
    """get_retained with no match in the ring (however large) sends nothing and the subscriber gets the next live EVENT."""
    numbered(world, 5000, b"usd")
    _, channel, _ = start(world, {"get_retained": True, "_filter": "chf"})
    steps.run()
    (live,) = publish_each(world, b"chf 1")
    assert [(e[2], e[3]) for e in events(channel)] == [(live, {"_epoch": world.hub.epoch})]


# -- duplicates, leaving, revocation ------------------------------------------------------------------------------


def test_a_subscribe_again_with_a_recovery_while_its_replay_runs_is_refused(world, steps):
    """Ten pipelined duplicates from a client that never reads cost 112 s of CPU: each replayed the whole ring."""
    held = numbered(world, 1000)
    session, channel = joined(world)
    for request in range(1, 11):
        send(session, 32, request, {"_since": 0}, "ticks")
    send(session, 32, 11, {}, "ticks")  # a plain SUBSCRIBE again changes nothing
    replies = [m for m in received(channel) if m[0] in (33, 8)]
    assert [m[0] for m in replies] == [33] + [8] * 9 + [33]
    assert all(m[4] == LIMIT and m[5][0].startswith("replay_in_progress") for m in replies[1:10])
    assert sample(world, "zmqwamp_limit_exceeded_total", limit="replay_in_progress") == 9
    steps.run()
    assert ids_of(channel) == held  # one replay
    assert sample(world, "zmqwamp_history_replayed_total") == 1000


def test_unsubscribe_during_a_replay_stops_it(world, steps):
    """UNSUBSCRIBE during a replay stops it at once: no more EVENTs, no task left."""
    numbered(world, 1000)
    session, channel, sid = start(world, {"_since": 0})
    steps.tick()
    send(session, 34, 2, sid)
    assert received(channel)[-1] == [35, 2]
    assert steps.run() == 0 and len(events(channel)) == SEND_STEP
    assert world.hub.replayer.running == 0 and not world.hub.replayer.cooperator._tasks
    publish_each(world, b"after")
    assert len(events(channel)) == SEND_STEP


def test_the_session_ending_during_a_replay_stops_it(world, steps):
    """A session that ends during its replay stops the replay and leaves the subscription."""
    numbered(world, 1000)
    session, channel, sid = start(world, {"_since": 0})
    steps.tick()
    session.transport_lost()
    steps.run()
    assert len(events(channel)) == SEND_STEP and world.hub.replayer.running == 0
    assert sid not in world.hub._by_id or session not in subscription(world, sid).members()


def test_a_revocation_during_a_replay_stops_it(world, steps):
    """A subscription revoked during its replay: UNSUBSCRIBED 0, and the replay stops."""
    numbered(world, 1000)
    session, channel, sid = start(world, {"_since": 0}, roles={"subscriber": {"features": {"subscription_revocation": True}}})
    steps.tick()
    world.router.authorize = lambda *a: False
    world.router.recheck_subscriptions()
    assert [35, 0, {"subscription": sid, "reason": "wamp.error.not_authorized"}] in received(channel)
    steps.run()
    assert len(events(channel)) == SEND_STEP and world.hub.replayer.running == 0


def test_a_subscribe_that_has_to_wait_for_the_name_replays_once_subscribed(world):
    """The connection opens when the name resolves: the ring is empty then, the gap (epoch) goes to the first live."""
    steps = use_replayer(world)
    names = world.hub.sockets.names = SlowNames()
    slow = Endpoint("tcp://pubhost:9000", kind="sub", alias="ticks", history=5, history_bytes=1 << 20)
    configure(world, slow)
    session, channel = joined(world)
    send(session, 32, 1, {"_since": 0, "_epoch": "old"}, "ticks")
    send(session, 32, 2, {"_since": 0, "_epoch": "old"}, "ticks")  # again, before SUBSCRIBED: refused
    assert [m[:2] for m in received(channel)] == [[8, 32]]
    names.pending[0].callback("tcp://127.0.0.1:9000")
    steps.run()
    assert [m[:2] for m in received(channel)] == [[8, 32], [33, 1]]


# -- cost per client address -------------------------------------------------------------------------------------


def test_replay_work_is_charged_to_the_client_address(world):
    """Replay work is charged to the client's address: two sessions of one address share its rate, another address is not held back."""
    steps = use_replayer(world, rate=640, burst=640)  # 640 EVENTs a second (and a held message 1/100 of one)
    configure(world, TICKS)
    numbered(world, 1000)
    _, a, _ = start(world, {"_since": 0}, peer="tcp4:10.0.0.1:1000")
    _, b, _ = start(world, {"_since": 0}, peer="tcp4:10.0.0.1:1001")  # same address: one budget
    _, c, _ = start(world, {"_since": 0}, peer="tcp4:10.0.0.2:1000")
    steps.run()  # what the burst allows, then they wait
    first_a, first_b, first_c = len(events(a)), len(events(b)), len(events(c))
    assert first_a + first_b <= 640 + 2 * SEND_STEP and first_c >= 640 - SEND_STEP
    assert sample(world, "zmqwamp_history_replay_throttled_total") >= 2
    for _ in range(10):  # one second later: another 640 for each address
        world.clock.advance(0.1)
        steps.run()
    assert len(events(a)) + len(events(b)) - first_a - first_b <= 640 + 2 * SEND_STEP
    assert len(events(c)) == 1000  # the other address was not held back by the first
    for _ in range(100):
        world.clock.advance(0.1)
        steps.run()
    assert ids_of(a) == ids_of(b) == ids_of(c)  # all of it in the end
    assert world.hub.replayer.running == 0


def test_budgets_of_addresses_that_refilled_are_forgotten():
    """The budgets of addresses whose bucket is full again are forgotten, so the table stays small."""
    clock = [0.0]
    budget = ReplayBudget(10, clock=lambda: clock[0])
    for i in range(1100):
        budget.charge(i, 1)
    clock[0] = 10.0
    budget.charge("new", 1)
    assert len(budget._buckets) < 1100


def test_undecodable_held_messages_are_logged_once_per_replay_with_the_count(world, steps, log_events):
    """Item 6: a json-codec alias holding non-JSON messages logged one warning per held message for each _since: 0."""
    configure(world, Endpoint(PUB, kind="sub", alias="ticks", codec="json", history=1000, history_bytes=1 << 24,
                              keep_open=True))
    publish_each(world, *[b"not json %d" % i for i in range(200)], b"[1]")
    log_events.clear()
    _, channel, _ = start(world, {"_since": 0})
    steps.run()
    assert [e[4] for e in events(channel)] == [[[1]]]
    lines = [e for e in log_events if e["log_level"] >= LogLevel.warn]
    assert len(lines) == 1, [e.get("log_format") for e in lines[:3]]
    assert "not decodable" in lines[0]["log_format"] and lines[0]["n"] == 200
    assert sample(world, "zmqwamp_dropped_total", reason="event_codec") == 200
