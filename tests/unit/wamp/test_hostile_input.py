"""What one client's input may cost the bridge (issue 13: items 2, 10, 14, 15, 18, 19), in memory.

The session and the WebSocket adapter on a StringTransport: refused CBOR tags, oversized
replies, pongs to a client that does not read, authorization deadlines, the options.
The same attacks against a real bridge: tests/e2e/test_hostile_input.py.
"""

from __future__ import annotations

import json

import cbor2
import pytest
from twisted.internet.defer import Deferred

from zmqwamp.service.bridge import websocket_options
from zmqwamp.service.config import BridgeConfig
from zmqwamp.testing import new_session, open_websocket, received, send
from zmqwamp.transport.websocket import WampServerFactory
from zmqwamp.wamp.messages import SERIALIZERS, WampProtocolViolation, decode
from zmqwamp.wamp.session import MessageTooBig

from hang_bridge import HANGING
from minws import ABORT, ERROR, RESULT, encode_frame
from probes import shared_bomb

# -- the WebSocket adapter in memory, for the tests below ------------------------------------------


def open_wamp(world, **config):
    """A WampServerProtocol after the opening handshake and HELLO/WELCOME, on a StringTransport."""
    factory = WampServerFactory(world.context, lambda request: True, websocket_options(BridgeConfig(**config)), world.zmq_factory.write_batch)
    factory.setProtocolOptions(autoPingInterval=0, openHandshakeTimeout=0, closeHandshakeTimeout=0)
    proto, transport = open_websocket(factory, "wamp.2.json")
    proto.dataReceived(encode_frame(1, json.dumps([1, "zmqwamp", {"roles": {"caller": {}}}]).encode()))
    assert proto.session.is_open
    transport.clear()
    return proto, transport


# -- 2: CBOR value sharing and string references ----------------------------------------------




def test_refused_cbor_tags_in_memory(world):
    """The check is in the serializer: the decode stops at the first shared value; a CBOR session aborts, naming it."""
    with pytest.raises(WampProtocolViolation, match=r"CBOR tag 2[89]"):
        decode(SERIALIZERS["wamp.2.cbor"], shared_bomb(40, "tcp://127.0.0.1:9999"), True)
    session, transport = new_session(world, SERIALIZERS["wamp.2.cbor"])
    session.message_received(cbor2.dumps([1, "zmqwamp", {"roles": {"caller": {}}}]), True)
    session.message_received(shared_bomb(3, "tcp://127.0.0.1:9999"), True)
    abort = cbor2.loads(transport.sent[-1][0])
    assert abort[0] == ABORT and "CBOR tag" in abort[1]["message"] and transport.closed == 1000
    assert world.forwarder.requests == []


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


def hanging_world(world):
    """``world`` with a hook that never answers for one endpoint."""
    pending = []

    def authorize(session, action, endpoint, options):
        if endpoint.address == HANGING:
            d = Deferred()
            pending.append(d)
            return d
        return True

    world.router.authorize = authorize
    session, transport = new_session(world)
    send(session, 1, "zmqwamp", {"roles": {"caller": {}}})
    transport.sent.clear()
    return session, transport, pending


def test_authorization_deadline_in_memory(world):
    """The hook's Deferred gets the call's timeout (CALL option, else call_timeout) on the router's clock, and is cancelled."""
    clock = world.clock
    session, transport, pending = hanging_world(world)
    send(session, 48, 1, {"timeout": 2000}, HANGING, ["x"])
    send(session, 32, 2, {}, HANGING)
    clock.advance(1.9)
    assert received(transport) == []
    clock.advance(0.2)
    assert received(transport) == [
        [ERROR, 48, 1, {}, "wamp.error.canceled", [f"call timed out: no authorization decision for '{HANGING}' within 2s"]]
    ]
    clock.advance(8)
    assert received(transport)[-1][:5] == [ERROR, 32, 2, {}, "wamp.error.timeout"]  # call_timeout 10 s
    assert all(d.called for d in pending)  # cancelled, so a hook with a canceller can stop its work
    assert session.calls_in_flight == 0 and session._subscribing == 0


def test_an_answer_in_time_is_used_and_cancels_the_deadline(world):
    clock = world.clock
    session, transport, pending = hanging_world(world)
    send(session, 48, 1, {}, HANGING, ["x"])
    pending[0].callback(True)
    assert clock.getDelayedCalls() == [] and len(world.forwarder.requests) == 1
    world.forwarder.requests[0][3].callback([b"ok"])
    assert received(transport) == [[RESULT, 1, {}, ["ok"]]]


# -- the new options ----------------------------------------------------------------------------


def test_new_limits_in_the_config_file_and_on_the_command_line(tmp_path):
    from twisted.python import usage

    from zmqwamp.service.config import ConfigError, load_config
    from zmqwamp.service.tap import Options

    defaults = BridgeConfig()
    assert (defaults.max_message_fragments, defaults.max_log_lines_per_second, defaults.max_log_lines_per_second_total) == (
        64, 1.0, 100.0
    )
    path = tmp_path / "c.toml"
    path.write_text("max_message_fragments = 8\nmax_log_lines_per_second = 0.5\nmax_log_lines_per_second_total = 20\n")
    c = load_config(path)
    assert (c.max_message_fragments, c.max_log_lines_per_second, c.max_log_lines_per_second_total) == (8, 0.5, 20.0)
    for bad in ("max_message_fragments = 0", "max_log_lines_per_second = 0", "max_log_lines_per_second_total = -1"):
        path.write_text(bad + "\n")
        with pytest.raises(ConfigError):
            load_config(path)
    o = Options()
    o.parseOptions(["--max-message-fragments", "3", "--max-log-lines-per-second", "2", "--max-log-lines-per-second-total", "7"])
    assert (o.config.max_message_fragments, o.config.max_log_lines_per_second, o.config.max_log_lines_per_second_total) == (
        3, 2.0, 7.0
    )
    with pytest.raises(usage.UsageError):
        Options().parseOptions(["--max-message-fragments", "0"])
