"""Every limit (zmqwamp.wamp.limits, zmqwamp.transport.guard, zmqwamp.upstream.budget, zmqwamp.tokenbucket) against a real bridge. The logic in memory, in the tests of the module that applies each: tests/unit/wamp/test_session.py, tests/unit/wamp/test_router.py, tests/unit/transport/test_guard.py, tests/unit/upstream/test_budget.py, tests/unit/test_tokenbucket.py."""

from __future__ import annotations

import asyncio
import time

import pytest

from harness import start_bridge, start_pub, start_rep
from minws import ERROR, RESULT, SUBSCRIBED, Closed, HandshakeRefused, WSClient, open_tcp
from probes import metric
from waiting import timing_bound

LIMIT = "zmqwamp.error.limit_exceeded"


# -- against a real bridge --------------------------------------------------------------


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture(scope="module")
def bridge():
    rep, rep_addr = start_rep()
    slow, slow_addr = start_rep(delay=30)
    pub, pub_addr = start_pub(interval=0.05)
    proc, url = start_bridge(
        "--anonymous", "--allow", "tcp://127.0.0.1:*",
        "--max-calls-in-flight", "3", "--max-subscriptions", "2", "--max-calls-per-second", "5",
        "--max-sessions", "5", "--max-sessions-per-peer", "3", "--handshake-timeout", "1",
        "--ping-interval", "1", "--ping-timeout", "1", "--max-message-size", "4096",
    )
    yield {"url": url, "rep": rep_addr, "slow": slow_addr, "pub": pub_addr, "proc": proc}
    for p in (proc, rep, slow, pub):
        p.stop()


async def joined(url, **kw) -> WSClient:
    ws = await WSClient.connect(url, **kw)
    await ws.hello()
    return ws


async def leave(ws: WSClient) -> None:
    """GOODBYE, the bridge's close frame, then its end of the TCP connection: by then its slot is free
    (the bridge counts the connection until it is lost; a retry to find out would count as refused)."""
    await ws.goodbye()
    with pytest.raises(Closed):
        await ws.recv()
    try:
        assert await asyncio.wait_for(ws.reader.read(), 5) == b""
    except ConnectionResetError:
        pass  # dropped with RST after the close handshake: gone as well
    ws.writer.close()


def test_e2e_max_calls_in_flight(bridge):
    """Three calls wait on a REP that never answers; the fourth gets limit_exceeded at once."""

    async def scenario():
        ws = await joined(bridge["url"])
        for request in (1, 2, 3, 4):
            ws.send_json([48, request, {"timeout": 20000}, bridge["slow"], ["x"]])
        refused = await ws.recv_json()
        for request in (1, 2, 3):
            ws.send_json([49, request, {}])  # CANCEL
        canceled = [await ws.recv_json() for _ in range(3)]
        await ws.goodbye()
        return refused, canceled

    refused, canceled = run(scenario())
    assert refused[:5] == [ERROR, 48, 4, {}, LIMIT] and "max_calls_in_flight" in refused[5][0]
    assert sorted(m[2] for m in canceled) == [1, 2, 3]


def test_e2e_max_calls_per_second(bridge):
    async def scenario():
        ws = await joined(bridge["url"])
        replies = [await ws.call(bridge["rep"], [str(i)]) for i in range(6)]
        await ws.idle(1.1)
        later = await ws.call(bridge["rep"], ["later"])
        await ws.goodbye()
        return replies, later

    replies, later = run(scenario())
    assert [m[0] for m in replies[:5]] == [RESULT] * 5
    assert replies[5][0] == ERROR and replies[5][4] == LIMIT and "max_calls_per_second" in replies[5][5][0]
    assert later[0] == RESULT


def test_e2e_max_subscriptions(bridge):
    async def scenario():
        ws = await joined(bridge["url"])
        got = [await ws.subscribe(bridge["pub"], {"filter": f}) for f in ("hugo", "otto", "x")]
        await ws.goodbye()
        return got

    got = run(scenario())
    assert [m[0] for m in got] == [SUBSCRIBED, SUBSCRIBED, ERROR]
    assert got[2][4] == LIMIT and "max_subscriptions" in got[2][5][0]


def test_e2e_max_sessions_per_peer_and_total(bridge):
    """3 per peer address, 5 in all: the 4th from 127.0.0.1 and the 6th overall get HTTP 503."""
    url = bridge["url"]

    async def scenario():
        mine = [await joined(url) for _ in range(3)]
        with pytest.raises(HandshakeRefused) as per_peer:
            await WSClient.connect(url)
        other = [await joined(url, source="127.0.0.2") for _ in range(2)]
        with pytest.raises(HandshakeRefused) as total:
            await WSClient.connect(url, source="127.0.0.3")
        await leave(mine[0])
        again = await joined(url)  # a freed slot can be used again
        for ws in mine[1:] + other + [again]:
            await ws.goodbye()
            await ws.close()
        return per_peer.value, total.value

    per_peer, total = run(scenario())
    assert per_peer.status == 503 and "max_sessions_per_peer" in per_peer.reason
    assert total.status == 503 and "max_sessions" in total.reason
    assert metric(url, "zmqwamp_limit_exceeded_total", limit="max_sessions_per_peer") == 1
    assert metric(url, "zmqwamp_limit_exceeded_total", limit="max_sessions") == 1


def test_e2e_handshake_timeout(bridge):
    """Silent, and dripping header bytes: both dropped after the 1 s handshake timeout."""

    async def dropped_after(drip: bool) -> float:
        reader, writer = await open_tcp(bridge["url"])
        started = time.monotonic()
        if drip:
            writer.write(b"GET /ws HTTP/1.1\r\n")

        async def dripping():
            while drip:
                writer.write(b"X")
                await asyncio.sleep(0.2)  # the scenario: a byte every 0.2 s

        task = asyncio.ensure_future(dripping())
        try:
            data = await asyncio.wait_for(reader.read(), 5)
        except ConnectionError:
            data = b""
        task.cancel()
        writer.close()
        assert data == b""
        return time.monotonic() - started

    async def scenario():
        return await dropped_after(False), await dropped_after(True)

    silent, dripping = run(scenario())
    assert silent > 0.8 and dripping > 0.8, (silent, dripping)  # not before the timeout
    timing_bound(silent < 2.5 and dripping < 2.5, f"dropped after {silent:.1f} s and {dripping:.1f} s (timeout 1 s, bound 2.5 s)")
    assert metric(bridge["url"], "zmqwamp_limit_exceeded_total", limit="handshake_timeout") == 2


def test_e2e_ping_timeout_drops_a_dead_client_and_keeps_a_live_one(bridge):
    """A client that never answers pings is dropped after ping interval + timeout; one that does stays."""

    async def scenario():
        started = time.monotonic()
        dead = await joined(bridge["url"])
        dead.auto_pong = False
        live = await joined(bridge["url"])

        async def live_idles():  # reads (so answers pings) but sends nothing for 4 s
            with pytest.raises(asyncio.TimeoutError):
                await live.recv(timeout=4)
            return await live.call(bridge["rep"], ["still here"])

        reply = asyncio.ensure_future(live_idles())
        with pytest.raises(Closed) as closed:
            while True:
                await dead.recv(timeout=6)
        dropped_after = time.monotonic() - started
        reply = await reply
        await live.goodbye()
        return closed.value, dropped_after, dead.pings, live.pings, reply

    closed, dropped_after, dead_pings, live_pings, reply = run(scenario())
    assert closed.code is None  # the TCP connection was dropped: a dead peer gets no close handshake
    assert 1.0 < dropped_after < 4 and dead_pings >= 1  # ping interval 1 s + ping timeout 1 s (batched timers)
    assert live_pings >= 2 and reply[0] == RESULT


def test_e2e_max_message_size(bridge):
    async def scenario():
        ws = await joined(bridge["url"])
        ws.send_json([48, 1, {}, bridge["rep"], ["x" * 5000]])
        with pytest.raises(Closed) as closed:
            await ws.recv(timeout=5)
        return closed.value

    assert run(scenario()).code == 1009
