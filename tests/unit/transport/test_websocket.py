"""zmqwamp.transport.websocket: Autobahn's protocol adapted to a session, in memory (the adapter on a StringTransport,
on the world's MemoryReactorClock): the opening handshake and the websocket_allowed hook, the login message limit,
the control frame rate, pongs and replies to a client that does not read, the fallbacks for autobahn's internals, and
autobahn-python's own Twisted client against the bridge's factory (joined by twisted.test.iosim).  Against a real
bridge: tests/e2e/test_hostile_wire.py, tests/e2e/test_hostile_input.py, tests/e2e/test_log_floods.py.
"""

from __future__ import annotations

import json
import struct

import pytest
from autobahn.twisted.wamp import ApplicationSession
from autobahn.twisted.websocket import WampWebSocketClientFactory
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.serializer import JsonSerializer, MsgPackSerializer
from autobahn.wamp.types import ComponentConfig
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.logger import formatEvent
from twisted.test.iosim import FakeTransport, connect

from zmqwamp import internals
from zmqwamp.auth.policy import OriginPolicy
from zmqwamp.testing import fired, handshake, open_websocket, publish, server_frames, websocket_factory
from zmqwamp.transport import frames
from zmqwamp.transport import websocket as websocket_module
from zmqwamp.wamp.session import MessageTooBig

from memory import PUB, REP
from minws import ERROR, RESULT, WELCOME, encode_frame

HELLO = json.dumps([1, "zmqwamp", {"roles": {"caller": {}}}]).encode()


def websocket(world, **config):
    """A connection to ``world``'s WebSocket side (with the options of ``BridgeConfig(**config)``), past the opening
    handshake, on a string transport: (protocol, transport)."""
    return open_websocket(websocket_factory(world, **config), "wamp.2.json")


def open_wamp(world, **config):
    """A WampServerProtocol after the opening handshake and HELLO/WELCOME, on a StringTransport."""
    proto, transport = websocket(world, **config)
    proto.dataReceived(encode_frame(1, HELLO))
    assert proto.session.is_open
    transport.clear()
    return proto, transport


def close_of(transport) -> tuple[int, str]:
    [(code, reason)] = [(struct.unpack("!H", p[:2])[0], p[2:].decode()) for op, p in server_frames(transport.value()) if op == 8]
    return code, reason


def call(request: int, size: int) -> bytes:
    return json.dumps([48, request, {}, REP, ["x" * size]]).encode()


def limit_count(world, limit: str) -> float:
    return world.metrics.registry.get_sample_value("zmqwamp_limit_exceeded_total", {"limit": limit}) or 0


# -- the opening handshake and websocket_allowed -----------------------------------------------------------------------


def upgrade(factory, origin: str | None, secure: bool | None = None) -> bytes:
    """What a client offering wamp.2.json with ``origin`` (and over TLS, or not) gets from ``factory``."""
    return handshake(factory, "wamp.2.json", origin=origin, host="127.0.0.1:8080", secure=secure)[1].value()


def test_a_refused_upgrade_logs_its_reason_once_and_clipped(world, log_events):
    """Item 6: autobahn put a 14 KB Origin in its refusal twice (an info line, then dropConnection's warning) and in
    the status line: 100 upgrades added 2.7 MiB of log."""
    huge = "zz" + "b" * 14_000  # no host part: refused by autobahn itself, quoting it
    answer = upgrade(websocket_factory(world), huge)
    assert answer.startswith(b"HTTP/1.1 400 ") and len(answer) < 300
    text = [formatEvent(e) for e in log_events]
    assert len(text) == 1 and "refused: HTTP Origin header invalid" in text[0] and len(text[0]) < 300, text
    log_events.clear()
    answer = upgrade(websocket_factory(world, lambda request: False), "http://evil.example")  # refused by the hook
    assert answer.startswith(b"HTTP/1.1 403 ")
    [line] = [formatEvent(e) for e in log_events]
    assert line.startswith("WebSocket from ") and line.endswith(" refused (origin=http://evil.example)")


def test_the_same_origin_check_sees_the_scheme_of_the_connection(world):
    """Item 12: Origin https://h:p was accepted for Host h:p on a plain ws:// connection."""
    factory = websocket_factory(world, lambda request: OriginPolicy().allows(request.origin, request.headers.get("host"), request.secure))
    assert upgrade(factory, "http://127.0.0.1:8080").startswith(b"HTTP/1.1 101 ")
    assert upgrade(factory, "https://127.0.0.1:8080").startswith(b"HTTP/1.1 403 ")
    assert upgrade(factory, "https://127.0.0.1:8080", secure=True).startswith(b"HTTP/1.1 101 ")
    assert upgrade(factory, "http://127.0.0.1:8080", secure=True).startswith(b"HTTP/1.1 403 ")


def test_a_websocket_allowed_hook_that_raises_is_a_500_logged_once_per_interval(world, log_events):
    """autobahn logged two warnings with the traceback per upgrade; now one line per class and interval."""

    def broken(request):
        raise KeyError("a bug in the hook")

    factory = websocket_factory(world, broken)
    answers = {upgrade(factory, None).split(b"\r\n", 1)[0] for _ in range(100)}
    assert answers == {b"HTTP/1.1 500 internal error"}
    errors = [e for e in log_events if e.get("log_failure") is not None]
    assert len(errors) == 1 and errors[0]["log_failure"].check(KeyError)
    assert len(log_events) == 1, [formatEvent(e) for e in log_events]
    assert world.context.metrics.internal_errors.labels("websocket_allowed")._value.get() == 100


# -- max_login_message_size --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [16_385, 70_000, 1_000_000])
def test_a_message_over_the_login_limit_before_welcome_is_refused_at_its_header(world, size):
    """Before HELLO: closed 1009 with a reason naming the limit, as soon as the frame's header is in; dropped."""
    proto, transport = websocket(world)
    frame = encode_frame(1, b"[" + b" " * (size - 2) + b"]")
    proto.dataReceived(frame[:200])  # the header and a little: enough to refuse it
    assert close_of(transport) == (1009, "max_login_message_size: a message over 16384 bytes before the session is open")
    assert transport.disconnecting and proto.state == proto.STATE_CLOSED
    proto.dataReceived(frame[200:])  # the rest is not parsed
    assert limit_count(world, "max_login_message_size") == 1
    assert world.metrics.registry.get_sample_value("zmqwamp_protocol_errors_total") == 0


def test_fragments_count_together(world):
    """Before the session is open, the fragments of one message count together against max_login_message_size."""
    proto, transport = websocket(world)
    proto.dataReceived(encode_frame(1, b"[" + b" " * 10_000, fin=False) + encode_frame(0, b" " * 10_000 + b"]"))
    assert close_of(transport)[0] == 1009 and transport.disconnecting


def test_up_to_the_login_limit_is_read(world):
    """A HELLO of exactly the limit (padding in its details) is a HELLO."""
    proto, transport = websocket(world)
    padding = 16_384 - len(json.dumps([1, "zmqwamp", {"roles": {"caller": {}}, "x": ""}]))
    hello = json.dumps([1, "zmqwamp", {"roles": {"caller": {}}, "x": " " * padding}]).encode()
    assert len(hello) == 16_384
    proto.dataReceived(encode_frame(1, hello))
    assert json.loads(server_frames(transport.value())[0][1])[0] == WELCOME


@pytest.mark.parametrize("size", [20_000, 100_000])
def test_once_the_session_is_open_max_message_size_applies(world, size):
    """After WELCOME: a CALL of 20 kB (a whole-frame size) or 100 kB (autobahn's parser) goes through."""
    proto, transport = websocket(world)
    proto.dataReceived(encode_frame(1, HELLO))
    proto.dataReceived(encode_frame(1, call(1, size)))
    assert transport.value().count(b"\x88") == 0 and len(world.forwarder.requests) == 1
    world.forwarder.requests[0][3].callback([b"ok"])
    assert json.loads(server_frames(transport.value())[-1][1]) == [RESULT, 1, {}, ["ok"]]
    proto.dataReceived(encode_frame(1, call(2, 30_000)))  # and whole frames up to 64 KiB are read by the fast path
    assert len(world.forwarder.requests) == 2 and proto._frame_limit == 0xFFFF


def test_hello_and_a_large_call_in_one_read(world):
    """A CALL pipelined right behind the HELLO (an anonymous login answers at once) is not refused."""
    proto, transport = websocket(world)
    proto.dataReceived(encode_frame(1, HELLO) + encode_frame(1, call(1, 40_000)))
    assert len(world.forwarder.requests) == 1 and 8 not in [op for op, _ in server_frames(transport.value())]


def test_a_lower_max_message_size_wins(world):
    """A max_message_size under the login limit applies from the start (close 1009), and it is not counted as the login limit."""
    proto, transport = websocket(world, max_message_size=4096)
    assert proto._login_limit == 0 and proto._frame_limit == 4096
    proto.dataReceived(encode_frame(1, b" " * 5000))
    assert close_of(transport)[0] == 1009 and limit_count(world, "max_login_message_size") == 0


# -- max_control_frames_per_second -------------------------------------------------------------------------------------


def test_pings_within_the_rate_are_answered(world):
    """max_control_frames_per_second pings every second, for seconds on end, are all answered."""
    proto, transport = websocket(world)
    for _ in range(5):
        proto.dataReceived(encode_frame(9, b"p") * 10)  # 10 per second: the whole budget, every second
        world.clock.advance(1.0)
    assert [op for op, _ in server_frames(transport.value())] == [10] * 50


@pytest.mark.parametrize("opcode", [9, 10])
def test_one_control_frame_over_the_rate_closes_1008_and_nothing_more_is_parsed(world, opcode):
    """One ping or pong over the rate: close 1008 naming the limit, counted, and nothing after it is parsed."""
    proto, transport = websocket(world)
    proto.dataReceived(encode_frame(opcode, b"p") * 11 + encode_frame(9, b"never") * 10_000)
    frames = server_frames(transport.value())
    assert close_of(transport) == (1008, "max_control_frames_per_second: more than 10 pings and pongs per second")
    assert [op for op, _ in frames] == ([10] * 10 if opcode == 9 else []) + [8]
    assert transport.disconnecting and proto.state == proto.STATE_CLOSED
    assert limit_count(world, "max_control_frames_per_second") == 1


def test_the_rate_is_configurable(world):
    """max_control_frames_per_second is the option's value."""
    proto, transport = websocket(world, max_control_frames_per_second=100)
    proto.dataReceived(encode_frame(9, b"p") * 100)
    assert [op for op, _ in server_frames(transport.value())] == [10] * 100


def test_close_frames_are_not_counted(world):
    """A close frame is not a ping or a pong: not counted against the rate, the close is answered."""
    proto, transport = websocket(world, max_control_frames_per_second=1)
    proto.dataReceived(encode_frame(9, b"p") + encode_frame(8, struct.pack("!H", 1000)))
    assert [op for op, _ in server_frames(transport.value())] == [10, 8]
    assert close_of(transport)[0] == 1000 and limit_count(world, "max_control_frames_per_second") == 0


# -- a client that does not read, a reply too large --------------------------------------------------------------------


def test_a_client_not_reading_gets_only_its_latest_pong_once_it_reads_again(world):
    """While the transport is paused, pongs are not written: the latest waits in the outgoing buffer, the rest are counted."""
    proto, transport = open_wamp(world)
    proto.dataReceived(encode_frame(9, b"one"))
    assert transport.value() == b"\x8a\x03one"  # not paused: answered at once
    transport.clear()
    proto._outgoing.pauseProducing()  # what the transport does when its buffer is full
    for payload in (b"two", b"three", b"four"):
        proto.dataReceived(encode_frame(9, payload))
    assert transport.value() == b"" and len(proto._outgoing) == 1
    assert world.metrics.registry.get_sample_value("zmqwamp_dropped_total", {"reason": "pong"}) == 2
    proto._outgoing.resumeProducing()
    assert transport.value() == b"\x8a\x04four"


def test_a_reply_over_the_size_limit_is_refused_before_the_websocket_layer(world):
    """send_frame and prepare raise MessageTooBig (autobahn's sendMessage would only log); the session answers the CALL."""
    proto, transport = open_wamp(world, max_message_size=1024)
    proto.dataReceived(encode_frame(1, json.dumps([48, 3, {}, "tcp://127.0.0.1:9999", ["x"]]).encode()))
    world.forwarder.requests[-1][3].callback([b"y" * 2000])
    with pytest.raises(MessageTooBig):
        proto.prepare(b"z" * 1025, False)
    frames = transport.value()
    assert frames[0] == 0x81 and frames[1] == len(frames) - 2  # one short text frame: the ERROR, not the reply
    error = json.loads(frames[2:])
    assert error[:5] == [ERROR, 48, 3, {}, "wamp.error.payload_size_exceeded"], error
    assert error[5] == ["the reply is 2014 bytes, over the bridge's max_message_size of 1024 bytes"]


# -- an autobahn without the internals zmqwamp reads (zmqwamp.internals) -----------------------------------------------


@pytest.fixture
def renamed(monkeypatch):
    """An autobahn that renamed a piece of the parser state zmqwamp reads (frames.AUTOBAHN_INTERNALS)."""
    missing = "_renamed_in_a_future_autobahn"
    monkeypatch.setattr(frames, "AUTOBAHN_INTERNALS", (*frames.AUTOBAHN_INTERNALS, missing))
    monkeypatch.setattr(internals, "_warned", set())
    return missing


def test_without_autobahns_internals_a_session_is_served_through_autobahn(world, renamed, log_events):
    """Without autobahn's parser state: every frame goes through autobahn's parser and sendMessage, calls are
    answered, and one warning per process says so."""
    proto, transport = websocket(world)
    websocket(world)
    assert not proto.reads_internals and not proto._plain_frames and not proto._writer.direct
    assert proto._frame_limit == 0  # no whole-frame fast path
    proto.dataReceived(encode_frame(1, HELLO) + encode_frame(1, call(1, 10)))
    world.forwarder.requests[0][3].callback([b"ok"])
    assert [json.loads(p)[0] for _, p in server_frames(transport.value())] == [WELCOME, RESULT]
    seen = [e for e in log_events if e.get("what") == frames.AUTOBAHN]
    assert len(seen) == 1 and renamed in seen[0]["missing"]


@pytest.mark.parametrize("opcode", [9, 10])
def test_without_autobahns_internals_control_frames_keep_their_rate(world, renamed, opcode):
    """Without autobahn's parser state, max_control_frames_per_second applies in onPing/onPong: pings within it
    are answered, one over it closes 1008 and nothing more is parsed."""
    proto, transport = websocket(world)
    proto.dataReceived(encode_frame(opcode, b"p") * 11 + encode_frame(9, b"never") * 10_000)
    frames_sent = server_frames(transport.value())
    assert close_of(transport) == (1008, "max_control_frames_per_second: more than 10 pings and pongs per second")
    assert [op for op, _ in frames_sent] == ([10] * 10 if opcode == 9 else []) + [8]
    assert transport.disconnecting and proto.state == proto.STATE_CLOSED
    assert limit_count(world, "max_control_frames_per_second") == 1


def test_without_autobahns_control_frame_state_pings_are_answered_within_the_rate(world, monkeypatch, log_events):
    """An autobahn that renamed only what a control frame is read into (made at the first one): its own
    processControlFrame answers, within the rate."""
    monkeypatch.setattr(frames, "AUTOBAHN_CONTROL_FRAME", ("_renamed_in_a_future_autobahn",))
    monkeypatch.setattr(internals, "_warned", set())
    proto, transport = websocket(world)
    assert proto.reads_internals
    proto.dataReceived(encode_frame(9, b"p") * 10)
    assert not proto.reads_control_frames
    assert [op for op, _ in server_frames(transport.value())] == [10] * 10
    proto.dataReceived(encode_frame(9, b"p"))
    assert close_of(transport)[0] == 1008
    assert [e for e in log_events if e.get("what") == frames.AUTOBAHN]


def test_without_autobahns_internals_the_login_limit_holds(world, renamed):
    """Without autobahn's failedByMe: a message over max_login_message_size before the session is open is
    still refused at its header (close 1009), and the rest is not parsed."""
    proto, transport = websocket(world)
    frame = encode_frame(1, b"[" + b" " * 70_000 + b"]")
    proto.dataReceived(frame[:200])
    assert close_of(transport)[0] == 1009 and transport.disconnecting and proto.state == proto.STATE_CLOSED
    proto.dataReceived(frame[200:])
    assert limit_count(world, "max_login_message_size") == 1


def test_without_autobahns_handshake_data_it_is_kept(world, monkeypatch, log_events):
    """An autobahn that renamed the opening handshake's data: nothing is freed (nor made up), the session works."""
    monkeypatch.setattr(websocket_module, "AUTOBAHN_HANDSHAKE_DATA", ("_renamed_in_a_future_autobahn",))
    monkeypatch.setattr(internals, "_warned", set())
    proto, transport = websocket(world)
    assert proto.http_headers and proto.reads_internals
    proto.dataReceived(encode_frame(1, HELLO))
    assert json.loads(server_frames(transport.value())[0][1])[0] == WELCOME
    assert [e for e in log_events if e.get("what") == websocket_module.AUTOBAHN_HANDSHAKE]


# -- autobahn-python's Twisted client ----------------------------------------------------------------------------------


BRIDGE = IPv4Address("TCP", "127.0.0.1", 8080)


CLIENT = IPv4Address("TCP", "127.0.0.1", 40000)


NO_TIMERS = {"autoPingInterval": 0, "openHandshakeTimeout": 0, "closeHandshakeTimeout": 0}


class Client(ApplicationSession):
    def onJoin(self, details):
        self.config.extra["joined"].callback(details)


def autobahn_session(world, serializer=None):
    """An autobahn-python session joined to the bridge in memory, and the pump that carries their bytes."""
    server_factory = websocket_factory(world)
    joined: Deferred = Deferred()
    sessions: list[Client] = []

    def make_session():
        sessions.append(Client(ComponentConfig("zmqwamp", {"joined": joined})))
        return sessions[-1]

    client_factory = WampWebSocketClientFactory(
        make_session, url="ws://localhost:8080/ws", serializers=[serializer or JsonSerializer()]
    )
    client_factory.setProtocolOptions(**NO_TIMERS)
    server = server_factory.buildProtocol(CLIENT)
    client = client_factory.buildProtocol(BRIDGE)
    pump = connect(
        server,
        FakeTransport(server, isServer=True, hostAddress=BRIDGE, peerAddress=CLIENT),
        client,
        FakeTransport(client, isServer=False, hostAddress=CLIENT, peerAddress=BRIDGE),
    )
    details = fired(joined)
    return sessions[0], details, pump


@pytest.mark.parametrize("serializer", [JsonSerializer, MsgPackSerializer])
def test_call_reaches_the_forwarder_and_the_reply_resolves_the_call(world, serializer):
    """autobahn-python's call, in JSON or msgpack, reaches the forwarder and its reply resolves the call."""
    session, details, pump = autobahn_session(world, serializer())
    assert details.realm == "zmqwamp" and details.authid
    call = session.call(REP, {"myrequest": "hello"})
    pump.flush()
    [(address, frames, timeout, reply)] = world.forwarder.requests
    assert address == REP and frames == [b'{"myrequest":"hello"}'] and timeout > 0
    reply.callback([b'{"answer":42}'])
    pump.flush()
    assert fired(call) == {"answer": 42}


def test_a_denied_endpoint_is_an_application_error(world):
    """A CALL to a denied endpoint fails autobahn-python's call with ApplicationError not_authorized."""
    session, _, pump = autobahn_session(world)
    call = session.call("tcp://10.0.0.1:9999", "x")
    pump.flush()
    failure = []
    call.addErrback(failure.append)
    assert failure and failure[0].check(ApplicationError)
    assert failure[0].value.error == "wamp.error.not_authorized"
    assert world.forwarder.requests == []


def test_subscribe_gets_what_the_pub_sends_and_welcome_announces_retention(world):
    """autobahn-python's subscribe is active and gets what the PUB sends; it reads event_retention from WELCOME."""
    session, details, pump = autobahn_session(world)
    assert session._router_roles["broker"].event_retention is True  # WELCOME's roles, as autobahn parsed them
    got: list = []
    subscribed = session.subscribe(got.append, PUB)
    pump.flush()
    assert fired(subscribed).active
    publish(world, PUB, b"tick 1")  # what the SUB socket reads from the PUB
    pump.flush()
    assert got == ["tick 1"]
