"""zmqwamp.upstream.hub: shared SUB connections and their fan-out (one subscription per endpoint and filter, EVENTs
encoded once per serializer, publication ids per address, the filters per address), and history aliases (issue
17): get_retained, _since, _gap, keep_open, reload, in memory.  Messages come as from the SUB socket
(zmqwamp.testing.publish); sessions speak JSON WAMP.  The replays in steps: test_replay.py.
"""

from __future__ import annotations

import json

import pytest
from autobahn.wamp.serializer import MsgPackObjectSerializer

from zmqwamp.testing import events, joined, new_session, publish, received, send
from zmqwamp.upstream.endpoints import Endpoint
from zmqwamp.upstream.history import message_cost

from memory import PUB, SlowNames, configure, publish_each, run_replays

TICKS = Endpoint(PUB, kind="sub", alias="ticks", history=5, history_bytes=100_000, keep_open=True)


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


# -- fan-out -----------------------------------------------------------------------------------------------------------


def test_subscription_ids_are_shared_and_events_serialized_once(world):
    """Two sessions, one (endpoint, filter): same id; one event is encoded once per serializer."""
    a, ta = joined(world)
    b, tb = joined(world)
    c, tc = new_session(world, MsgPackObjectSerializer())
    c.message_received(MsgPackObjectSerializer().serialize([1, "zmqwamp", {"roles": {"subscriber": {}}}]), True)
    assert MsgPackObjectSerializer().unserialize(tc.sent[0][0])[0][0] == 2
    tc.sent.clear()
    send(a, 32, 1, {"filter": "hugo"}, PUB)
    send(b, 32, 9, {}, PUB + "?filter=hugo")
    c.message_received(MsgPackObjectSerializer().serialize([32, 2, {"filter": "hugo"}, PUB]), True)
    sid = received(ta)[0][2]
    assert received(tb)[0] == [33, 9, sid]
    assert MsgPackObjectSerializer().unserialize(tc.sent[0][0])[0] == [33, 2, sid]
    for t in (ta, tb, tc):
        t.sent.clear()
        t.prepared = 0
    publish(world, PUB, b"hugo 1")
    publish(world, PUB, b"otto 1")
    assert ta.sent == tb.sent and len(ta.sent) == 1
    assert json.loads(ta.sent[0][0])[0:2] == [36, sid]
    assert json.loads(ta.sent[0][0])[4] == ["hugo 1"]
    assert ta.prepared + tb.prepared == 1 and tc.prepared == 1


class EventRecorder:
    def __init__(self):
        self.args = []

    def send_event(self, subscription, publication, args, details, prepared):
        self.args.append(args)
        return 1


def test_a_message_matching_filters_with_different_codecs_reaches_each(world):
    """One zmq message, two filters it matches, each subscribed through an endpoint with its own codec."""
    as_text, as_bytes = EventRecorder(), EventRecorder()
    world.hub.subscribe(as_text, Endpoint(PUB, kind="sub", codec="text"), b"hu")
    world.hub.subscribe(as_bytes, Endpoint(PUB, kind="sub", codec="binary"), b"hugo")
    publish(world, PUB, b"hugo 1", b"two")
    assert as_text.args == [["hugo 1", "two"]]
    assert as_bytes.args == [[b"hugo 1", b"two"]]


def test_aliases_of_one_address_are_subscriptions_of_their_own(world):
    """Same address and filter through endpoints with different codecs: two ids, each decoded its way, one SUB socket."""
    as_text, as_bytes, also_text = EventRecorder(), EventRecorder(), EventRecorder()
    text = Endpoint(PUB, kind="sub", codec="text", alias="prices")
    a, _ = world.hub.subscribe(as_text, text, b"")
    b, _ = world.hub.subscribe(as_bytes, Endpoint(PUB, kind="sub", codec="binary", alias="raw-prices"), b"")
    c, _ = world.hub.subscribe(also_text, text, b"")
    assert a.id != b.id and a is c and world.hub.addresses == [PUB]
    publish(world, PUB, b"hugo 1")
    assert as_text.args == also_text.args == [["hugo 1"]] and as_bytes.args == [[b"hugo 1"]]
    assert world.hub.unsubscribe(as_bytes, b.id) and world.hub.addresses == [PUB]
    publish(world, PUB, b"hugo 2")
    assert as_bytes.args == [[b"hugo 1"]] and as_text.args[-1] == ["hugo 2"]
    assert world.hub.unsubscribe(as_text, a.id) and world.hub.unsubscribe(also_text, a.id)
    assert world.hub.addresses == [] and world.hub.subscription_count() == 0


def test_distinct_filters_per_address_are_capped_across_subscribers(world):
    """max_filters distinct filters per address, whoever holds them; joining a held filter (even through an alias)
    is free; an unsubscribed filter frees its place."""
    from zmqwamp.upstream.errors import LimitExceeded

    world.hub.max_filters = 2
    a, b = EventRecorder(), EventRecorder()
    first, _ = world.hub.subscribe(a, Endpoint(PUB), b"one")
    world.hub.subscribe(a, Endpoint(PUB), b"two")
    with pytest.raises(LimitExceeded, match="max_filters_per_endpoint"):
        world.hub.subscribe(b, Endpoint(PUB), b"three")
    world.hub.subscribe(b, Endpoint(PUB), b"one")
    world.hub.subscribe(b, Endpoint(PUB, alias="feed"), b"two")  # same filter, another endpoint of the address
    world.hub.subscribe(b, Endpoint("tcp://127.0.0.1:9001"), b"three")  # another address has its own count
    world.hub.unsubscribe(a, first.id)
    world.hub.unsubscribe(b, first.id)
    world.hub.subscribe(b, Endpoint(PUB), b"three")


def test_publication_ids_count_per_address_and_tell_nothing_of_other_endpoints(world):
    """Publication ids count per address: another address's traffic leaves no trace in them."""
    other = "tcp://127.0.0.1:9001"
    session, channel = joined(world)
    send(session, 32, 1, {}, PUB)
    send(session, 32, 2, {}, other)
    for i in range(3):
        publish_each(world, b"public %d" % i)
        publish_each(world, *[b"secret"] * 50, address=other)  # another topic's traffic
    public = [e[2] for e in events(channel) if e[4][0].startswith("public")]
    assert public == [1, 2, 3]


def test_an_address_with_history_counts_on_across_close_and_reopen(world):
    """An address with history keeps counting across close and reopen (one id skipped: a _since from before is a gap); one without starts again."""
    ticks = Endpoint(PUB, kind="sub", alias="ticks", history=5, history_bytes=1 << 20)  # no keep_open
    configure(world, ticks)
    session, channel = joined(world)
    send(session, 32, 1, {}, "ticks")
    before = publish_each(world, b"a", b"b")
    send(session, 34, 2, received(channel)[0][2])
    assert world.hub.addresses == []
    send(session, 32, 3, {}, "ticks")
    (after,) = publish_each(world, b"c")
    assert after > before[-1] + 1  # and one id skipped at the reopen: a _since from before is a gap
    plain = "tcp://127.0.0.1:9002"
    send(session, 32, 4, {}, plain)
    plain_id = received(channel)[-1][2]
    first = publish_each(world, b"x", address=plain)
    send(session, 34, 5, plain_id)
    send(session, 32, 6, {}, plain)
    assert publish_each(world, b"y", address=plain) == first  # no history: a new counter (ids meaningless across)


# -- history: get_retained, _since, _gap -------------------------------------------------------------------------------


def test_keep_open_records_with_no_subscriber_and_get_retained_gets_the_newest_match(world):
    """A keep_open alias records with no one subscribed; get_retained sends the newest matching message (retained), then live EVENTs."""
    configure(world, TICKS)
    assert world.hub.addresses == [PUB]  # opened for the history, nobody subscribed
    ids = publish_each(world, b"eur 1", b"usd 1", b"eur 2", b"usd 2")
    _, channel, got, sid = subscribe(world, {"get_retained": True, "_filter": "eur"})
    assert got == [[36, sid, ids[2], {"retained": True, "_epoch": world.hub.epoch}, ["eur 2"]]]
    (live,) = publish_each(world, b"eur 3")
    assert events(channel)[-1] == [36, sid, live, {"_epoch": world.hub.epoch}, ["eur 3"]]
    assert sample(world, "zmqwamp_history_replayed_total") == 1


def test_get_retained_with_nothing_matching_sends_nothing_but_subscribed(world):
    """get_retained with nothing matching sends SUBSCRIBED and nothing else."""
    configure(world, TICKS)
    publish_each(world, b"usd 1")
    _, channel, got, _ = subscribe(world, {"get_retained": True, "_filter": "eur"})
    assert got == []


def test_the_ring_holds_messages_no_filter_asked_for(world):
    """While open, the SUB socket is subscribed to everything: a later filter finds its last value."""
    configure(world, TICKS)
    _, first, _, _ = subscribe(world, {"_filter": "eur"})
    ids = publish_each(world, b"chf 1", b"eur 1")
    assert [e[4] for e in events(first)] == [["eur 1"]]
    _, _, got, sid = subscribe(world, {"get_retained": True, "_filter": "chf"})
    assert got == [[36, sid, ids[0], {"retained": True, "_epoch": world.hub.epoch}, ["chf 1"]]]


def test_since_replays_what_was_missed_in_order_then_live_without_gap_or_duplicate(world):
    """_since replays exactly what was missed, in order, then live, with no _gap and no duplicate."""
    configure(world, TICKS)
    session, channel, _, sid = subscribe(world, {})
    seen = publish_each(world, b"a 1", b"a 2")
    assert [e[2] for e in events(channel)] == seen
    send(session, 34, 2, sid)  # unsubscribe: the connection stays open (keep_open), the ring goes on
    missed = publish_each(world, b"a 3", b"b 1", b"a 4")
    _, again, got, sid2 = subscribe(world, {"_since": seen[-1], "_epoch": world.hub.epoch})
    assert [(e[2], e[3], e[4]) for e in got] == [
        (p, {"_epoch": world.hub.epoch}, [m]) for p, m in zip(missed, ["a 3", "b 1", "a 4"], strict=True)
    ]
    live = publish_each(world, b"a 5")
    assert [e[2] for e in events(again)] == missed + live
    assert "_gap" not in events(again)[-1][3]
    assert sample(world, "zmqwamp_history_replayed_total") == 3
    assert sample(world, "zmqwamp_history_gaps_total", reason="history") is None


def test_since_with_a_filter_replays_only_matching_messages(world):
    """_since with a filter replays only the matching messages (no _epoch: this process's ids)."""
    configure(world, TICKS)
    ids = publish_each(world, b"a 1", b"b 1", b"a 2", b"b 2")
    _, _, got, _ = subscribe(world, {"_since": ids[0], "_filter": "b"})  # no _epoch: this process's
    assert [e[2] for e in got] == [ids[1], ids[3]]


def test_history_shorter_than_the_gap_sends_what_it_has_and_says_so_once(world):
    """A ring shorter than what was missed sends what it holds, the first with a _gap (reason history), once."""
    configure(world, TICKS)  # 5 messages
    ids = publish_each(world, *[f"m {i}".encode() for i in range(8)])
    _, channel, got, _ = subscribe(world, {"_since": ids[0], "_epoch": world.hub.epoch})
    assert [e[2] for e in got] == ids[3:]
    assert got[0][3] == {"_epoch": world.hub.epoch, "_gap": {"since": ids[0], "reason": "history", "first": ids[3]}}
    assert all("_gap" not in e[3] for e in got[1:])
    publish_each(world, b"m 9")
    assert "_gap" not in events(channel)[-1][3]
    assert sample(world, "zmqwamp_history_gaps_total", reason="history") == 1


def test_an_id_from_another_process_gets_everything_held_and_an_epoch_gap(world):
    """A _since from another process (another _epoch) gets everything held, the first EVENT with an epoch _gap."""
    configure(world, TICKS)
    ids = publish_each(world, b"a 1", b"a 2")
    _, _, got, _ = subscribe(world, {"_since": 10**6, "_epoch": "another process"})
    assert [e[2] for e in got] == ids
    assert got[0][3]["_gap"] == {"since": 10**6, "reason": "epoch", "first": ids[0]}
    assert sample(world, "zmqwamp_history_gaps_total", reason="epoch") == 1


def test_since_wins_over_get_retained(world):
    """With both, _since decides: the missed messages, none marked retained."""
    configure(world, TICKS)
    ids = publish_each(world, b"a 1", b"a 2", b"a 3")
    _, _, got, _ = subscribe(world, {"_since": ids[0], "get_retained": True})
    assert [(e[2], "retained" in e[3]) for e in got] == [(ids[1], False), (ids[2], False)]


def test_a_gap_with_nothing_to_replay_is_told_on_the_first_live_event_of_that_session_only(world):
    """A gap with nothing to replay rides on the session's first live EVENT; the other subscribers' copy has none."""
    configure(world, TICKS)
    _, other, _, sid = subscribe(world, {"_filter": "eur"})
    publish_each(world, b"usd 1")
    _, channel, got, sid2 = subscribe(world, {"_since": 0, "_epoch": "old", "_filter": "eur"})
    assert got == [] and sid2 == sid
    first, second = publish_each(world, b"eur 1", b"eur 2")
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
    """_since on an endpoint without history is SUBSCRIBED and a no_history _gap on the first EVENT, not an ERROR."""
    _, plain, _, sid = subscribe(world, {}, uri=PUB)
    _, channel, got, _ = subscribe(world, {"_since": 3}, uri=PUB)
    assert got == []
    first, second = publish_each(world, b"x", b"y")
    assert events(channel)[0] == [36, sid, first, {"_gap": {"since": 3, "reason": "no_history", "first": first}}, ["x"]]
    assert events(channel)[1] == events(plain)[1] == [36, sid, second, {}, ["y"]]  # no _epoch without history
    assert sample(world, "zmqwamp_history_gaps_total", reason="no_history") == 1


def test_get_retained_on_an_endpoint_without_history_sends_nothing(world):
    """get_retained on an endpoint without history sends nothing but SUBSCRIBED."""
    subscribe(world, {}, uri=PUB)
    publish_each(world, b"x")
    _, _, got, _ = subscribe(world, {"get_retained": True}, uri=PUB)
    assert got == []


# -- history: keep_open, metrics, reload, host names -------------------------------------------------------------------


def test_without_keep_open_the_history_starts_again_when_the_connection_reopens(world):
    """Without keep_open the ring lives with the connection: what came while it was closed is lost, and it starts again."""
    ticks = Endpoint(PUB, kind="sub", alias="ticks", history=5, history_bytes=100_000)
    configure(world, ticks)
    assert world.hub.addresses == []  # no keep_open: opened by the first subscriber
    session, _, _, sid = subscribe(world, {})
    ids = publish_each(world, b"a 1", b"a 2")
    send(session, 34, 2, sid)
    assert world.hub.addresses == []
    publish_each(world, b"a 3")  # nobody listens: lost
    assert sample(world, "zmqwamp_history_messages", endpoint="ticks") == 0
    _, _, got, _ = subscribe(world, {"_since": ids[-1]})
    assert got == []
    (live,) = publish_each(world, b"a 4")
    _, _, got_retained, _ = subscribe(world, {"get_retained": True})
    assert [e[2] for e in got_retained] == [live]


def test_the_gap_after_a_reopen_is_reported(world):
    """A _since from before a reopen gets a history _gap on the first EVENT after it."""
    ticks = Endpoint(PUB, kind="sub", alias="ticks", history=5, history_bytes=100_000)
    configure(world, ticks)
    session, _, _, sid = subscribe(world, {})
    ids = publish_each(world, b"a 1")
    send(session, 34, 2, sid)
    publish_each(world, b"a 2")
    _, channel, _, _ = subscribe(world, {"_since": ids[-1]})
    (live,) = publish_each(world, b"a 3")
    assert events(channel)[0][3]["_gap"] == {"since": ids[-1], "reason": "history", "first": live}


def test_metrics_show_messages_and_bytes_held_per_alias(world):
    """zmqwamp_history_messages and _bytes show per alias what its ring holds, overhead included."""
    configure(world, TICKS)
    publish_each(world, b"12345", b"123")
    assert sample(world, "zmqwamp_history_messages", endpoint="ticks") == 2
    # what they take in memory, overhead included (issue 21 item 5): what history_bytes bounds
    assert sample(world, "zmqwamp_history_bytes", endpoint="ticks") == message_cost([b"12345"]) + message_cost([b"123"])
    publish_each(world, *[b"x"] * 10)
    assert sample(world, "zmqwamp_history_messages", endpoint="ticks") == 5


def test_a_message_over_history_bytes_is_counted_and_empties_the_ring(world):
    """A message over history_bytes is counted (history_too_large) and empties the ring: the old last value is gone."""
    small = Endpoint(PUB, kind="sub", alias="ticks", history=5, history_bytes=message_cost([b"x" * 10]), keep_open=True)
    configure(world, small)
    publish_each(world, b"ok")
    publish_each(world, b"x" * 11)
    assert sample(world, "zmqwamp_history_too_large_total", endpoint="ticks") == 1
    assert sample(world, "zmqwamp_history_messages", endpoint="ticks") == 0
    _, _, got, _ = subscribe(world, {"get_retained": True})
    assert got == []  # "ok" is not the last value any more


def test_reload_keeps_an_unchanged_ring(world):
    """A reload that leaves an alias as it was keeps what its ring holds."""
    configure(world, TICKS)
    ids = publish_each(world, b"a 1")
    configure(world, TICKS)  # unchanged: what it holds stays
    _, _, got, _ = subscribe(world, {"get_retained": True})
    assert [e[2] for e in got] == ids


def test_reload_closes_a_connection_no_longer_kept_open_unless_someone_is_subscribed(world):
    """A reload that drops an alias or its keep_open closes the connection, unless a subscriber still holds it."""
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
    """An alias that gains history on reload records from then on over its open connection; one that loses it holds nothing."""
    plain = Endpoint(PUB, kind="sub", alias="ticks")
    configure(world, plain)
    subscribe(world, {})  # opens the connection, no history
    publish_each(world, b"before")
    gained = Endpoint(PUB, kind="sub", alias="ticks", history=5, history_bytes=100_000)
    configure(world, gained)
    ids = publish_each(world, b"after")
    _, _, got, _ = subscribe(world, {"get_retained": True})
    assert [(e[2], e[4]) for e in got] == [(ids[0], ["after"])]
    configure(world, plain)  # loses it again: nothing held, nothing recorded
    publish_each(world, b"later")
    assert sample(world, "zmqwamp_history_messages", endpoint="ticks") is None


def test_replay_waits_for_subscribed_while_the_host_name_resolves(world):
    """While the alias's host name resolves nothing is sent; then SUBSCRIBED, and the replay, before live EVENTs."""
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
    (live,) = publish_each(world, b"x 1", address="tcp://pubhost:9000")
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
