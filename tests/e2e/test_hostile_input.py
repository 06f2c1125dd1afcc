"""What one client's input may cost the bridge (issue 13: items 2, 10, 14, 15, 18, 19), end to end.

Each attack runs against a real twistd bridge with real zmq services, from a raw
client (tests/minws.py) or autobahn-python, while another session checks that
the bridge still answers everyone else. The logic in memory: tests/unit/wamp/test_messages.py (CBOR tags),
tests/unit/transport/test_websocket.py (pongs, oversized replies), tests/unit/wamp/test_router.py (the hook's deadline).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time

import cbor2
import pytest
from autobahn.exception import PayloadExceededError

from hang_bridge import HANGING
from harness import ROOT, start_bridge, start_rep
from minws import ABORT, ERROR, RESULT, SUBSCRIBED, Closed, WSClient
from probes import metric, rss_mib, shared_bomb, start_fastpub
from waiting import eventually
from wampclient import close, connect

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
        # the ping flood below tests the bound on pongs, not the rate limit (tests/e2e/test_hostile_wire.py)
        "--max-control-frames-per-second", "1e9",
        env={"PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])},
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


# -- 2: CBOR value sharing and string references ----------------------------------------------




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
    # (the pong flood tests the log bound, not the rate limit on control frames: tests/e2e/test_hostile_wire.py)
    proc, url = start_bridge("--anonymous", "--ping-interval", "1", "--ping-timeout", "10", "--max-control-frames-per-second", "1e9")

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
        await eventually(
            lambda: metric(bridge["url"], "zmqwamp_dropped_total", reason="event_too_large") >= start + 3,
            what="3 events dropped", blocking=True,
        )
        reply = await ws.call(bridge["rep"], ["x"])  # skips EVENTs; there are none
        await ws.goodbye()
        return reply

    assert run(scenario())[0] == RESULT
    bridge["proc"].wait_for(r"event for subscription \d+ dropped: \d+ bytes, over the bridge's max_message_size")


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
