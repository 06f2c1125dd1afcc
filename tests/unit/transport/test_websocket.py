"""The WebSocket side's bounds on what one frame may cost (issue 21: items 2 of the class and 11), in memory.

``max_login_message_size`` until the session is open, ``max_control_frames_per_second``; the adapter on a
StringTransport, on the world's MemoryReactorClock.  Against a real bridge: tests/e2e/test_hostile_wire.py.
"""

from __future__ import annotations

import json
import struct

import pytest
from twisted.python import usage

from zmqwamp import internals
from zmqwamp.service.bridge import websocket_options
from zmqwamp.service.config import BridgeConfig, ConfigError, parse_config
from zmqwamp.service.tap import Options
from zmqwamp.testing import open_websocket, server_frames
from zmqwamp.transport import frames
from zmqwamp.transport import websocket as websocket_module
from zmqwamp.transport.websocket import WampServerFactory

from minws import RESULT, WELCOME, encode_frame

HELLO = json.dumps([1, "zmqwamp", {"roles": {"caller": {}}}]).encode()
REP = "tcp://127.0.0.1:9999"


def websocket(world, **config):
    factory = WampServerFactory(world.context, lambda request: True, websocket_options(BridgeConfig(**config)), world.zmq_factory.write_batch)
    factory.setProtocolOptions(autoPingInterval=0, openHandshakeTimeout=0, closeHandshakeTimeout=0)
    return open_websocket(factory, "wamp.2.json")


def close_of(transport) -> tuple[int, str]:
    [(code, reason)] = [(struct.unpack("!H", p[:2])[0], p[2:].decode()) for op, p in server_frames(transport.value()) if op == 8]
    return code, reason


def call(request: int, size: int) -> bytes:
    return json.dumps([48, request, {}, REP, ["x" * size]]).encode()


def limit_count(world, limit: str) -> float:
    return world.metrics.registry.get_sample_value("zmqwamp_limit_exceeded_total", {"limit": limit}) or 0


# -- max_login_message_size ---------------------------------------------------------------------------


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
    proto, transport = websocket(world, max_message_size=4096)
    assert proto._login_limit == 0 and proto._frame_limit == 4096
    proto.dataReceived(encode_frame(1, b" " * 5000))
    assert close_of(transport)[0] == 1009 and limit_count(world, "max_login_message_size") == 0


# -- max_control_frames_per_second --------------------------------------------------------------------


def test_pings_within_the_rate_are_answered(world):
    proto, transport = websocket(world)
    for _ in range(5):
        proto.dataReceived(encode_frame(9, b"p") * 10)  # 10 per second: the whole budget, every second
        world.clock.advance(1.0)
    assert [op for op, _ in server_frames(transport.value())] == [10] * 50


@pytest.mark.parametrize("opcode", [9, 10])
def test_one_control_frame_over_the_rate_closes_1008_and_nothing_more_is_parsed(world, opcode):
    proto, transport = websocket(world)
    proto.dataReceived(encode_frame(opcode, b"p") * 11 + encode_frame(9, b"never") * 10_000)
    frames = server_frames(transport.value())
    assert close_of(transport) == (1008, "max_control_frames_per_second: more than 10 pings and pongs per second")
    assert [op for op, _ in frames] == ([10] * 10 if opcode == 9 else []) + [8]
    assert transport.disconnecting and proto.state == proto.STATE_CLOSED
    assert limit_count(world, "max_control_frames_per_second") == 1


def test_the_rate_is_configurable(world):
    proto, transport = websocket(world, max_control_frames_per_second=100)
    proto.dataReceived(encode_frame(9, b"p") * 100)
    assert [op for op, _ in server_frames(transport.value())] == [10] * 100


def test_close_frames_are_not_counted(world):
    proto, transport = websocket(world, max_control_frames_per_second=1)
    proto.dataReceived(encode_frame(9, b"p") + encode_frame(8, struct.pack("!H", 1000)))
    assert [op for op, _ in server_frames(transport.value())] == [10, 8]
    assert close_of(transport)[0] == 1000 and limit_count(world, "max_control_frames_per_second") == 0


# -- the options --------------------------------------------------------------------------------------


def test_the_new_limits_as_options():
    defaults = BridgeConfig()
    assert (defaults.max_login_message_size, defaults.max_control_frames_per_second) == (16_384, 10.0)
    c = parse_config({"max_login_message_size": 8192, "max_control_frames_per_second": 2.5})
    assert (c.max_login_message_size, c.max_control_frames_per_second) == (8192, 2.5)
    for bad in ({"max_login_message_size": 1000}, {"max_control_frames_per_second": 0}):
        with pytest.raises(ConfigError):
            parse_config(bad)
    o = Options()
    o.parseOptions(["--max-login-message-size", "32768", "--max-control-frames-per-second", "4"])
    assert (o.config.max_login_message_size, o.config.max_control_frames_per_second) == (32768, 4.0)
    with pytest.raises(usage.UsageError):
        Options().parseOptions(["--max-login-message-size", "10"])


# -- an autobahn without the internals zmqwamp reads (zmqwamp.internals) --------------------------------


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
