"""Load, churn and shutdown against a real bridge.

* Churn: ``ZMQWAMP_CHURN_SESSIONS`` sessions (default 1,000) in waves of
  ``ZMQWAMP_CHURN_WAVE`` (default 250) connect, subscribe, call, get an event and
  leave in four ways (GOODBYE, TCP drop, WebSocket close without GOODBYE, TCP
  drop with a call in flight).  Every call whose caller stayed got exactly one
  reply; afterwards the bridge's fds, zmq sockets, subscriptions and RSS are
  back to their baseline.
* SIGTERM with calls in flight: every reply that arrives within the drain time
  is delivered, then each client gets GOODBYE ``wamp.close.system_shutdown``
  and close 1001; calls still waiting when the drain time ends get ERROR.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import time

import pytest

from harness import start_bridge, start_pub, start_rep
from minws import ERROR, EVENT, GOODBYE, RESULT, SUBSCRIBED, Closed, WSClient
from probes import fd_count, healthz, metric, rss_mib, start_delayrep
from waiting import eventually, timing_bound, wait_for

SESSIONS = int(os.environ.get("ZMQWAMP_CHURN_SESSIONS", "1000"))
WAVE = int(os.environ.get("ZMQWAMP_CHURN_WAVE", "250"))
WARM_UP = int(os.environ.get("ZMQWAMP_CHURN_WARM_UP", "2000"))  # sessions before the baseline is measured
RSS_TOLERANCE_MIB = 10  # the allocator's high-water mark still rises over the first thousands of sessions


def run(coro, timeout=300):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture(scope="module")
def churn_world(tmp_path_factory):
    rep, rep_addr = start_rep()
    pub, pub_addr = start_pub(interval=0.01)
    config = tmp_path_factory.mktemp("churn") / "bridge.toml"
    config.write_text(
        'anonymous = true\nallow = ["tcp://127.0.0.1:*"]\nidle_close = 0.5\n'
        f"max_sessions = {WAVE * 2}\nmax_sessions_per_peer = {WAVE * 2}\n"
    )
    bridge, url = start_bridge("--config", str(config))
    yield {"url": url, "rep": rep_addr, "pub": pub_addr, "bridge": bridge}
    for p in (bridge, rep, pub):
        p.stop()


class Ledger:
    """Replies per call: each call whose caller stayed must have exactly one."""

    def __init__(self):
        self.replies: collections.Counter = collections.Counter()
        self.calls = 0
        self.sessions = 0
        self.endings: collections.Counter = collections.Counter()


async def one_session(world, i: int, ledger: Ledger) -> None:
    ws = await WSClient.connect(world["url"])
    await ws.hello()
    options = {"filter": "hugo"} if i % 2 else {}
    requests = [ws.next_id() for _ in range(2)]
    ws.send_json([32, requests[0] + 10**9, options, world["pub"]])
    for request in requests:
        ws.send_json([48, request, {"timeout": 10000}, world["rep"], [f"s{i} r{request}"]])
        ledger.calls += 1
    subscribed = event = False
    while not (subscribed and event and all(ledger.replies[(i, r)] for r in requests)):
        msg = await ws.recv_json(timeout=20)
        if msg[0] == SUBSCRIBED:
            subscribed = True
        elif msg[0] == EVENT:
            event = True
        elif msg[0] == RESULT:
            assert msg[3] == [f"got this s{i} r{msg[1]}"], msg
            ledger.replies[(i, msg[1])] += 1
        elif msg[0] == ERROR:
            ledger.replies[(i, msg[2])] += 1
        else:
            raise AssertionError(f"unexpected {msg}")
    ending = ("goodbye", "drop", "close", "drop in flight")[i % 4]
    ledger.endings[ending] += 1
    if ending == "goodbye":
        await ws.goodbye()
        await ws.close()
    elif ending == "drop":
        ws.abort()
    elif ending == "close":
        await ws.close()
    else:
        ws.send_json([48, ws.next_id(), {}, world["rep"], ["never read"]])
        ws.abort()
    ledger.sessions += 1


def wait_idle(url: str, timeout: float = 20.0) -> dict:
    def idle() -> dict | None:
        health = healthz(url)
        quiet = (health["sessions"], health["subscriptions"], health["calls_in_flight"], health["zmq_endpoints"])
        return health if quiet == (0, 0, 0, {"req": [], "sub": []}) else None

    return wait_for(idle, timeout, what="back to idle (no session, subscription, call or zmq socket)")


def test_churn_returns_to_baseline(churn_world):
    """1,000 sessions in waves, twice: one reply per call; fds, zmq sockets, subscriptions back to baseline;
    RSS back near the baseline and flat from the first 1,000 to the second (no per-session leak)."""
    url, pid = churn_world["url"], churn_world["bridge"].proc.pid

    async def waves(first: int, count: int, ledger: Ledger) -> None:
        for start in range(first, first + count, WAVE):
            await asyncio.gather(*(one_session(churn_world, i, ledger) for i in range(start, min(first + count, start + WAVE))))

    def settled() -> tuple[int, float]:
        wait_idle(url)
        try:  # lingering closes end within 2 s
            wait_for(lambda: fd_count(pid) <= fds, timeout=10, every=0.2)
        except AssertionError:
            pass  # more fds than the baseline: the assertion below says how many
        time.sleep(0.5)  # the scenario: RSS measured once the bridge has been idle a moment
        return fd_count(pid), rss_mib(pid)

    fds = 10**6
    # warm up: zmq context threads, the allocator's high-water mark (after 500 sessions it still rose by up to
    # 3.9 MiB from the first measured 1,000 sessions to the second, on the code before issue 17 too, without
    # growing with the number of sessions: 4,000-session rounds rose by 0.6 and 1.6 MiB)
    run(waves(0, WARM_UP, Ledger()))
    fds, rss = settled()

    rounds = []
    for n in range(2):
        ledger = Ledger()
        started = time.monotonic()
        run(waves((n + 1) * 10**6, SESSIONS, ledger))
        elapsed = time.monotonic() - started
        assert ledger.sessions == SESSIONS
        assert len(ledger.replies) == ledger.calls and set(ledger.replies.values()) == {1}, "a call got no reply, or two"
        rounds.append((ledger, elapsed, *settled()))
    print(f"churn: baseline fds {fds}, RSS {rss:.1f} MiB; " + "; ".join(
        f"{led.sessions} sessions ({dict(led.endings)}), {led.calls} calls in {t:.1f}s -> fds {f}, RSS {r:.1f} MiB"
        for led, t, f, r in rounds))
    assert metric(url, "zmqwamp_zmq_sockets_open", kind="req") == 0
    assert metric(url, "zmqwamp_zmq_sockets_open", kind="sub") == 0
    assert metric(url, "zmqwamp_sessions_open") == 0
    assert metric(url, "zmqwamp_outgoing_buffered_bytes") == 0
    for _, _, fds_after, _ in rounds:
        assert fds_after == fds, "file descriptors leaked"
    (_, _, _, rss1), (_, _, _, rss2) = rounds
    assert rss1 - rss < RSS_TOLERANCE_MIB, f"RSS grew {rss1 - rss:.1f} MiB over {SESSIONS} sessions"
    assert rss2 - rss1 < 3, f"RSS kept growing: {rss2 - rss1:.1f} MiB over another {SESSIONS} sessions"


# -- SIGTERM during load -------------------------------------------------------------------


async def caller(url: str, target: str, calls: int, pub: str) -> dict:
    """Send ``calls`` CALLs, then read everything until the bridge closes the connection."""
    ws = await WSClient.connect(url)
    await ws.hello()
    assert (await ws.subscribe(pub))[0] == SUBSCRIBED
    requests = [ws.next_id() for _ in range(calls)]
    for request in requests:
        ws.send_json([48, request, {"timeout": 60000}, target, [f"r{request}"]])
    answers: dict[int, list] = collections.defaultdict(list)
    goodbye = None
    try:
        while True:
            msg = await ws.recv_json(timeout=30)
            if msg[0] == RESULT:
                answers[msg[1]].append(msg)
            elif msg[0] == ERROR:
                answers[msg[2]].append(msg)
            elif msg[0] == GOODBYE:
                assert goodbye is None
                goodbye = msg
                assert all(answers[r] for r in requests), "GOODBYE before every call was answered"
    except Closed as e:
        closed = e.code
    return {"requests": requests, "answers": answers, "goodbye": goodbye, "closed": closed}


def sigterm_during(delay: float, drain: float, sessions: int, calls: int):
    rep, rep_addr = start_delayrep(delay)
    pub, pub_addr = start_pub(interval=0.02)
    bridge, url = start_bridge("--anonymous", "--allow", "tcp://127.0.0.1:*", "--drain-time", str(drain))

    async def scenario():
        tasks = [asyncio.ensure_future(caller(url, rep_addr, calls, pub_addr)) for _ in range(sessions)]
        await eventually(lambda: healthz(url)["calls_in_flight"] >= sessions * calls, timeout=20, what="every call in flight", blocking=True)
        stopped = time.monotonic()
        bridge.proc.send_signal(signal.SIGTERM)
        results = await asyncio.gather(*tasks)
        return results, time.monotonic() - stopped

    try:
        results, took = run(scenario(), timeout=60)
        code = bridge.proc.wait(20)
    finally:
        for p in (bridge, rep, pub):
            p.stop()
    return results, took, code, bridge.output


def test_sigterm_delivers_replies_within_the_drain_time():
    """SIGTERM with 120 calls in flight (replies due in 1 s, drain 5 s): all delivered, then GOODBYE and 1001."""
    results, took, code, output = sigterm_during(delay=1.0, drain=5.0, sessions=40, calls=3)
    print(f"sigterm: {sum(len(r['requests']) for r in results)} calls in flight, all answered; stopped in {took:.1f}s")
    for r in results:
        for request in r["requests"]:
            [answer] = r["answers"][request]
            assert answer[0] == RESULT and answer[3] == [f"got this r{request}"]
        assert r["goodbye"] is not None and r["goodbye"][2] == "wamp.close.system_shutdown", r["goodbye"]
        assert r["closed"] == 1001
    timing_bound(took < 5.0, f"stopped {took:.1f} s after SIGTERM (drain time 5 s)")
    assert code in (0, -signal.SIGTERM), output[-3000:]  # twistd re-raises the signal it stopped on


def test_sigterm_cancels_what_the_drain_time_cannot_wait_for():
    """Replies due after the drain time: each call gets ERROR canceled, then GOODBYE; the bridge exits on time."""
    results, took, code, output = sigterm_during(delay=30.0, drain=1.0, sessions=10, calls=2)
    for r in results:
        for request in r["requests"]:
            [answer] = r["answers"][request]
            assert answer[0] == ERROR and answer[4] == "wamp.error.canceled", answer
        assert r["goodbye"][2] == "wamp.close.system_shutdown" and r["closed"] == 1001
    assert took > 0.9, took  # the drain time was waited for
    timing_bound(took < 4, f"stopped {took:.1f} s after SIGTERM (drain time 1 s, bound 4 s)")
    assert code in (0, -signal.SIGTERM), output[-3000:]  # twistd re-raises the signal it stopped on
