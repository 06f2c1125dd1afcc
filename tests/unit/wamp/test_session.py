"""The WAMP session state machine with an in-memory transport and a fake upstream (no sockets)."""

from __future__ import annotations

import json

import pytest
from autobahn.wamp.serializer import MsgPackObjectSerializer
from twisted.internet.defer import Deferred

from zmqwamp.testing import joined, new_session, received, send
from zmqwamp.upstream.endpoints import Endpoint
from zmqwamp.upstream.errors import BackendUnavailable, CallTimedOut

from memory import PUB, REP


def test_call_is_forwarded_and_answered(world):
    """CALL -> one zmq request with the encoded frames and default timeout -> RESULT with decoded frames."""
    session, transport = joined(world)
    send(session, 48, 7, {}, REP, ["hello", {"n": 1}])
    address, frames, timeout, d = world.forwarder.requests[-1]
    assert (address, frames, timeout) == (REP, [b"hello", b'{"n":1}'], 10.0)
    d.callback([b"got this hello", b"5"])
    assert received(transport) == [[50, 7, {}, ["got this hello", 5]]]


def test_call_timeout_option_is_milliseconds_and_capped(world):
    session, _ = joined(world)
    send(session, 48, 1, {"timeout": 1500}, REP, ["x"])
    send(session, 48, 2, {"timeout": 10_000_000}, REP, ["x"])
    assert [r[2] for r in world.forwarder.requests] == [1.5, 60.0]


def test_timeout_becomes_canceled_error(world):
    session, transport = joined(world)
    send(session, 48, 3, {}, REP, ["x"])
    world.forwarder.requests[-1][3].errback(CallTimedOut("no reply from x within 1s"))
    [error] = received(transport)
    assert error[:5] == [8, 48, 3, {}, "wamp.error.canceled"]
    assert "timed out" in error[5][0]


def test_refused_send_becomes_backend_unavailable(world):
    session, transport = joined(world)
    send(session, 48, 5, {}, REP, ["x"])
    world.forwarder.requests[-1][3].errback(BackendUnavailable(f"cannot send to {REP}: Resource temporarily unavailable"))
    [error] = received(transport)
    assert error[:5] == [8, 48, 5, {}, "zmqwamp.error.backend_unavailable"]
    assert world.metrics.calls.labels(REP, "unavailable")._value.get() == 1


def test_denied_call_never_reaches_zmq(world):
    session, transport = joined(world)
    send(session, 48, 4, {}, "tcp://10.0.0.1:1", ["x"])
    assert world.forwarder.requests == []
    assert received(transport)[0][:5] == [8, 48, 4, {}, "wamp.error.not_authorized"]


def test_duplicate_request_id_in_flight_is_a_violation(world):
    session, transport = joined(world)
    send(session, 48, 5, {}, REP, ["x"])
    send(session, 48, 5, {}, REP, ["x"])
    assert received(transport)[-1][:2] == [3, {"message": "CALL request id 5 already in flight"}]
    assert transport.closed == 1000


def test_late_result_after_close_is_not_sent(world):
    session, transport = joined(world)
    send(session, 48, 6, {}, REP, ["x"])
    d = world.forwarder.requests[-1][3]
    session.transport_lost()
    assert d.called  # cancelled with the session
    assert transport.sent == []


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
    world.hub._message(PUB, [b"hugo 1"])
    world.hub._message(PUB, [b"otto 1"])
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
    world.hub._message(PUB, [b"hugo 1", b"two"])
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
    world.hub._message(PUB, [b"hugo 1"])
    assert as_text.args == also_text.args == [["hugo 1"]] and as_bytes.args == [[b"hugo 1"]]
    assert world.hub.unsubscribe(as_bytes, b.id) and world.hub.addresses == [PUB]
    world.hub._message(PUB, [b"hugo 2"])
    assert as_bytes.args == [[b"hugo 1"]] and as_text.args[-1] == ["hugo 2"]
    assert world.hub.unsubscribe(as_text, a.id) and world.hub.unsubscribe(also_text, a.id)
    assert world.hub.addresses == [] and world.hub.subscription_count() == 0


def test_unsubscribe_and_close_release_the_subscription(world):
    a, ta = joined(world)
    b, _ = joined(world)
    send(a, 32, 1, {}, PUB)
    send(b, 32, 1, {}, PUB)
    sid = received(ta)[0][2]
    send(a, 34, 2, sid)
    assert received(ta)[-1] == [35, 2]
    send(a, 34, 3, sid)
    assert received(ta)[-1][:5] == [8, 34, 3, {}, "wamp.error.no_such_subscription"]
    assert world.hub.addresses == [PUB]
    b.transport_lost()
    assert world.hub.addresses == [] and world.hub.subscription_count() == 0


def test_filter_must_be_a_string(world):
    session, transport = joined(world)
    send(session, 32, 1, {"filter": 5}, PUB)
    assert received(transport)[0][:5] == [8, 32, 1, {}, "wamp.error.invalid_argument"]


def test_goodbye(world):
    session, transport = joined(world)
    send(session, 6, {}, "wamp.close.normal")
    assert received(transport) == [[6, {}, "wamp.close.goodbye_and_out"]]
    assert transport.closed == 1000 and session.state == "closed"


def test_shutdown_says_goodbye(world):
    session, transport = joined(world)
    session.shutdown()
    assert received(transport)[0][2] == "wamp.close.system_shutdown"
    assert world.sessions == set()


def test_unacknowledged_publish_is_counted(world):
    session, transport = joined(world)
    send(session, 16, 1, {}, "com.example", [1])
    assert transport.sent == []
    assert world.metrics.dropped.labels("publish")._value.get() == 1


# -- issue 13: filters, host names and metric labels, in memory ---------------------------------


def test_filter_length_is_capped_for_the_option_and_the_uri(world):
    """A filter longer than max_filter_length gets ERROR limit_exceeded naming it; nothing is subscribed."""
    world.router.max_filter_length = 4
    session, transport = joined(world)
    send(session, 32, 1, {"filter": "x" * 5}, PUB)
    send(session, 32, 2, {}, PUB + "?filter=" + "%41" * 5)
    send(session, 32, 3, {"filter": "x" * 4}, PUB)
    replies = received(transport)
    for error in replies[:2]:
        assert error[:5] == [8, 32, error[2], {}, "zmqwamp.error.limit_exceeded"] and error[5][0].startswith("max_filter_length: ")
    assert replies[2][0] == 33 and world.hub.subscription_count() == 1
    assert world.metrics.registry.get_sample_value("zmqwamp_limit_exceeded_total", {"limit": "max_filter_length"}) == 2


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


class StubNames:
    def __init__(self):
        self.pending = {}

    def connect_address(self, address):
        if "example" not in address:
            return address
        d = self.pending[address] = Deferred()
        return d


def test_subscribe_to_a_host_name_waits_for_it_to_resolve(world):
    """SUBSCRIBED comes once the name resolved (both sessions that asked meanwhile share the subscription);
    a name that does not resolve fails the SUBSCRIBE with backend_unavailable and leaves nothing open."""
    from zmqwamp.upstream.resolver import NameNotResolved

    names = world.hub.sockets.names = StubNames()
    world.router.authorize = lambda session, action, endpoint, options: True
    (a, ta), (b, tb) = joined(world), joined(world)
    send(a, 32, 1, {}, "tcp://feed.example:9000")
    send(b, 32, 1, {}, "tcp://feed.example:9000")
    assert received(ta) == [] and received(tb) == []
    names.pending["tcp://feed.example:9000"].callback("tcp://127.0.0.1:9000")
    assert received(ta)[0][0] == 33 and received(tb)[0][0] == 33 and received(ta)[0][2] == received(tb)[0][2]
    assert [e.address for e in world.hub._connections["tcp://feed.example:9000"].endpoints] == ["tcp://127.0.0.1:9000"]

    send(a, 32, 2, {}, "tcp://nope.example:9000")
    names.pending["tcp://nope.example:9000"].errback(NameNotResolved("host name 'nope.example' did not resolve: unknown"))
    error = received(ta)[-1]
    assert error[:5] == [8, 32, 2, {}, "zmqwamp.error.backend_unavailable"] and "did not resolve" in error[5][0]
    assert world.hub.addresses == ["tcp://feed.example:9000"] and world.hub.subscription_count() == 1


def test_calls_are_labelled_only_with_opened_endpoints_and_at_most_so_many(world):
    """zmqwamp_calls_total names aliases and endpoints with a connection open, at most max_endpoint_labels
    of them; calls that opened nothing (a missing ipc socket) and the rest count under 'other'."""
    from zmqwamp.upstream.endpoints import Endpoint as E

    world.router.max_endpoint_labels = 2
    started = 0.0
    for i in range(50):
        world.router._count_call(E(f"ipc:///missing/{i}.sock"), "unavailable", started)
    for port in (1, 2, 3):
        world.forwarder.request(f"tcp://127.0.0.1:{port}", [], 1)  # now open
        world.router._count_call(E(f"tcp://127.0.0.1:{port}"), "ok", started)
    world.router._count_call(E("tcp://10.0.0.1:1", alias="echo"), "ok", started)
    labels = {s.labels["endpoint"] for s in world.metrics.calls.collect()[0].samples if s.name.endswith("_total")}
    assert labels == {"other", "tcp://127.0.0.1:1", "tcp://127.0.0.1:2", "echo"}
    assert world.metrics.registry.get_sample_value("zmqwamp_calls_total", {"endpoint": "other", "outcome": "unavailable"}) == 50


@pytest.mark.parametrize("serializer", ["json", "msgpack", "cbor"])
def test_a_live_event_is_the_bytes_autobahns_event_gave(world, serializer):
    """The session builds the EVENT from what the hub hands it (ids, arguments, details): the same bytes as
    autobahn's Event (no history) and Event plus ``_epoch`` (history), which the hub built before issue 22."""
    from autobahn.wamp.message import Event
    from autobahn.wamp.serializer import CBORObjectSerializer, JsonObjectSerializer

    make = {"json": JsonObjectSerializer, "msgpack": MsgPackObjectSerializer, "cbor": CBORObjectSerializer}[serializer]
    ser = make()
    ticks = Endpoint(PUB, kind="sub", alias="ticks", codec="text", history=5, history_bytes=100_000)
    world.router.resolver.aliases = {"ticks": ticks}
    world.hub.configure_history([ticks])
    session, channel = new_session(world, make())
    session.message_received(ser.serialize([1, "zmqwamp", {"roles": {"subscriber": {}}}]), ser.BINARY)
    session.message_received(ser.serialize([32, 1, {}, PUB]), ser.BINARY)
    session.message_received(ser.serialize([32, 2, {}, "ticks"]), ser.BINARY)
    plain, history = (ser.unserialize(channel.sent[i][0])[0][2] for i in (1, 2))
    world.hub._message(PUB, [b"hugo 1", b'{"n": 2}'])
    publication = world.hub.last_publication(PUB)
    got = {ser.unserialize(payload)[0][1]: payload for payload, _ in channel.sent[3:]}
    assert got[plain] == Event(plain, publication, args=["hugo 1", {"n": 2}]).serialize(ser)
    expected = Event(history, publication, args=["hugo 1", '{"n": 2}']).marshal()
    expected[3]["_epoch"] = world.hub.epoch
    assert got[history] == ser.serialize(expected)
