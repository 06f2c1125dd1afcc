"""The WAMP rules independent clients (wampy.js) rely on, in memory: custom option names,
null and undefined option values, CBOR typed arrays, and the GOODBYE answer.

End to end with wampy.js itself: tests/js/wampy.test.mjs.
"""

from __future__ import annotations

import cbor2
import msgpack
import pytest
from autobahn.wamp.serializer import MsgPackObjectSerializer

from zmqwamp.testing import joined, new_session, received, send
from zmqwamp.upstream.codec import CodecError, Unsupported, encode_args
from zmqwamp.wamp.messages import SERIALIZERS, decode
from zmqwamp.wamp.session import GOODBYE_WAIT

from memory import PUB, REP

MSGPACK_UNDEFINED = msgpack.ExtType(0, b"\x00")  # what msgpackr (wampy) sends for undefined


@pytest.mark.parametrize("name, undefined", [("wamp.2.msgpack", MSGPACK_UNDEFINED), ("wamp.2.cbor", cbor2.undefined)])
def test_undefined_and_null_options_are_absent(name, undefined):
    """wampy's SUBSCRIBE (match and get_retained undefined) parses, as if they were not given; a CALL's
    kwargs keep their nulls (only options are cleaned)."""
    serializer = SERIALIZERS[name]
    subscribe = [32, 1, {"match": undefined, "get_retained": None, "_filter": "hugo"}, PUB]
    call = [48, 2, {"timeout": undefined}, "tcp://127.0.0.1:9999", ["x"], {"keep": None}]
    [(raw_sub, msg_sub)], [(raw_call, msg_call)] = (
        decode(serializer, serializer.serialize(m), True) for m in (subscribe, call)
    )
    assert raw_sub[2] == {"_filter": "hugo"} and msg_sub.match == "exact" and msg_sub.topic == PUB
    assert raw_call[2] == {} and msg_call.timeout is None and msg_call.kwargs == {"keep": None}


def test_cbor_typed_arrays():
    """Tag 64 (Uint8Array) and 68 (Uint8ClampedArray) are bytes; other typed arrays are values a CALL refuses."""
    serializer = SERIALIZERS["wamp.2.cbor"]
    payload = cbor2.dumps([48, 1, {}, REP, [cbor2.CBORTag(64, b"\x01\x02"), cbor2.CBORTag(68, b"\x03"), cbor2.CBORTag(85, b"\0\0\xc0?")]])
    [(_, msg)] = decode(serializer, payload, True)
    assert msg.args[:2] == [b"\x01\x02", b"\x03"]
    assert isinstance(msg.args[2], Unsupported)
    with pytest.raises(CodecError, match="typed array of tag 85"):
        encode_args(msg.args)
    with pytest.raises(CodecError, match="typed array of tag 85"):
        encode_args([{"nested": msg.args[2]}])


def subscribe(session, transport, request, topic, options):
    send(session, 32, request, options, topic)
    return received(transport)[-1]


@pytest.mark.parametrize("options", [{"_filter": "hugo"}, {"filter": "hugo"}])
def test_filter_option_spellings(world, options):
    """`_filter` (WAMP's spelling for a custom option) and `filter` (autobahn-js habit) both narrow."""
    session, transport = joined(world)
    reply = subscribe(session, transport, 1, PUB, options)
    assert reply[0] == 33
    (sub,) = world.hub.subscriptions()
    assert sub.filter == b"hugo"


@pytest.mark.parametrize(
    "topic, options",
    [
        (PUB, {"_filter": "hugo", "filter": "otto"}),
        (PUB + "?filter=hugo", {"_filter": "otto"}),
        (PUB + "?filter=hugo", {"filter": "otto"}),
    ],
)
def test_filters_that_disagree_are_an_error(world, topic, options):
    """Never a silently wider (or different) subscription: ERROR invalid_argument naming both places."""
    session, transport = joined(world)
    reply = subscribe(session, transport, 1, topic, options)
    assert reply[:5] == [8, 32, 1, {}, "wamp.error.invalid_argument"]
    assert "different values" in reply[5][0]
    assert world.hub.subscriptions() == []


def test_filters_that_agree_are_one(world):
    session, transport = joined(world)
    assert subscribe(session, transport, 1, PUB + "?filter=hugo", {"_filter": "hugo", "filter": "hugo"})[0] == 33


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
    clock = world.clock
    session, transport = joined(world)
    session.shutdown()
    clock.advance(GOODBYE_WAIT - 0.01)
    assert transport.closed is None
    clock.advance(0.02)
    assert transport.closed == 1001


def test_a_connection_lost_while_waiting_leaves_no_timer(world):
    clock = world.clock
    session, transport = joined(world)
    session.shutdown()
    session.transport_lost()
    assert not clock.getDelayedCalls() and transport.closed is None


def test_msgpack_session_subscribes_with_undefined_options(world):
    """The whole path over msgpack: the session is not aborted (it was: 'invalid type ... for match')."""
    serializer = MsgPackObjectSerializer()
    session, transport = new_session(world, serializer)
    session.message_received(serializer.serialize([1, "zmqwamp", {"roles": {"subscriber": {}}}]), True)
    session.message_received(
        serializer.serialize([32, 1, {"match": MSGPACK_UNDEFINED, "get_retained": MSGPACK_UNDEFINED, "_filter": "hugo"}, PUB]),
        True,
    )
    replies = [serializer.unserialize(p)[0] for p, _ in transport.sent]
    assert [r[0] for r in replies] == [2, 33], replies
