"""History aliases in the hub and the session (issue 17), in memory: get_retained, _since, _gap, keep_open, reload.

Messages are handed to the hub as its SUB socket would (``hub._message``); sessions speak JSON WAMP.
"""

from __future__ import annotations

import pytest

from zmqwamp.testing import joined, received, send
from zmqwamp.upstream.endpoints import Endpoint
from zmqwamp.upstream.history import message_cost

from memory import PUB, SlowNames, run_replays

TICKS = Endpoint(PUB, kind="sub", alias="ticks", history=5, history_bytes=100_000, keep_open=True)


def configure(world, *endpoints: Endpoint) -> None:
    """What a bridge does at start and on reload: the resolver's aliases, then the hub's histories."""
    world.router.resolver.aliases = {e.alias: e for e in endpoints}
    world.hub.configure_history(endpoints)


def publish(world, *messages: bytes, address: str = PUB) -> list[int]:
    """Hand messages to the hub as its SUB socket would; their publication ids."""
    ids = []
    for message in messages:
        world.hub._message(address, [message])
        ids.append(world.hub.last_publication(address))
    return ids


def events(channel) -> list[list]:
    return [msg for msg in received(channel) if msg[0] == 36]


def subscribe(world, options: dict, uri: str = "ticks", request: int = 1):
    """A new session subscribed with ``options``: (session, channel, what it received, subscription id)."""
    session, channel = joined(world)
    send(session, 32, request, options, uri)
    run_replays(world)
    got = received(channel)
    assert got[0][:2] == [33, request], got
    return session, channel, got[1:], got[0][2]


def sample(world, name: str, **labels) -> float | None:
    return world.metrics.registry.get_sample_value(name, labels)


def test_welcome_announces_retention_and_history():
    from zmqwamp.testing import make_world, new_session

    world = make_world()
    try:
        session, channel = new_session(world)
        send(session, 1, "zmqwamp", {"roles": {"subscriber": {}}})
        features = received(channel)[0][2]["roles"]["broker"]["features"]
        assert features["event_retention"] is True and features["_event_history"] is True
        assert features["subscription_revocation"] is True
    finally:
        world.close()


def test_keep_open_records_with_no_subscriber_and_get_retained_gets_the_newest_match(world):
    configure(world, TICKS)
    assert world.hub.addresses == [PUB]  # opened for the history, nobody subscribed
    ids = publish(world, b"eur 1", b"usd 1", b"eur 2", b"usd 2")
    _, channel, got, sid = subscribe(world, {"get_retained": True, "_filter": "eur"})
    assert got == [[36, sid, ids[2], {"retained": True, "_epoch": world.hub.epoch}, ["eur 2"]]]
    (live,) = publish(world, b"eur 3")
    assert events(channel)[-1] == [36, sid, live, {"_epoch": world.hub.epoch}, ["eur 3"]]
    assert sample(world, "zmqwamp_history_replayed_total") == 1


def test_get_retained_with_nothing_matching_sends_nothing_but_subscribed(world):
    configure(world, TICKS)
    publish(world, b"usd 1")
    _, channel, got, _ = subscribe(world, {"get_retained": True, "_filter": "eur"})
    assert got == []


def test_the_ring_holds_messages_no_filter_asked_for(world):
    """While open, the SUB socket is subscribed to everything: a later filter finds its last value."""
    configure(world, TICKS)
    _, first, _, _ = subscribe(world, {"_filter": "eur"})
    ids = publish(world, b"chf 1", b"eur 1")
    assert [e[4] for e in events(first)] == [["eur 1"]]
    _, _, got, sid = subscribe(world, {"get_retained": True, "_filter": "chf"})
    assert got == [[36, sid, ids[0], {"retained": True, "_epoch": world.hub.epoch}, ["chf 1"]]]


def test_since_replays_what_was_missed_in_order_then_live_without_gap_or_duplicate(world):
    configure(world, TICKS)
    session, channel, _, sid = subscribe(world, {})
    seen = publish(world, b"a 1", b"a 2")
    assert [e[2] for e in events(channel)] == seen
    send(session, 34, 2, sid)  # unsubscribe: the connection stays open (keep_open), the ring goes on
    missed = publish(world, b"a 3", b"b 1", b"a 4")
    _, again, got, sid2 = subscribe(world, {"_since": seen[-1], "_epoch": world.hub.epoch})
    assert [(e[2], e[3], e[4]) for e in got] == [
        (p, {"_epoch": world.hub.epoch}, [m]) for p, m in zip(missed, ["a 3", "b 1", "a 4"], strict=True)
    ]
    live = publish(world, b"a 5")
    assert [e[2] for e in events(again)] == missed + live
    assert "_gap" not in events(again)[-1][3]
    assert sample(world, "zmqwamp_history_replayed_total") == 3
    assert sample(world, "zmqwamp_history_gaps_total", reason="history") is None


def test_since_with_a_filter_replays_only_matching_messages(world):
    configure(world, TICKS)
    ids = publish(world, b"a 1", b"b 1", b"a 2", b"b 2")
    _, _, got, _ = subscribe(world, {"_since": ids[0], "_filter": "b"})  # no _epoch: this process's
    assert [e[2] for e in got] == [ids[1], ids[3]]


def test_history_shorter_than_the_gap_sends_what_it_has_and_says_so_once(world):
    configure(world, TICKS)  # 5 messages
    ids = publish(world, *[f"m {i}".encode() for i in range(8)])
    _, channel, got, _ = subscribe(world, {"_since": ids[0], "_epoch": world.hub.epoch})
    assert [e[2] for e in got] == ids[3:]
    assert got[0][3] == {"_epoch": world.hub.epoch, "_gap": {"since": ids[0], "reason": "history", "first": ids[3]}}
    assert all("_gap" not in e[3] for e in got[1:])
    publish(world, b"m 9")
    assert "_gap" not in events(channel)[-1][3]
    assert sample(world, "zmqwamp_history_gaps_total", reason="history") == 1


def test_an_id_from_another_process_gets_everything_held_and_an_epoch_gap(world):
    configure(world, TICKS)
    ids = publish(world, b"a 1", b"a 2")
    _, _, got, _ = subscribe(world, {"_since": 10**6, "_epoch": "another process"})
    assert [e[2] for e in got] == ids
    assert got[0][3]["_gap"] == {"since": 10**6, "reason": "epoch", "first": ids[0]}
    assert sample(world, "zmqwamp_history_gaps_total", reason="epoch") == 1


def test_since_wins_over_get_retained(world):
    configure(world, TICKS)
    ids = publish(world, b"a 1", b"a 2", b"a 3")
    _, _, got, _ = subscribe(world, {"_since": ids[0], "get_retained": True})
    assert [(e[2], "retained" in e[3]) for e in got] == [(ids[1], False), (ids[2], False)]


def test_a_gap_with_nothing_to_replay_is_told_on_the_first_live_event_of_that_session_only(world):
    configure(world, TICKS)
    _, other, _, sid = subscribe(world, {"_filter": "eur"})
    publish(world, b"usd 1")
    _, channel, got, sid2 = subscribe(world, {"_since": 0, "_epoch": "old", "_filter": "eur"})
    assert got == [] and sid2 == sid
    first, second = publish(world, b"eur 1", b"eur 2")
    mine, theirs = events(channel), events(other)
    assert mine[0] == [
        36,
        sid,
        first,
        {"_epoch": world.hub.epoch, "_gap": {"since": 0, "reason": "epoch", "first": first}},
        ["eur 1"],
    ]
    assert mine[1] == theirs[1] == [36, sid, second, {"_epoch": world.hub.epoch}, ["eur 2"]]
    assert theirs[0] == [36, sid, first, {"_epoch": world.hub.epoch}, ["eur 1"]]


def test_since_on_an_endpoint_without_history_is_a_no_history_gap_not_an_error(world):
    _, plain, _, sid = subscribe(world, {}, uri=PUB)
    _, channel, got, _ = subscribe(world, {"_since": 3}, uri=PUB)
    assert got == []
    first, second = publish(world, b"x", b"y")
    assert events(channel)[0] == [36, sid, first, {"_gap": {"since": 3, "reason": "no_history", "first": first}}, ["x"]]
    assert events(channel)[1] == events(plain)[1] == [36, sid, second, {}, ["y"]]  # no _epoch without history
    assert sample(world, "zmqwamp_history_gaps_total", reason="no_history") == 1


def test_get_retained_on_an_endpoint_without_history_sends_nothing(world):
    subscribe(world, {}, uri=PUB)
    publish(world, b"x")
    _, _, got, _ = subscribe(world, {"get_retained": True}, uri=PUB)
    assert got == []


@pytest.mark.parametrize(
    "options",
    [
        {"_since": "12"},
        {"_since": -1},
        {"_since": True},
        {"_since": 1.5},
        {"_since": 2**53 + 1},
        {"_since": 1, "_epoch": 7},
        {"_since": 1, "_epoch": "e" * 65},
    ],
)
def test_a_malformed_since_or_epoch_is_an_invalid_argument_error(world, options):
    configure(world, TICKS)
    session, channel = joined(world)
    send(session, 32, 7, options, "ticks")
    (error,) = received(channel)
    assert error[:5] == [8, 32, 7, {}, "wamp.error.invalid_argument"]
    channel.sent.clear()
    send(session, 32, 8, {}, "ticks")  # the session goes on
    assert received(channel)[0][:2] == [33, 8]


def test_without_keep_open_the_history_starts_again_when_the_connection_reopens(world):
    ticks = Endpoint(PUB, kind="sub", alias="ticks", history=5, history_bytes=100_000)
    configure(world, ticks)
    assert world.hub.addresses == []  # no keep_open: opened by the first subscriber
    session, _, _, sid = subscribe(world, {})
    ids = publish(world, b"a 1", b"a 2")
    send(session, 34, 2, sid)
    assert world.hub.addresses == []
    publish(world, b"a 3")  # nobody listens: lost
    assert sample(world, "zmqwamp_history_messages", endpoint="ticks") == 0
    _, _, got, _ = subscribe(world, {"_since": ids[-1]})
    assert got == []
    (live,) = publish(world, b"a 4")
    _, _, got_retained, _ = subscribe(world, {"get_retained": True})
    assert [e[2] for e in got_retained] == [live]


def test_the_gap_after_a_reopen_is_reported(world):
    ticks = Endpoint(PUB, kind="sub", alias="ticks", history=5, history_bytes=100_000)
    configure(world, ticks)
    session, _, _, sid = subscribe(world, {})
    ids = publish(world, b"a 1")
    send(session, 34, 2, sid)
    publish(world, b"a 2")
    _, channel, _, _ = subscribe(world, {"_since": ids[-1]})
    (live,) = publish(world, b"a 3")
    assert events(channel)[0][3]["_gap"] == {"since": ids[-1], "reason": "history", "first": live}


def test_metrics_show_messages_and_bytes_held_per_alias(world):
    configure(world, TICKS)
    publish(world, b"12345", b"123")
    assert sample(world, "zmqwamp_history_messages", endpoint="ticks") == 2
    # what they take in memory, overhead included (issue 21 item 5): what history_bytes bounds
    assert sample(world, "zmqwamp_history_bytes", endpoint="ticks") == message_cost([b"12345"]) + message_cost([b"123"])
    publish(world, *[b"x"] * 10)
    assert sample(world, "zmqwamp_history_messages", endpoint="ticks") == 5


def test_a_message_over_history_bytes_is_counted_and_empties_the_ring(world):
    small = Endpoint(PUB, kind="sub", alias="ticks", history=5, history_bytes=message_cost([b"x" * 10]), keep_open=True)
    configure(world, small)
    publish(world, b"ok")
    publish(world, b"x" * 11)
    assert sample(world, "zmqwamp_history_too_large_total", endpoint="ticks") == 1
    assert sample(world, "zmqwamp_history_messages", endpoint="ticks") == 0
    _, _, got, _ = subscribe(world, {"get_retained": True})
    assert got == []  # "ok" is not the last value any more


def test_reload_keeps_an_unchanged_ring(world):
    configure(world, TICKS)
    ids = publish(world, b"a 1")
    configure(world, TICKS)  # unchanged: what it holds stays
    _, _, got, _ = subscribe(world, {"get_retained": True})
    assert [e[2] for e in got] == ids


def test_reload_closes_a_connection_no_longer_kept_open_unless_someone_is_subscribed(world):
    configure(world, TICKS)
    assert world.hub.addresses == [PUB]
    configure(world)  # the alias is gone
    assert world.hub.addresses == []
    assert sample(world, "zmqwamp_history_messages", endpoint="ticks") is None
    configure(world, TICKS)
    session, _, _, sid = subscribe(world, {})
    configure(world, Endpoint(PUB, kind="sub", alias="ticks", history=5, history_bytes=100_000))  # keep_open off
    assert world.hub.addresses == [PUB]  # its subscriber still holds it
    send(session, 34, 2, sid)
    assert world.hub.addresses == []


def test_reload_gaining_history_records_from_then_on_an_open_connection(world):
    plain = Endpoint(PUB, kind="sub", alias="ticks")
    configure(world, plain)
    subscribe(world, {})  # opens the connection, no history
    publish(world, b"before")
    gained = Endpoint(PUB, kind="sub", alias="ticks", history=5, history_bytes=100_000)
    configure(world, gained)
    ids = publish(world, b"after")
    _, _, got, _ = subscribe(world, {"get_retained": True})
    assert [(e[2], e[4]) for e in got] == [(ids[0], ["after"])]
    configure(world, plain)  # loses it again: nothing held, nothing recorded
    publish(world, b"later")
    assert sample(world, "zmqwamp_history_messages", endpoint="ticks") is None


def test_replay_waits_for_subscribed_while_the_host_name_resolves(world):
    names = world.hub.sockets.names = SlowNames()
    slow = Endpoint("tcp://pubhost:9000", kind="sub", alias="ticks", history=5, history_bytes=100_000)
    configure(world, slow)
    session, channel = joined(world)
    send(session, 32, 1, {"_since": 0, "_epoch": "old"}, "ticks")
    send(session, 32, 2, {"get_retained": True, "_filter": "x"}, "ticks")
    assert received(channel) == []  # nothing before SUBSCRIBED
    names.pending[0].callback("tcp://127.0.0.1:9000")
    run_replays(world)
    got = received(channel)
    assert [m[:2] for m in got] == [[33, 1], [33, 2]]
    (live,) = publish(world, b"x 1", address="tcp://pubhost:9000")
    evs = events(channel)
    assert [e[2] for e in evs] == [live, live]
    assert [("_gap" in e[3]) for e in evs] == [True, False]
    assert evs[0][3]["_gap"] == {"since": 0, "reason": "epoch", "first": live}


def test_a_keep_open_address_whose_name_does_not_resolve_closes_and_its_next_subscriber_opens_it(world):
    """A keep_open SUB whose host name fails closes, as every connection does (it stayed open and never connected:
    SUBSCRIBED, then no EVENT ever); the next SUBSCRIBE opens it again and waits for the name."""
    from zmqwamp.upstream.resolver import NameNotResolved

    names = world.hub.sockets.names = SlowNames()
    address = "tcp://pubhost:9000"
    configure(world, Endpoint(address, kind="sub", alias="ticks", history=5, history_bytes=100_000, keep_open=True))
    assert world.hub.addresses == [address]
    names.pending[0].errback(NameNotResolved("host name 'pubhost' did not resolve: unknown"))
    assert world.hub.addresses == [] and sample(world, "zmqwamp_zmq_sockets_open", kind="sub") == 0
    session, channel = joined(world)
    send(session, 32, 1, {}, "ticks")
    assert received(channel) == [] and len(names.pending) == 2  # waits for the name, asked again
    names.pending[1].callback("tcp://127.0.0.1:9000")
    assert received(channel)[0][:2] == [33, 1]
    assert [e.address for e in world.hub._connections[address].endpoints] == ["tcp://127.0.0.1:9000"]
