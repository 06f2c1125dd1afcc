"""What one client's input may cost the bridge (issue 13: items 2, 10, 14, 15, 18, 19).

Each attack runs against a real twistd bridge with real zmq services, from a raw
client (tests/minws.py) or autobahn-python, while another session checks that
the bridge still answers everyone else.  The logic is also tested in memory.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path

import cbor2
import pytest
from autobahn.exception import PayloadExceededError
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport

from zmqwamp.config import BridgeConfig
from zmqwamp.messages import SERIALIZERS, WampProtocolViolation, decode
from zmqwamp.session import MessageTooBig
from zmqwamp.websocket import WampServerFactory

from hang_bridge import HANGING
from harness import start_bridge, start_rep
from memory import new_session, received, send
from minws import ABORT, ERROR, RESULT, SUBSCRIBED, Closed, WSClient, encode_frame
from probes import metric, rss_mib, start_fastpub
from wampclient import close, connect

HERE = Path(__file__).resolve().parent
MAX_MESSAGE = 4096


def run(coro, timeout=90):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture(scope="module")
def bridge():
    rep, rep_addr = start_rep()
    big, big_addr = start_fastpub(rate=20, size=MAX_MESSAGE + 2000, topic="big")  # every event over the limit
    proc, url = start_bridge(
        "--anonymous", "--allow", "tcp://127.0.0.1:*", "--max-message-size", str(MAX_MESSAGE), "--call-timeout", "1",
        "--bridge-class", "hang_bridge.HangBridge",
        env={"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])},
    )
    yield {"url": url, "proc": proc, "rep": rep_addr, "big": big_addr}
    for p in (proc, rep, big):
        p.stop()


async def joined(url: str, **kw) -> WSClient:
    ws = await WSClient.connect(url, **kw)
    await ws.hello()
    return ws


async def answered_within(ws: WSClient, rep: str, seconds: float) -> list:
    """A CALL from another session, answered within ``seconds`` (the bound of each attack below)."""
    reply = await asyncio.wait_for(ws.call(rep, ["still here"]), seconds)
    assert reply[0] == RESULT and reply[3] == ["got this still here"], reply
    return reply


# -- the WebSocket adapter in memory, for the tests below ------------------------------------------


class Transport(StringTransport):
    def unregisterProducer(self) -> None:  # autobahn unregisters one when it drops a connection, registered or not
        self.producer = None


HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: wamp.2.json\r\n\r\n"
)


def open_wamp(world, **config):
    """A WampServerProtocol after the opening handshake and HELLO/WELCOME, on a StringTransport."""
    factory = WampServerFactory(world.context, lambda request: True, BridgeConfig(**config), world.zmq_factory.write_batch)
    factory.setProtocolOptions(autoPingInterval=0, openHandshakeTimeout=0, closeHandshakeTimeout=0)
    proto = factory.buildProtocol(None)
    transport = Transport()
    proto.makeConnection(transport)
    loop = asyncio.new_event_loop()  # autobahn finishes the handshake in a callback (txaio: asyncio, see conftest)
    try:
        asyncio.set_event_loop(loop)
        proto.dataReceived(HANDSHAKE)
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    assert proto.state == proto.STATE_OPEN, transport.value()
    proto.dataReceived(encode_frame(1, json.dumps([1, "zmqwamp", {"roles": {"caller": {}}}]).encode()))
    assert proto.session.is_open
    transport.clear()
    return proto, transport


# -- 2: CBOR value sharing and string references ----------------------------------------------


def shared_bomb(depth: int, procedure: str) -> bytes:
    """x = [x', x'] nested ``depth`` deep, each list encoded once and referenced twice (tags 28/29):
    about 300 bytes for 2**depth leaves."""
    x = ["aaaaaaaaaa"]
    for _ in range(depth):
        x = [x, x]
    return cbor2.dumps([48, 1, {}, procedure, [x]], value_sharing=True)


class CborClient:
    def __init__(self, ws: WSClient) -> None:
        self.ws = ws

    @classmethod
    async def joined(cls, url: str) -> CborClient:
        ws = await WSClient.connect(url, protocols=("wamp.2.cbor",))
        assert ws.protocol == "wamp.2.cbor"
        client = cls(ws)
        client.send([1, "zmqwamp", {"roles": {"caller": {}}}])
        assert (await client.recv())[0] == 2
        return client

    def send(self, msg) -> None:
        self.ws.send(cbor2.dumps(msg), binary=True)

    def send_raw(self, payload: bytes) -> None:
        self.ws.send(payload, binary=True)

    async def recv(self, timeout: float = 5.0):
        return cbor2.loads((await self.ws.recv(timeout)).payload)


@pytest.mark.parametrize("depth", [24, 40])
def test_cbor_shared_values_are_refused_before_anything_is_expanded(bridge, depth):
    """The 311-byte bomb of the review (depth 40) gets ABORT protocol_violation at once; other sessions never notice.

    Without the check the CALL argument is expanded by json.dumps on the reactor
    (depth 24: 2**24 leaves, 285 MB of JSON, 7 s alone on this machine; depth 40
    ran out of memory after 76 s)."""

    async def scenario():
        good = await joined(bridge["url"])
        bomber = await CborClient.joined(bridge["url"])
        payload = shared_bomb(depth, bridge["rep"])
        assert len(payload) < 400
        bomber.send_raw(payload)
        await answered_within(good, bridge["rep"], 3.0)
        abort = await bomber.recv()
        with pytest.raises(Closed):
            await bomber.recv()
        await good.goodbye()
        return abort

    before = metric(bridge["url"], "zmqwamp_protocol_errors_total")
    abort = run(scenario())
    assert abort[0] == ABORT and abort[2] == "wamp.error.protocol_violation", abort
    assert re.search(r"CBOR tag 2[89] \(shared value( reference)?\) is not accepted", abort[1]["message"]), abort
    assert metric(bridge["url"], "zmqwamp_protocol_errors_total") == before + 1


@pytest.mark.parametrize(
    "name, value",
    [
        ("string reference", cbor2.CBORTag(256, ["abcdefgh", cbor2.CBORTag(25, 0)])),
        ("regular expression", cbor2.CBORTag(35, "(a+)+b")),
        ("MIME message", cbor2.CBORTag(36, "Content-Type: text/plain\n\nhi")),
    ],
)
def test_other_costly_cbor_tags_are_refused(bridge, name, value):
    async def scenario():
        bomber = await CborClient.joined(bridge["url"])
        bomber.send([48, 1, {}, bridge["rep"], [value]])
        return await bomber.recv()

    abort = run(scenario())
    assert abort[0] == ABORT and abort[2] == "wamp.error.protocol_violation", abort
    assert f"({name}) is not accepted" in abort[1]["message"]


def test_plain_cbor_still_works(bridge):
    """A CBOR session's calls (bytes and tags the codecs know nothing about aside) are answered as before."""

    async def scenario():
        client = await CborClient.joined(bridge["url"])
        client.send([48, 7, {}, bridge["rep"], ["hello", b"\x00\xff", {"n": [1, 2.5, None]}]])
        return await client.recv()

    assert run(scenario()) == [50, 7, {}, ["got this hello", b"\x00\xff", {"n": [1, 2.5, None]}]]


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


# -- 10: log flooding -------------------------------------------------------------------------------


def test_a_flooding_session_writes_a_bounded_log(bridge):
    """1,200 requests that each used to log a line with what the client sent (unacknowledged PUBLISH to a 3 kB
    topic, refused SUBSCRIBE to a 2 kB address, CANCEL of an unknown call): the bridge writes a burst of short
    lines, counts the rest in zmqwamp_log_suppressed_total, and says how many when the session ends.

    Without the limits this wrote 2 MB of log here (the review measured 28.6 MiB/s)."""
    proc = bridge["proc"]
    n = 400

    async def scenario():
        ws = await joined(bridge["url"])
        start = len(proc.lines)
        before = metric(bridge["url"], "zmqwamp_log_suppressed_total")
        for i in range(n):
            ws.send_json([16, ws.next_id(), {}, "t" * 3000])  # PUBLISH without acknowledge: no reply
            ws.send_json([32, ws.next_id(), {}, "tcp://" + "h" * 2000 + ":1"])  # not allowed: ERROR
            ws.send_json([49, 10**9 + i, {}])  # CANCEL of no call: no reply
        await ws.call(bridge["rep"], ["sync"])  # answered after everything above was handled (and logged)
        logged = proc.lines[start:]
        suppressed = metric(bridge["url"], "zmqwamp_log_suppressed_total") - before
        await ws.goodbye()
        return logged, suppressed, start

    logged, suppressed, start = run(scenario())
    size = sum(len(line) + 1 for line in logged)
    print(f"{len(logged)} lines, {size} bytes of log for {3 * n} log-worthy requests; {suppressed:.0f} suppressed")
    assert len(logged) < 40 and size < 16_000, f"{len(logged)} lines, {size} bytes"
    assert max(len(line) for line in logged) < 500
    assert suppressed >= 3 * n - 30
    proc.wait_for(r"log lines about \S+ were not logged: over max_log_lines_per_second", start=start)


def test_pongs_that_answer_no_ping_do_not_flood_the_log():
    """While the bridge waits for the pong to its ping, 20,000 wrong pongs: a few log lines, not 20,000 (autobahn
    logs a warning for each)."""
    proc, url = start_bridge("--anonymous", "--ping-interval", "1", "--ping-timeout", "10")

    async def scenario():
        ws = await joined(url)
        ws.auto_pong = False
        while not ws.pings:  # the bridge's ping: from now on a pong is pending
            with pytest.raises(asyncio.TimeoutError):
                await ws.recv(0.2)
        start = len(proc.lines)
        ws.send_raw(b"\x8a\x84\x00\x00\x00\x00nope" * 20_000)  # pong, masked (key 0), "nope"
        reply = await ws.call("tcp://127.0.0.1:1", ["sync"])  # not allowed: ERROR, after all the pongs
        assert reply[0] == ERROR
        return proc.lines[start:]

    try:
        logged = run(scenario())
    finally:
        proc.stop()
    assert len(logged) < 30, "\n".join(logged[:5])


# -- 14: pongs to a client that does not read -------------------------------------------------


def test_pings_from_a_client_that_never_reads_do_not_grow_the_bridge(bridge):
    """Pings as fast as the bridge takes them for 5 s, never reading: RSS grows by less than 15 MiB, pongs are dropped.

    Without the bound every pong waits in the transport's buffer: the review saw
    72 -> 299 MB in 20 s; here the bridge grew by about as much as it was sent
    (45 MiB for 40 MiB of pings in 5 s; 1 MiB with the bound)."""
    pid = bridge["proc"].proc.pid
    ping = b"\x89\xfd\x00\x00\x00\x00" + b"p" * 125  # ping, masked (key 0), 125 bytes
    burst = ping * 2000

    async def scenario():
        good = await joined(bridge["url"])
        ws = await joined(bridge["url"], rcvbuf=4096)
        baseline = rss_mib(pid)
        sent = 0
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            ws.send_raw(burst)
            await ws.writer.drain()
            sent += len(burst)
        await answered_within(good, bridge["rep"], 5.0)
        grown = rss_mib(pid) - baseline
        await good.goodbye()
        ws.abort()
        return sent, grown

    before = metric(bridge["url"], "zmqwamp_dropped_total", reason="pong")
    sent, grown = run(scenario())
    dropped = metric(bridge["url"], "zmqwamp_dropped_total", reason="pong") - before
    print(f"pings sent: {sent / 2**20:.0f} MiB, bridge RSS grew {grown:.1f} MiB, pongs dropped {dropped:.0f}")
    assert sent > 20 * 2**20, "the test did not send enough pings to show anything"
    assert grown < 15, f"RSS grew by {grown:.1f} MiB"
    assert dropped > 0


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


# -- 15: replies and events over the message size limit -------------------------------------


def test_reply_over_the_size_limit_gets_payload_size_exceeded(bridge):
    """A REP echoing a large argument: the CALL gets ERROR wamp.error.payload_size_exceeded naming both sizes.

    msgpack carries [0, 0, ...] in one byte per element; the REP receives it as
    JSON text ("[0,0,...]", two bytes each) and echoes it: a 6 kB reply for a
    3 kB CALL.  Without the check autobahn refuses to send it and logs; the
    call never gets an answer."""

    async def scenario():
        session = await connect(bridge["url"], serializer="msgpack")
        try:
            with pytest.raises(PayloadExceededError) as e:  # autobahn's exception for wamp.error.payload_size_exceeded
                await asyncio.wait_for(session.call(bridge["rep"], [0] * 3000), 5)
            small = await session.call(bridge["rep"], "small")
        finally:
            await close(session)
        return e.value, small

    before = metric(bridge["url"], "zmqwamp_dropped_total", reason="reply_too_large")
    error, small = run(scenario())
    assert re.fullmatch(rf"the reply is \d{{4}} bytes, over the bridge's max_message_size of {MAX_MESSAGE} bytes", str(error))
    assert small == "got this small"
    assert metric(bridge["url"], "zmqwamp_dropped_total", reason="reply_too_large") == before + 1


def test_event_over_the_size_limit_is_dropped_and_counted(bridge):
    """A PUB of 6 kB messages: each EVENT is dropped (counted, logged), the session carries on."""

    async def scenario():
        ws = await joined(bridge["url"])
        subscribed = await ws.subscribe(bridge["big"])
        assert subscribed[0] == SUBSCRIBED, subscribed
        start = metric(bridge["url"], "zmqwamp_dropped_total", reason="event_too_large")
        deadline = time.monotonic() + 10
        while metric(bridge["url"], "zmqwamp_dropped_total", reason="event_too_large") < start + 3:
            assert time.monotonic() < deadline, "no event dropped"
            await asyncio.sleep(0.1)
        reply = await ws.call(bridge["rep"], ["x"])  # skips EVENTs; there are none
        await ws.goodbye()
        return reply

    assert run(scenario())[0] == RESULT
    bridge["proc"].wait_for(r"event for subscription \d+ dropped: \d+ bytes, over the bridge's max_message_size")


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


# -- 18: frames per message -------------------------------------------------------------------


def test_many_fragments_close_with_1009_at_once(bridge):
    """One message in 100,000 empty continuation frames: closed 1009 after 64, quickly; another session carries on.

    Without the cap autobahn parses every frame (1,000,000 cost 5.1 s of CPU)
    and the connection stays open."""

    async def scenario():
        good = await joined(bridge["url"])
        ws = await joined(bridge["url"])
        ws.send_frame(1, b"[", fin=False)
        ws.send_raw(b"".join(encode_cont() for _ in range(100_000)))
        with pytest.raises(Closed) as closed:
            while True:
                await ws.recv(5.0)
        await answered_within(good, bridge["rep"], 5.0)
        await good.goodbye()
        return closed.value

    before = metric(bridge["url"], "zmqwamp_limit_exceeded_total", limit="max_message_fragments")
    closed = run(scenario())
    assert closed.code == 1009 and "max_message_fragments" in closed.reason, closed
    assert metric(bridge["url"], "zmqwamp_limit_exceeded_total", limit="max_message_fragments") == before + 1


def encode_cont() -> bytes:
    return b"\x00\x80\x00\x00\x00\x00"  # continuation, not final, masked (key 0), empty


def test_fragments_up_to_the_cap_make_a_message(bridge):
    async def scenario():
        ws = await joined(bridge["url"])
        text = json.dumps([48, 5, {}, bridge["rep"], ["fragments" * 10]]).encode()
        pieces = [text[i:i + 1] for i in range(len(text))][:63] + [text[63:]]
        assert len(pieces) == 64
        for i, piece in enumerate(pieces):
            ws.send_frame(1 if i == 0 else 0, piece, fin=i == len(pieces) - 1)
        reply = await ws.recv_json()
        await ws.goodbye()
        return reply

    assert run(scenario())[:2] == [RESULT, 5]


# -- 19: an authorization hook that never answers ---------------------------------------------


def test_call_whose_authorization_never_answers_times_out(bridge):
    """--bridge-class whose hook never fires for one endpoint: the CALL gets ERROR canceled after its timeout."""

    async def scenario():
        ws = await joined(bridge["url"])
        started = time.monotonic()
        reply = await ws.call(HANGING, ["x"], options={"timeout": 300}, timeout=5)
        took = time.monotonic() - started
        subscribed = await ws.subscribe(HANGING, timeout=5)  # no timeout option: --call-timeout 1
        await answered_within(ws, bridge["rep"], 5.0)
        await ws.goodbye()
        return reply, took, subscribed

    reply, took, subscribed = run(scenario())
    assert reply[0] == ERROR and reply[4] == "wamp.error.canceled", reply
    assert reply[5] == [f"call timed out: no authorization decision for '{HANGING}' within 0.3s"]
    assert took >= 0.3
    assert subscribed[0] == ERROR and subscribed[4] == "wamp.error.timeout", subscribed
    assert subscribed[5] == [f"subscribe timed out: no authorization decision for '{HANGING}' within 1s"]
    assert metric(bridge["url"], "zmqwamp_limit_exceeded_total", limit="authorization_timeout") >= 2


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

    from zmqwamp.config import ConfigError, load_config
    from zmqwamp.tap import Options

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
