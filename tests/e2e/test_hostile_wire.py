"""What one message or frame may cost the bridge on the wire (issue 21: items 1, 3, 11, and the login limit), end
to end.

Each attack runs against a real twistd bridge with real zmq services, from a raw client (tests/minws.py), and is
measured in the bridge's own CPU seconds (/proc/PID/stat), while /healthz or another session must be answered.
The logic in memory: tests/unit/wamp/test_messages.py, test_hostile_wire.py, test_flow.py.
"""

from __future__ import annotations

import asyncio
import json
import time

import cbor2
import jwt
import msgpack
import pytest

from collisions import bignum_key_map, cbor_hello_with, json_bytes, tuple_key_map
from harness import start_bridge, start_rep
from minws import ABORT, ERROR, RESULT, WELCOME, Closed, WSClient
from probes import cpu_seconds, healthz, metric, start_fastpub

JWT_SECRET = "wire-e2e-jwt-secret-that-is-long-enough-0123456789"


def run(coro, timeout=120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture(scope="module")
def rep():
    proc, address = start_rep()
    yield address
    proc.stop()


@pytest.fixture(scope="module")
def bridge(rep, tmp_path_factory):
    """Default limits; anonymous, and JWT tickets."""
    key = tmp_path_factory.mktemp("wire") / "jwt.key"
    key.write_text(JWT_SECRET)
    proc, url = start_bridge(
        "--anonymous", "--allow", "tcp://127.0.0.1:*", "--auth", f"jwt:secret_file={key},audience=wire-e2e"
    )
    yield {"url": url, "proc": proc, "pid": proc.proc.pid, "rep": rep}
    proc.stop()


@pytest.fixture(scope="module")
def no_login_limit(rep):
    """max_login_message_size as large as max_message_size: the decoder's own defences, on their own."""
    proc, url = start_bridge("--anonymous", "--allow", "tcp://127.0.0.1:*", "--max-login-message-size", "1048576")
    yield {"url": url, "proc": proc, "pid": proc.proc.pid, "rep": rep}
    proc.stop()


async def joined(url: str, **kw) -> WSClient:
    ws = await WSClient.connect(url, **kw)
    await ws.hello()
    return ws


async def healthz_seconds(url: str) -> float:
    """Wall seconds for /healthz to answer (from a thread: the event loop keeps the other clients going)."""
    start = time.monotonic()
    assert (await asyncio.to_thread(healthz, url))["up"] is True
    return time.monotonic() - start


async def answered(ws: WSClient, rep: str, within: float) -> None:
    reply = await asyncio.wait_for(ws.call(rep, ["still here"]), within)
    assert reply[0] == RESULT and reply[3] == ["got this still here"], reply


async def close_of(ws: WSClient, timeout: float = 10.0) -> Closed:
    with pytest.raises(Closed) as closed:
        while True:
            await ws.recv(timeout)
    return closed.value


# -- item 1: CBOR map keys that all hash alike, before HELLO ------------------------------------------------


@pytest.mark.parametrize(
    "what, roles",
    [
        ("20,000 bignum keys k*(2**61-1)+1 (258 kB)", bignum_key_map(20_000)),  # 2.1 s of CPU before the fix
        ("20,000 two-int arrays as keys (400 kB, no tag)", tuple_key_map(20_000)),  # 4.4 s
    ],
)
def test_cbor_keys_that_hash_alike_cost_nothing_before_hello(no_login_limit, what, roles):
    """A client without Origin offers wamp.2.cbor and sends, as its first message, a HELLO whose roles map has
    keys that all hash alike: ABORT protocol_violation naming the key type, for next to no CPU; /healthz and
    another session are answered meanwhile."""
    bridge = no_login_limit

    async def scenario():
        good = await joined(bridge["url"])
        ws = await WSClient.connect(bridge["url"], protocols=("wamp.2.cbor",))
        assert ws.protocol == "wamp.2.cbor"
        before = cpu_seconds(bridge["pid"])
        ws.send(cbor_hello_with(roles), binary=True)
        health = await healthz_seconds(bridge["url"])
        await answered(good, bridge["rep"], 5.0)
        abort = cbor2.loads((await ws.recv(10.0)).payload)
        cost = cpu_seconds(bridge["pid"]) - before
        await good.goodbye()
        return abort, cost, health

    abort, cost, health = run(scenario())
    print(f"{what}: {cost:.2f} s of the bridge's CPU, /healthz in {health:.2f} s")
    assert cost < 0.5, f"{what}: {cost:.2f} s of CPU"
    assert abort[0] == ABORT and abort[2] == "wamp.error.protocol_violation", abort
    assert "map key must be a text string or byte string" in abort[1]["message"], abort
    assert health < 2.0


# -- the login limit: a large message before WELCOME is not read -------------------------------------------


def many_lists_hello(size: int) -> bytes:
    """A msgpack HELLO of ``size`` bytes whose details hold that many empty lists: 0.2-0.3 s to decode each."""
    head = msgpack.packb([1, "zmqwamp", {"roles": {}, "x": []}])[:-1]
    n = size - len(head) - 5
    return head + b"\xdd" + n.to_bytes(4, "big") + b"\x90" * n


def test_a_megabyte_before_hello_is_refused_at_its_header(bridge):
    """Five connections each send a 1 MB message before HELLO: each is closed 1009 naming max_login_message_size at
    once, without the message being read; /healthz and another session are answered meanwhile.

    Before, each was read and decoded (a million empty lists: 0.2-0.3 s of CPU), then refused as a HELLO."""
    payload = many_lists_hello(1_000_000)

    async def scenario():
        good = await joined(bridge["url"])
        clients = [await WSClient.connect(bridge["url"], protocols=("wamp.2.msgpack",)) for _ in range(5)]
        before = cpu_seconds(bridge["pid"])
        for ws in clients:
            ws.send(payload, binary=True)
        closes = [await close_of(ws) for ws in clients]
        health = await healthz_seconds(bridge["url"])
        await answered(good, bridge["rep"], 5.0)
        cost = cpu_seconds(bridge["pid"]) - before
        await good.goodbye()
        return closes, cost, health

    counted = metric(bridge["url"], "zmqwamp_limit_exceeded_total", limit="max_login_message_size")
    closes, cost, health = run(scenario())
    print(f"5 x 1 MB before HELLO: {cost:.2f} s of the bridge's CPU, /healthz in {health:.2f} s")
    for closed in closes:
        assert (closed.code, closed.reason) == (
            1009,
            "max_login_message_size: a message over 16384 bytes before the session is open",
        ), closed
    assert cost < 0.4, f"{cost:.2f} s of CPU"
    assert metric(bridge["url"], "zmqwamp_limit_exceeded_total", limit="max_login_message_size") == counted + 5
    assert health < 2.0


def test_a_large_jwt_still_logs_in_and_large_calls_follow(bridge):
    """HELLO, then AUTHENTICATE with a 9 kB JWT (a realistic large token: 200 group claims); after WELCOME a CALL
    of 500 kB goes through (max_message_size applies once the session is open)."""
    claims = {
        "sub": "erin", "aud": "wire-e2e", "exp": int(time.time()) + 60, "role": "reader",
        "groups": [f"team-{i:04d}-engineering" for i in range(300)],
    }
    token = jwt.encode(claims, JWT_SECRET, algorithm="HS256")
    assert 9_000 < len(token) < 16_000

    async def scenario():
        ws = await WSClient.connect(bridge["url"])
        ws.send_json([1, "zmqwamp", {"roles": {"caller": {}}, "authmethods": ["ticket"], "authid": "erin"}])
        challenge = await ws.recv_json()
        assert challenge[:2] == [4, "ticket"], challenge
        ws.send_json([5, token, {}])
        welcome = await ws.recv_json()
        reply = await ws.call(bridge["rep"], ["x" * 500_000], timeout=20)
        await ws.goodbye()
        return welcome, reply

    welcome, reply = run(scenario())
    assert welcome[0] == WELCOME and welcome[2]["authid"] == "erin" and welcome[2]["authprovider"] == "jwt", welcome
    assert reply[0] == RESULT and reply[3] == ["got this " + "x" * 500_000]


# -- item 11: pings, and the JSON path with \u0000 ----------------------------------------------------------


def test_a_megabyte_of_pings_is_cut_short(bridge):
    """1 MiB of empty pings (174,762 frames) from a session: closed 1008 after 10, for next to no CPU.

    Before, autobahn's parser took each one (2 s of CPU per MiB in the review; it also copied the rest of each
    read per frame)."""
    pings = b"\x89\x80\x00\x00\x00\x00" * (2**20 // 6)  # ping, masked (key 0), empty

    async def scenario():
        good = await joined(bridge["url"])
        ws = await joined(bridge["url"])
        before = cpu_seconds(bridge["pid"])
        ws.send_raw(pings)
        closed = await close_of(ws)
        await answered(good, bridge["rep"], 5.0)
        cost = cpu_seconds(bridge["pid"]) - before
        await good.goodbye()
        return closed, cost

    counted = metric(bridge["url"], "zmqwamp_limit_exceeded_total", limit="max_control_frames_per_second")
    closed, cost = run(scenario())
    print(f"1 MiB of pings: {cost:.2f} s of the bridge's CPU")
    assert (closed.code, closed.reason) == (1008, "max_control_frames_per_second: more than 10 pings and pongs per second")
    assert cost < 0.2, f"{cost:.2f} s of CPU"
    assert metric(bridge["url"], "zmqwamp_limit_exceeded_total", limit="max_control_frames_per_second") == counted + 1


def test_json_with_nul_costs_what_plain_json_costs(bridge):
    """Four 1 MB CALLs each holding one binary value (NUL + base64) among half a million numbers, to an endpoint
    not allowed (ERROR right after decoding): autobahn's pure-Python scanner took 0.3-0.5 s for each."""
    payload = json.dumps([48, 1, {}, "tcp://127.0.0.2:1", [[0] * 500_000, json_bytes(b"x")]], separators=(",", ":"))

    async def scenario():
        ws = await joined(bridge["url"])
        before = cpu_seconds(bridge["pid"])
        for request in range(1, 5):
            ws.send(payload.replace("[48,1,", f"[48,{request},", 1))
        replies = [await ws.recv_json(20.0) for _ in range(4)]
        cost = cpu_seconds(bridge["pid"]) - before
        await ws.goodbye()
        return replies, cost

    replies, cost = run(scenario())
    print(f"4 x 1 MB of JSON with a NUL: {cost:.2f} s of the bridge's CPU")
    assert [r[:5] for r in replies] == [[ERROR, 48, r, {}, "wamp.error.not_authorized"] for r in range(1, 5)], replies
    assert cost < 0.6, f"{cost:.2f} s of CPU"


# -- item 3: drop_oldest with a full queue of tiny EVENTs ---------------------------------------------------


def test_subscribers_that_stopped_reading_a_fast_tiny_pub_cost_little(bridge):
    """Eight subscribers of a 2,000 msg/s PUB of 12-byte messages stop reading.  A second PUB of 4 KiB messages fills
    the kernel's socket buffers first (about 4 MB each, which tiny messages would take 40 s to fill), then stops;
    some 10 s later each outgoing buffer is 1 MiB of ~50-byte EVENTs (20,000 entries) and every EVENT drops the
    oldest.  Over the next 5 s the bridge's CPU stays low and /healthz answers promptly.

    Before, each drop rebuilt the whole queue: 90-240 us per EVENT, the reactor saturated (the review: 8 clients at
    870 msg/s took the bridge from 0.2 to 0.7 CPU-seconds per second, /healthz p99 3.4 s)."""
    tiny, tiny_address = start_fastpub(rate=2000, size=12, topic="tiny")
    filler, filler_address = start_fastpub(rate=2000, size=4096, topic="fill")
    n = 8

    async def scenario():
        clients = [await joined(bridge["url"], rcvbuf=4096) for _ in range(n)]
        for ws in clients:
            assert (await ws.subscribe(tiny_address))[0] == 33
            assert (await ws.subscribe(filler_address))[0] == 33
        # they read no more: once the kernel holds all it takes, frames wait in the outgoing buffers
        deadline = time.monotonic() + 90
        while metric(bridge["url"], "zmqwamp_outgoing_buffered_bytes") < n * 256 * 1024:
            assert time.monotonic() < deadline, "the outgoing buffers did not fill"
            await asyncio.sleep(0.2)
        filler.stop()
        # until the tiny EVENTs fill the queues (20,000 each, 10 s): then every one of them drops the oldest
        dropped = metric(bridge["url"], "zmqwamp_dropped_total", reason="slow_consumer")
        while True:
            assert time.monotonic() < deadline, "the EVENTs were not being dropped"
            await asyncio.sleep(1.0)
            dropped, per_second = metric(bridge["url"], "zmqwamp_dropped_total", reason="slow_consumer"), dropped
            if dropped - per_second > 0.7 * n * 2000:
                break
        before, started = cpu_seconds(bridge["pid"]), time.monotonic()
        health = [await healthz_seconds(bridge["url"])]
        while time.monotonic() - started < 5:
            await asyncio.sleep(0.5)
            health.append(await healthz_seconds(bridge["url"]))
        seconds = time.monotonic() - started
        rate = (cpu_seconds(bridge["pid"]) - before) / seconds
        dropped = metric(bridge["url"], "zmqwamp_dropped_total", reason="slow_consumer") - dropped
        buffered = metric(bridge["url"], "zmqwamp_outgoing_buffered_bytes")
        for ws in clients:
            ws.abort()
        return rate, max(health), dropped / seconds, buffered

    try:
        rate, health, drops, buffered = run(scenario())
    finally:
        tiny.stop()
        filler.stop()
    print(
        f"{n} full drop_oldest queues ({buffered / 2**20:.1f} MiB): {rate:.2f} CPU-seconds per second, "
        f"{drops:.0f} EVENTs dropped per second, slowest /healthz {health:.2f} s"
    )
    assert buffered > n * 0.9 * 2**20 and drops > n * 1000, "the queues were not full of dropped EVENTs"
    assert rate < 0.5, f"{rate:.2f} CPU-seconds per second"
    assert health < 1.0, f"/healthz took {health:.2f} s"
