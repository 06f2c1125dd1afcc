"""Slow consumers against a real bridge: bounded memory, nobody else delayed, replies never lost.

A fast PUB (3,000 messages/s of 1 KiB) feeds a normal subscriber and clients that
complete the handshake, subscribe, and then never read.  The bridge's RSS must
stay under a ceiling while the normal subscriber gets every message in order.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from harness import start_bridge, start_rep
from minws import ERROR, EVENT, RESULT, Closed, WSClient
from probes import metric, rss_mib, start_fastpub
from waiting import eventually, timing_bound, wait_for

RATE = 3000
SIZE = 1024
BUFFER = 256 * 1024
RSS_CEILING_MIB = 20  # growth allowed over the baseline; unbounded, 3 stalled clients add ~65 MiB in 8 s
SECONDS = float(os.environ.get("ZMQWAMP_SLOW_SECONDS", "8"))  # `make soak` runs minutes


def run(coro, timeout=90 + SECONDS):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    pub, pub_addr = start_fastpub(RATE, SIZE)
    rep, rep_addr = start_rep()
    config = tmp_path_factory.mktemp("slow") / "bridge.toml"
    config.write_text(
        f'anonymous = true\nallow = ["{pub_addr}", "{rep_addr}"]\n'
        f"max_outgoing_buffer = {BUFFER}\nslow_consumer = \"drop_oldest\"\n"
        f'[endpoints.fastclose]\naddress = "{pub_addr}"\nkind = "sub"\nslow_consumer = "close"\n'
    )
    bridge, url = start_bridge("--config", str(config))
    yield {"url": url, "pub": pub_addr, "rep": rep_addr, "bridge": bridge}
    for p in (bridge, pub, rep):
        p.stop()


async def stalled(url: str, topic: str) -> WSClient:
    """A client that subscribes and from then on reads nothing (small receive buffer)."""
    ws = await WSClient.connect(url, rcvbuf=4096)
    await ws.hello()
    assert (await ws.subscribe(topic))[0] == 33
    return ws


async def no_queue(url: str) -> None:
    """Wait until no client has anything queued (the stalled clients of earlier tests are gone)."""
    await eventually(lambda: metric(url, "zmqwamp_outgoing_buffered_bytes") == 0, 20, "queues of earlier clients freed", blocking=True)


async def until_queueing(url: str) -> None:
    """Wait until a stalled client's queue holds at least half its bound (so its transport is paused)."""
    await eventually(
        lambda: metric(url, "zmqwamp_outgoing_buffered_bytes") >= BUFFER // 2, 20, "the client's buffer half full", blocking=True
    )


class SeqChecker:
    """Follows the ``seq <n>`` numbers of one subscriber: no gap, no repeat."""

    def __init__(self):
        self.first = self.last = None
        self.count = 0
        self.gaps: list[tuple[int, int]] = []

    def see(self, msg: list) -> None:
        assert msg[0] == EVENT, msg
        seq = int(msg[4][0].split(" ", 2)[1])
        if self.last is None:
            self.first = seq
        elif seq != self.last + 1:
            self.gaps.append((self.last, seq))
        self.last = seq
        self.count += 1


def test_stalled_subscribers_do_not_grow_memory_or_slow_others(world):
    """Three never-reading subscribers: RSS stays under baseline + 20 MiB, the good subscriber misses nothing."""
    url, pid = world["url"], world["bridge"].proc.pid
    log_start = len(world["bridge"].lines)

    async def scenario():
        good = await WSClient.connect(url)
        await good.hello()
        await good.subscribe(world["pub"])
        checker = SeqChecker()
        for _ in range(200):  # warm up: the stream runs, allocations settle
            checker.see(await good.recv_json())
        baseline = rss_mib(pid)
        slow = [await stalled(url, world["pub"]) for _ in range(3)]
        peak = baseline
        started = time.monotonic()
        sampled = started
        while time.monotonic() - started < SECONDS:
            checker.see(await good.recv_json(timeout=2))
            if time.monotonic() - sampled > 0.25:
                sampled = time.monotonic()
                peak = max(peak, rss_mib(pid))
        elapsed = time.monotonic() - started
        buffered = metric(url, "zmqwamp_outgoing_buffered_bytes")
        dropped = metric(url, "zmqwamp_dropped_total", reason="slow_consumer")
        for ws in slow:
            ws.abort()
        await good.goodbye()
        return baseline, peak, checker, elapsed, buffered, dropped

    baseline, peak, checker, elapsed, buffered, dropped = run(scenario())
    print(f"RSS baseline {baseline:.1f} MiB, peak {peak:.1f} MiB (+{peak - baseline:.1f}); "
          f"good subscriber {checker.count} events, {checker.count / (elapsed + 0.1):.0f}/s; dropped {dropped:.0f}")
    assert checker.gaps == [], f"the good subscriber missed messages: {checker.gaps[:5]}"
    assert checker.count > 0, "the good subscriber got nothing"
    timing_bound(checker.count >= 0.9 * RATE * SECONDS, f"the good subscriber got {checker.count} events in {SECONDS} s (bound: 90% of {RATE}/s)")
    assert peak - baseline < RSS_CEILING_MIB, f"RSS grew {peak - baseline:.1f} MiB"
    assert dropped > 0, "the stalled clients never filled their buffers"
    assert buffered <= 3 * BUFFER
    # one log line per burst: each stalled client's burst ends when it goes away
    bridge = world["bridge"]
    bridge.wait_for(r"slow consumer .*dropped \d+ events \(drop_oldest\)", start=log_start)
    wait_for(lambda: sum("slow consumer" in line for line in bridge.lines[log_start:]) >= 3, what="a line per stalled client")
    bursts = [line for line in bridge.lines[log_start:] if "slow consumer" in line]
    assert len(bursts) == 3, bursts


def test_close_policy_closes_the_stalled_client_with_1008(world):
    """An endpoint with slow_consumer = "close": the stalled client is closed with 1008, others carry on."""
    url = world["url"]
    before = metric(url, "zmqwamp_limit_exceeded_total", limit="slow_consumer")

    async def scenario():
        good = await WSClient.connect(url)
        await good.hello()
        await good.subscribe("fastclose")
        checker = SeqChecker()
        slow = await stalled(url, "fastclose")
        deadline = time.monotonic() + 20
        while metric(url, "zmqwamp_limit_exceeded_total", limit="slow_consumer") == before:
            assert time.monotonic() < deadline, "the stalled client was never closed"
            for _ in range(300):
                checker.see(await good.recv_json())
        for _ in range(300):
            checker.see(await good.recv_json())
        with pytest.raises(Closed) as closed:
            while True:  # read what was already on its way, then the close frame
                await slow.recv(timeout=10)
        slow.abort()
        await good.goodbye()
        return closed.value, checker

    closed, checker = run(scenario())
    assert closed.code == 1008 and "slow consumer" in closed.reason
    assert checker.gaps == []


def test_reply_is_delivered_while_events_are_dropped(world):
    """A client that stops reading while subscribed still gets its RESULT once it reads again."""
    url = world["url"]

    async def scenario():
        await no_queue(url)
        ws = await stalled(url, world["pub"])
        await until_queueing(url)
        ws.send_json([48, 777, {}, world["rep"], ["while stalled"]])
        await asyncio.sleep(1.0)  # the reply waits behind EVENTs, which keep being dropped
        while True:
            msg = await ws.recv_json(timeout=10)
            if msg[0] in (RESULT, ERROR):
                ws.abort()
                return msg

    msg = run(scenario())
    assert msg[:2] == [RESULT, 777] and msg[3] == ["got this while stalled"]


def test_undeliverable_reply_closes_the_session(world):
    """A reply bigger than the whole outgoing buffer, to a stalled client: close 1008, not a silent drop."""
    url = world["url"]

    async def scenario():
        await no_queue(url)
        ws = await stalled(url, world["pub"])
        await until_queueing(url)
        ws.send_json([48, 778, {}, world["rep"], ["x" * (BUFFER + 1000)]])
        with pytest.raises(Closed) as closed:
            while True:
                msg = await ws.recv_json(timeout=10)
                assert msg[0] == EVENT, f"the reply cannot have fitted: {msg[:2]}"
        ws.abort()
        return closed.value

    closed = run(scenario())
    assert closed.code == 1008 and "reply undeliverable" in closed.reason


def test_stalled_subscriber_over_tls_is_bounded_too(tmp_path):
    """Over wss:// (TLS under the WebSocket) the outgoing buffer is bounded the same way."""
    import ssl

    from harness import make_cert

    key, cert, _ = make_cert(tmp_path)
    pub, pub_addr = start_fastpub(RATE, SIZE)
    bridge, _ = start_bridge(
        "--anonymous", "--allow", pub_addr, "--max-outgoing-buffer", str(BUFFER),
        listen=f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}",
    )
    context = ssl.create_default_context(cafile=str(cert))

    async def scenario():
        port = bridge.wait_for(r"starting on (\d+)").group(1)
        url = f"wss://localhost:{port}/ws"
        baseline = rss_mib(bridge.proc.pid)
        ws = await WSClient.connect(url, rcvbuf=4096, ssl=context)
        await ws.hello()
        assert (await ws.subscribe(pub_addr))[0] == 33
        await asyncio.sleep(4)  # the scenario: a client stalled for 4 s while the PUB goes on
        dropped = await eventually(
            lambda: metric(url, "zmqwamp_dropped_total", context, reason="slow_consumer"), what="events dropped", blocking=True
        )
        ws.abort()
        return baseline, rss_mib(bridge.proc.pid), dropped

    try:
        baseline, after, dropped = run(scenario())
    finally:
        bridge.stop()
        pub.stop()
    print(f"TLS stalled client: RSS {baseline:.1f} -> {after:.1f} MiB, {dropped:.0f} events dropped")
    assert dropped > 0 and after - baseline < RSS_CEILING_MIB
