"""Broken backends against a real bridge: clear errors, recovery, and nothing left behind."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from harness import start_bridge, start_pub, start_rep
from minws import ERROR, EVENT, RESULT, SUBSCRIBED, WSClient
from probes import fd_count, healthz, metric
from waiting import eventually, timing_bound, wait_for

IDLE_CLOSE = 0.5


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def free_tcp_address() -> str:
    """An address where nothing listens (a REP is started there, checked, and stopped)."""
    rep, address = start_rep()
    rep.stop()
    return address


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    config = tmp_path_factory.mktemp("backends") / "bridge.toml"
    config.write_text(
        "anonymous = true\n"
        'allow = ["tcp://127.0.0.1:*", "ipc://*", "tcp://no-such-host.invalid:*"]\n'
        f"idle_close = {IDLE_CLOSE}\n"
    )
    proc, url = start_bridge("--config", str(config))
    yield {"url": url, "proc": proc}
    proc.stop()


def wait_idle(url: str, timeout: float = 10.0) -> dict:
    """Wait until the bridge holds no zmq socket, call or subscription; return /healthz."""

    def idle() -> dict | None:
        health = healthz(url)
        quiet = (health["zmq_endpoints"], health["calls_in_flight"], health["subscriptions"], health["sessions"])
        return health if quiet == ({"req": [], "sub": []}, 0, 0, 0) else None

    health = wait_for(idle, timeout, what="the bridge idle (no zmq socket, call, subscription or session)")
    assert metric(url, "zmqwamp_zmq_sockets_open", kind="req") == 0
    assert metric(url, "zmqwamp_zmq_sockets_open", kind="sub") == 0
    assert metric(url, "zmqwamp_outgoing_buffered_bytes") == 0
    return health


def settled_fd_count(pid: int) -> int:
    """The bridge's open fds once the count stops changing (closes of earlier connections lingering 2 s at most)."""
    counts = [fd_count(pid)]

    def steady() -> bool:
        counts.append(fd_count(pid))
        return len(counts) > 10 and len(set(counts[-10:])) == 1  # the same for 10 reads, 0.25 s apart

    wait_for(steady, timeout=20, what="a steady fd count", every=0.25)
    return counts[-1]


async def session(url: str) -> WSClient:
    ws = await WSClient.connect(url)
    await ws.hello()
    return ws


def test_nothing_bound_times_out_clearly_and_leaks_nothing(bridge):
    """20 calls to an address with no REP: each gets ERROR canceled 'timed out'; the socket is closed after."""
    url, address = bridge["url"], free_tcp_address()

    async def scenario():
        ws = await session(url)
        started = time.monotonic()
        requests = []
        for i in range(20):
            request = ws.next_id()
            ws.send_json([48, request, {"timeout": 500}, address, [f"m{i}"]])
            requests.append(request)
        got = {}
        while len(got) < len(requests):
            msg = await ws.recv_json(timeout=5)
            assert msg[2] not in got, "two replies to one call"
            got[msg[2]] = msg
        elapsed = time.monotonic() - started
        await ws.goodbye()
        return [got[r] for r in requests], elapsed

    replies, elapsed = run(scenario())
    assert elapsed < 10, elapsed  # 20 timeouts of 0.5 s run side by side, not one after another
    timing_bound(elapsed < 3, f"20 calls timed out (0.5 s) in {elapsed:.1f} s (bound 3 s)")
    for msg in replies:
        assert msg[0] == ERROR and msg[4] == "wamp.error.canceled" and "timed out" in msg[5][0], msg
    wait_idle(url)


def test_rep_dies_mid_call_then_restarts(bridge):
    """A REP killed while answering: the call times out with a clear error; after a restart calls succeed."""
    url = bridge["url"]
    rep, address = start_rep(delay=1.0)

    async def scenario():
        ws = await session(url)
        assert (await ws.call(address, ["warm"], options={"timeout": 5000}))[0] == RESULT
        pending = asyncio.ensure_future(ws.call(address, ["doomed"], options={"timeout": 2000}))
        await eventually(lambda: healthz(url)["calls_in_flight"] == 1, what="the call at the REP", blocking=True)
        rep.stop(signal.SIGKILL)
        died = await pending
        again, _ = start_rep(address)
        try:
            deadline = time.monotonic() + 10
            while True:
                after = await ws.call(address, ["again"], options={"timeout": 1000})
                if after[0] == RESULT or time.monotonic() > deadline:
                    break
        finally:
            await ws.goodbye()
            again.stop()
        return died, after

    died, after = run(scenario())
    assert died[0] == ERROR and died[4] == "wamp.error.canceled" and "timed out" in died[5][0]
    assert after[0] == RESULT and after[3] == ["got this again"]
    wait_idle(url)


def test_late_reply_never_reaches_a_later_call(bridge):
    """A reply arriving after its call timed out is dropped (and counted), not given to the next call."""
    url = bridge["url"]
    rep, address = start_rep(delay=1.0)
    late_before = metric(url, "zmqwamp_dropped_total", reason="reply_late")

    async def scenario():
        ws = await session(url)
        first = await ws.call(address, ["first"], options={"timeout": 300})
        second = await ws.call(address, ["second"], options={"timeout": 5000})
        await ws.goodbye()
        return first, second

    try:
        first, second = run(scenario())
    finally:
        rep.stop()
    assert first[0] == ERROR and first[4] == "wamp.error.canceled"
    assert second[0] == RESULT and second[3] == ["got this second"]
    assert metric(url, "zmqwamp_dropped_total", reason="reply_late") == late_before + 1
    wait_idle(url)


def test_pub_restart_resumes_without_resubscribing(bridge):
    """A PUB that stops and comes back on the same address: subscribers receive again, same subscription."""
    url = bridge["url"]
    pub, address = start_pub(interval=0.02, topics="tick")

    async def scenario():
        ws = await session(url)
        sub = await ws.subscribe(address)
        assert sub[0] == SUBSCRIBED
        before = await ws.recv_json()
        pub.stop()
        while True:  # whatever was in flight (the PUB is gone: nothing comes after a pause)
            try:
                await ws.recv_json(timeout=0.3)
            except TimeoutError:
                break
        again, _ = start_pub(address, interval=0.02, topics="tick")
        try:
            after = await ws.recv_json(timeout=10)
        finally:
            await ws.goodbye()
            again.stop()
        return sub, before, after

    sub, before, after = run(scenario())
    assert before[0] == EVENT and after[0] == EVENT
    assert after[1] == sub[2], "the event came under the original subscription id"
    wait_idle(url)


def test_unconnectable_endpoints_fail_fast(bridge):
    """Unknown host name: backend_unavailable saying it did not resolve; missing ipc socket: backend_unavailable
    at once; an impossible ipc path: invalid_uri.  Nothing hangs, nothing is left open."""
    url = bridge["url"]

    async def scenario():
        ws = await session(url)
        started = time.monotonic()
        bad_host = await ws.call("tcp://no-such-host.invalid:5555", ["x"], options={"timeout": 500})
        t_host = time.monotonic() - started
        started = time.monotonic()
        no_ipc = await ws.call("ipc:///nonexistent/dir/zmqwamp.sock", ["x"])
        t_ipc = time.monotonic() - started
        long_ipc = await ws.call("ipc:///" + "a" * 200, ["x"])
        long_sub = await ws.subscribe("ipc:///" + "a" * 200)
        await ws.goodbye()
        return bad_host, t_host, no_ipc, t_ipc, long_ipc, long_sub

    bad_host, t_host, no_ipc, t_ipc, long_ipc, long_sub = run(scenario())
    assert bad_host[0] == ERROR and bad_host[4] == "zmqwamp.error.backend_unavailable", bad_host
    assert "did not resolve" in bad_host[5][0]
    assert t_host < 2
    assert no_ipc[0] == ERROR and no_ipc[4] == "zmqwamp.error.backend_unavailable", no_ipc
    assert t_ipc < 1
    assert long_ipc[0] == ERROR and long_ipc[4] == "wamp.error.invalid_uri", long_ipc
    assert long_sub[0] == ERROR and long_sub[4] == "wamp.error.invalid_uri", long_sub
    wait_idle(url)


def test_no_fd_leak_after_backend_faults(bridge):
    """Rounds of backend faults leave the bridge's open fds where they were.

    The first round (or the tests before) opens what a bridge keeps for good, e.g. the zmq context's own
    fds: the baseline is taken after it, so the test passes in any order, run alone or last."""
    url, pid = bridge["url"], bridge["proc"].proc.pid
    address = free_tcp_address()

    async def scenario():
        ws = await session(url)
        for _ in range(3):
            await ws.call(address, ["x"], options={"timeout": 200})
            await ws.call("tcp://no-such-host.invalid:5555", ["x"], options={"timeout": 200})
        await ws.goodbye()

    run(scenario())
    wait_idle(url)
    baseline = settled_fd_count(pid)  # connections of the first round (or earlier tests) finish their lingering close
    run(scenario())
    wait_idle(url)
    wait_for(lambda: fd_count(pid) <= baseline, what=f"the fds back to {baseline}")
