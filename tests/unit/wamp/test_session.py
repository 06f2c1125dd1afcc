"""zmqwamp.wamp.session: one client's WAMP session (HELLO to GOODBYE, the order of messages, what it answers, the
limits it checks itself, the EVENTs it builds), on a FakeChannel with the core of zmqwamp.testing.  What a CALL or
SUBSCRIBE does: test_router.py; logging in: tests/unit/auth/test_login.py.
"""

from __future__ import annotations

import pytest
from autobahn.wamp.serializer import MsgPackObjectSerializer
from twisted.internet.task import Clock

from zmqwamp.testing import joined, new_session, publish, received, send
from zmqwamp.upstream.endpoints import Endpoint
from zmqwamp.wamp.errors import LIMIT_EXCEEDED
from zmqwamp.wamp.limits import SessionLimits
from zmqwamp.wamp.session import GOODBYE_WAIT

from memory import PUB, REP, REVOCABLE

# -- opening and the order of messages ---------------------------------------------------------------------------------


def test_welcome_announces_retention_and_history():
    """WELCOME's broker features: event_retention, _event_history and subscription_revocation."""
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


def test_welcome_announces_subscription_revocation(world):
    """A ticket login's WELCOME announces subscription_revocation too."""
    session, transport = new_session(world)
    send(session, 1, "zmqwamp", {"roles": REVOCABLE, "authmethods": ["ticket"], "authid": "alice"})
    send(session, 5, "any-ticket", {})
    welcome = received(transport)[-1]
    assert welcome[2]["roles"]["broker"]["features"]["subscription_revocation"] is True


@pytest.mark.parametrize(
    "messages",
    [
        [[5, "s3cret-alice", {}]],  # AUTHENTICATE without HELLO
        [[1, "zmqwamp", {"roles": {"caller": {}}, "authmethods": ["ticket"], "authid": "alice"}], [48, 1, {}, "tcp://127.0.0.1:1"]],
        [[1, "zmqwamp", {"roles": {"caller": {}}, "authmethods": ["ticket"], "authid": "alice"}], [5, "x", {}], [5, "y", {}]],
    ],
)
def test_session_out_of_order_is_a_protocol_violation(world, messages):
    """AUTHENTICATE without CHALLENGE, CALL during authentication, a second AUTHENTICATE: protocol violation."""
    session, transport = new_session(world, peer="tcp4:192.0.2.1:9")
    for msg in messages:
        send(session, *msg)
    assert received(transport)[-1][0] == 3 and received(transport)[-1][2] == "wamp.error.protocol_violation"


def test_duplicate_request_id_in_flight_is_a_violation(world):
    """A CALL reusing the id of a call in flight is a protocol violation: ABORT and close."""
    session, transport = joined(world)
    send(session, 48, 5, {}, REP, ["x"])
    send(session, 48, 5, {}, REP, ["x"])
    assert received(transport)[-1][:2] == [3, {"message": "CALL request id 5 already in flight"}]
    assert transport.closed == 1000


# -- calls, subscriptions, what a router does not route ----------------------------------------------------------------


def test_late_result_after_close_is_not_sent(world):
    """A session that ends cancels its calls in flight, and nothing is sent after."""
    session, transport = joined(world)
    send(session, 48, 6, {}, REP, ["x"])
    d = world.forwarder.requests[-1][3]
    session.transport_lost()
    assert d.called  # cancelled with the session
    assert transport.sent == []


def test_unsubscribe_and_close_release_the_subscription(world):
    """UNSUBSCRIBE is answered once (then no_such_subscription); the last session to leave, by closing too, closes the SUB connection."""
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


def test_unacknowledged_publish_is_counted(world):
    """An unacknowledged PUBLISH gets no answer (WAMP has none) and is counted as dropped."""
    session, transport = joined(world)
    send(session, 16, 1, {}, "com.example", [1])
    assert transport.sent == []
    assert world.metrics.dropped.labels("publish")._value.get() == 1


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
    publish(world, PUB, b"hugo 1", b'{"n": 2}')
    publication = world.hub.last_publication(PUB)
    got = {ser.unserialize(payload)[0][1]: payload for payload, _ in channel.sent[3:]}
    assert got[plain] == Event(plain, publication, args=["hugo 1", {"n": 2}]).serialize(ser)
    expected = Event(history, publication, args=["hugo 1", '{"n": 2}']).marshal()
    expected[3]["_epoch"] = world.hub.epoch
    assert got[history] == ser.serialize(expected)


# -- the limits a session checks itself (zmqwamp.wamp.limits) ----------------------------------------------------------


def limited_session(world, **limits):
    values = {"max_calls_in_flight": 100, "max_subscriptions": 100, "max_calls_per_second": 1000.0, **limits}
    clock = Clock()
    session, transport = new_session(world, limits=SessionLimits(**values), clock=clock.seconds)
    send(session, 1, "zmqwamp", {"roles": {"caller": {}}})
    transport.sent.clear()
    return session, transport, clock


def test_calls_in_flight_limit(world):
    """The (n+1)th CALL waiting for a reply gets ERROR limit_exceeded; once one is answered, CALLs pass again."""
    session, transport, _ = limited_session(world, max_calls_in_flight=2)
    for request in (1, 2, 3):
        send(session, 48, request, {}, REP, ["x"])
    assert len(world.forwarder.requests) == 2
    [error] = received(transport)
    assert error[:5] == [8, 48, 3, {}, LIMIT_EXCEEDED] and error[5][0].startswith("max_calls_in_flight")
    world.forwarder.requests[0][3].callback([b"ok"])
    send(session, 48, 4, {}, REP, ["x"])
    assert len(world.forwarder.requests) == 3


def test_calls_per_second_limit(world):
    """Past max_calls_per_second a CALL gets ERROR limit_exceeded; a second later CALLs pass again."""
    session, transport, clock = limited_session(world, max_calls_per_second=3)
    for request in range(1, 5):
        send(session, 48, request, {}, REP, ["x"])
        world.forwarder.requests[-1][3].callback([b"ok"]) if len(world.forwarder.requests) == request else None
    errors = [m for m in received(transport) if m[0] == 8]
    assert [e[2] for e in errors] == [4] and errors[0][5][0].startswith("max_calls_per_second")
    clock.advance(1.0)
    send(session, 48, 5, {}, REP, ["x"])
    assert len(world.forwarder.requests) == 4


def test_subscriptions_limit(world):
    """Past max_subscriptions a SUBSCRIBE gets ERROR limit_exceeded, counted; an UNSUBSCRIBE frees a place."""
    session, transport, _ = limited_session(world, max_subscriptions=2)
    send(session, 32, 1, {}, PUB + "?filter=a")
    send(session, 32, 2, {}, PUB + "?filter=b")
    send(session, 32, 3, {}, PUB + "?filter=c")
    replies = received(transport)
    assert [m[0] for m in replies] == [33, 33, 8]
    assert replies[2][4] == LIMIT_EXCEEDED and replies[2][5][0].startswith("max_subscriptions")
    send(session, 34, 4, replies[0][2])
    send(session, 32, 5, {}, PUB + "?filter=c")
    assert received(transport)[-1][0] == 33
    assert world.metrics.registry.get_sample_value("zmqwamp_limit_exceeded_total", {"limit": "max_subscriptions"}) == 1


def test_subscribes_per_second_after_a_burst_of_max_subscriptions(world):
    """SUBSCRIBEs get a burst of max_subscriptions plus a second's worth, then max_subscribes_per_second."""
    clock = Clock()
    limits = SessionLimits(max_calls_in_flight=10, max_subscriptions=3, max_calls_per_second=10.0,
                           max_subscribes_per_second=1.0)
    session, channel = new_session(world, limits=limits, clock=clock.seconds)
    send(session, 1, "zmqwamp", {"roles": {"subscriber": {}}})
    channel.sent.clear()
    for request in range(1, 6):
        send(session, 32, request, {}, PUB)  # the same subscription again and again
    replies = received(channel)
    assert [m[0] for m in replies] == [33, 33, 33, 33, 8]  # max_subscriptions + one second's worth
    assert replies[-1][4] == LIMIT_EXCEEDED and replies[-1][5][0].startswith("max_subscribes_per_second")
    clock.advance(1.0)
    send(session, 32, 6, {}, PUB)
    assert received(channel)[-1][0] == 33


def test_messages_per_second_limit_ends_a_flooding_session(world):
    """Past twice max_messages_per_second at once, the session gets ABORT limit_exceeded and is closed, whatever
    the messages are (each unknown UNSUBSCRIBE had its own ERROR, and cost its decoding, without end)."""
    session, transport, clock = limited_session(world, max_messages_per_second=5)
    for request in range(1, 10):  # the burst: two seconds' worth, HELLO included
        send(session, 34, request, 999)
    assert [m[0] for m in received(transport)] == [8] * 9 and transport.closed is None
    send(session, 34, 10, 999)
    abort = received(transport)[-1]
    assert abort[0] == 3 and abort[2] == LIMIT_EXCEEDED and abort[1]["message"].startswith("max_messages_per_second"), abort
    assert transport.closed == 1000
    assert world.metrics.registry.get_sample_value("zmqwamp_limit_exceeded_total", {"limit": "max_messages_per_second"}) == 1


def test_messages_per_second_limit_refills(world):
    """Within max_messages_per_second (after its burst) a session goes on, whatever it sends."""
    session, transport, clock = limited_session(world, max_messages_per_second=5)
    for request in range(1, 10):  # the burst (HELLO was the first)
        send(session, 34, request, 999)
    clock.advance(1.0)  # five more
    for request in range(10, 15):
        send(session, 34, request, 999)
    assert transport.closed is None and [m[0] for m in received(transport)] == [8] * 14


# -- GOODBYE and shutdown ----------------------------------------------------------------------------------------------


def test_goodbye(world):
    """The client's GOODBYE is answered with GOODBYE goodbye_and_out, then close 1000."""
    session, transport = joined(world)
    send(session, 6, {}, "wamp.close.normal")
    assert received(transport) == [[6, {}, "wamp.close.goodbye_and_out"]]
    assert transport.closed == 1000 and session.state == "closed"


def test_shutdown_says_goodbye(world):
    """A bridge that stops says GOODBYE system_shutdown and forgets the session."""
    session, transport = joined(world)
    session.shutdown()
    assert received(transport)[0][2] == "wamp.close.system_shutdown"
    assert world.sessions == set()


def test_shutdown_waits_for_the_clients_goodbye(world):
    """GOODBYE, then the close once the client's GOODBYE is in (or after GOODBYE_WAIT): its answer is never
    written to a closed WebSocket.  Other messages in between are ignored."""
    clock = world.clock
    session, transport = joined(world)
    session.shutdown()
    assert received(transport)[-1][0] == 6 and transport.closed is None
    send(session, 48, 9, {}, REP, ["on its way"])
    assert transport.closed is None
    send(session, 6, {}, "wamp.close.goodbye_and_out")
    assert transport.closed == 1001
    assert not clock.getDelayedCalls()


def test_shutdown_closes_without_an_answer_after_the_wait(world):
    """Without the client's GOODBYE the connection closes 1001 after GOODBYE_WAIT, not before."""
    clock = world.clock
    session, transport = joined(world)
    session.shutdown()
    clock.advance(GOODBYE_WAIT - 0.01)
    assert transport.closed is None
    clock.advance(0.02)
    assert transport.closed == 1001


def test_a_connection_lost_while_waiting_leaves_no_timer(world):
    """A connection lost while waiting for the client's GOODBYE leaves no timer behind."""
    clock = world.clock
    session, transport = joined(world)
    session.shutdown()
    session.transport_lost()
    assert not clock.getDelayedCalls() and transport.closed is None
