"""Which zmq endpoints a client can reach, and what reaching them costs: against a real bridge (issue 13).

Each test is the attack as the security review ran it (raw WebSocket, loopback only), and
what must hold instead: a huge filter does not crash the bridge; an ipc path with '..' or a
host name that merely starts like an allowed IP does not get past --allow; a slowly
resolving host name does not stall other sessions; one client cannot use up the zmq
sockets; refused endpoints do not each become a metrics series.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from harness import start_bridge, start_pub, start_rep
from minws import ERROR, EVENT, RESULT, SUBSCRIBED, Closed, HandshakeRefused, WSClient
from probes import healthz, metric, metrics
from waiting import eventually, timing_bound

LIMIT = "zmqwamp.error.limit_exceeded"
UNAVAILABLE = "zmqwamp.error.backend_unavailable"


def run(coro, timeout=90):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def joined(url: str, **kw) -> WSClient:
    ws = await WSClient.connect(url, **kw)
    await ws.hello()
    return ws


async def next_event(ws: WSClient, timeout: float = 5.0) -> list:
    deadline = time.monotonic() + timeout
    while True:
        msg = await ws.recv_json(timeout=max(0.1, deadline - time.monotonic()))
        if msg[0] == EVENT:
            return msg


@pytest.fixture(scope="module")
def services():
    rep, rep_addr = start_rep()
    pub, pub_addr = start_pub(interval=0.05)
    yield {"rep": rep_addr, "pub": pub_addr}
    for p in (rep, pub):
        p.stop()


# -- 1. a huge subscription filter --------------------------------------------------------


def test_huge_filter_is_refused_and_the_bridge_survives(services):
    """A 250,000-character filter option: ERROR max_filter_length, nothing reaches zmq; after the
    session leaves, the bridge still serves another session (it used to die with SIGSEGV in
    libzmq's reaper when the SUB socket holding that filter closed)."""
    proc, url = start_bridge("--anonymous", "--allow", services["pub"], "--allow", services["rep"])
    try:

        async def attack():
            ws = await joined(url)
            got = await ws.subscribe(services["pub"], {"filter": "x" * 250_000})
            if got[0] == SUBSCRIBED:
                ws.send_json([34, ws.next_id(), got[2]])  # UNSUBSCRIBE: the SUB socket closes
                await ws.recv_json()
            ws.abort()
            return got

        async def another():
            ws = await joined(url)
            sub = await ws.subscribe(services["pub"], {"filter": "hugo"})
            event = await next_event(ws)
            reply = await ws.call(services["rep"], ["still here"])
            await ws.goodbye()
            return sub, event, reply

        refused = run(attack())
        try:
            sub, event, reply = run(another())
        except (Closed, HandshakeRefused, OSError) as e:
            pytest.fail(f"the next session was not served ({e!r}); the bridge exited with {proc.proc.wait(5)}")
        assert sub[0] == SUBSCRIBED and event[4][0].startswith("hugo") and reply[0] == RESULT
        assert refused[0] == ERROR and refused[4] == LIMIT and refused[5][0].startswith("max_filter_length"), refused[:5]
        assert metric(url, "zmqwamp_limit_exceeded_total", limit="max_filter_length") == 1
        assert healthz(url)["zmq_endpoints"]["sub"] == [], "the refused SUBSCRIBE opened no socket"
    finally:
        proc.stop()


def test_filters_per_endpoint_and_the_uri_form(services):
    """The ?filter= form is capped too; distinct filters per upstream address are capped across sessions,
    while a filter someone already holds can still be joined."""
    proc, url = start_bridge(
        "--anonymous", "--allow", services["pub"], "--max-filter-length", "8", "--max-filters-per-endpoint", "3"
    )
    try:

        async def scenario():
            a, b = await joined(url), await joined(url)
            long_uri = await a.subscribe(services["pub"] + "?filter=" + "%41" * 9)
            first = [await a.subscribe(services["pub"], {"filter": f"t{i}"}) for i in range(3)]
            fourth = await b.subscribe(services["pub"], {"filter": "t3"})
            shared = await b.subscribe(services["pub"], {"filter": "t0"})
            await a.goodbye()
            await b.goodbye()
            return long_uri, first, fourth, shared

        long_uri, first, fourth, shared = run(scenario())
        assert long_uri[0] == ERROR and long_uri[4] == LIMIT and "max_filter_length" in long_uri[5][0]
        assert [m[0] for m in first] == [SUBSCRIBED] * 3
        assert fourth[0] == ERROR and fourth[4] == LIMIT and fourth[5][0].startswith("max_filters_per_endpoint")
        assert shared[0] == SUBSCRIBED and shared[2] == first[0][2]
    finally:
        proc.stop()


# -- 3. and 4. allow-list escapes ---------------------------------------------------------


@pytest.fixture
def short_tmp():
    """A short directory for ipc sockets (a unix socket path has at most 107 bytes)."""
    path = tempfile.mkdtemp(prefix="zw", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_ipc_dot_dot_does_not_escape_the_allow_list(short_tmp):
    """--allow 'ipc://<dir>/app/*' and a PUB at <dir>/other.sock: SUBSCRIBE to ipc://<dir>/app/../other.sock
    gets ERROR invalid_uri, and no event of that PUB arrives.  '.' and empty segments are refused too, for
    CALL as well (a CALL with '..' is refused earlier, by autobahn's URI check, with a protocol violation)."""
    os.mkdir(f"{short_tmp}/app")
    pub, pub_addr = start_pub(f"ipc://{short_tmp}/other.sock", interval=0.05)
    proc, url = start_bridge("--anonymous", "--allow", f"ipc://{short_tmp}/app/*")
    escape = f"ipc://{short_tmp}/app/../other.sock"
    try:

        async def scenario():
            ws = await joined(url)
            sub = await ws.subscribe(escape)
            events = [m for m in await ws.idle(1.0) if m.payload.startswith(b"[36,")]
            call = await ws.call(f"ipc://{short_tmp}/app/./x.sock", ["x"])
            variants = [await ws.subscribe(f"ipc://{short_tmp}/app/{v}") for v in ("./x.sock", "/x.sock", "x/")]
            await ws.goodbye()
            return sub, events, call, variants

        sub, events, call, variants = run(scenario())
        assert events == [], "events of the other service were delivered"
        for reply in (sub, call, *variants):
            assert reply[0] == ERROR and reply[4] == "wamp.error.invalid_uri", reply
    finally:
        proc.stop()
        pub.stop()


def test_an_ip_glob_does_not_allow_host_names(services):
    """--allow 'tcp://127.0.0.*:*' (an IP glob): a name that starts like one, and the spellings of
    127.0.0.1 that are names, are not allowed; the IP literal is."""
    port = services["rep"].rsplit(":", 1)[1]
    proc, url = start_bridge("--anonymous", "--allow", "tcp://127.0.0.*:*")
    try:

        async def scenario():
            ws = await joined(url)
            names = {
                host: await ws.call(f"tcp://{host}:{port}", ["x"], options={"timeout": 1000})
                for host in ("127.0.0.1.attacker.example", "localhost", "127.1", "0x7f000001", "127.0.0.1.", "[::ffff:127.0.0.1]")
            }
            literal = await ws.call(services["rep"], ["x"])
            await ws.goodbye()
            return names, literal

        names, literal = run(scenario())
        for host, reply in names.items():
            assert reply[0] == ERROR and reply[4] == "wamp.error.not_authorized", (host, reply)
        assert literal[0] == RESULT
        assert healthz(url)["zmq_endpoints"]["req"] == [services["rep"]], "no socket for a refused name"
    finally:
        proc.stop()


# -- 5. name resolution ------------------------------------------------------------------

SLOW_DNS = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* getaddrinfo for names ending in .slow.test: sleep SLOW_DNS_SECONDS, then answer 127.0.0.1 */
int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res) {
    static int (*real)(const char *, const char *, const struct addrinfo *, struct addrinfo **);
    if (!real) real = dlsym(RTLD_NEXT, "getaddrinfo");
    const char *suffix = ".slow.test";
    size_t n = node ? strlen(node) : 0, m = strlen(suffix);
    if (n > m && strcmp(node + n - m, suffix) == 0) {
        const char *s = getenv("SLOW_DNS_SECONDS");
        sleep(s ? atoi(s) : 10);
        return real("127.0.0.1", service, hints, res);
    }
    return real(node, service, hints, res);
}
"""


@pytest.fixture(scope="module")
def slow_dns(tmp_path_factory) -> str:
    """A preload library that makes the system resolver (Python's and libzmq's alike) slow for *.slow.test."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("needs a C compiler to build the slow resolver")
    src = tmp_path_factory.mktemp("slowdns") / "slowdns.c"
    src.write_text(SLOW_DNS)
    lib = src.with_suffix(".so")
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib), str(src), "-ldl"], check=True, capture_output=True)
    return str(lib)


def test_a_slow_host_name_does_not_stall_other_sessions(services, slow_dns):
    """A CALL to a name that takes 8 s to resolve: another session's calls to an unrelated endpoint
    are answered meanwhile (when libzmq resolved on its I/O thread, every call waited those 8 s, and
    again at each reconnect); the slow call itself is answered once the name resolves."""
    port = services["rep"].rsplit(":", 1)[1]
    slow = f"tcp://svc.slow.test:{port}"
    proc, url = start_bridge(
        "--anonymous", "--allow", "tcp://127.0.0.1:*", "--allow", "tcp://*.slow.test:*",
        env={"LD_PRELOAD": slow_dns, "SLOW_DNS_SECONDS": "8"},
    )
    try:

        async def scenario():
            attacker, other = await joined(url), await joined(url, source="127.0.0.2")
            attacker.send_json([48, 1, {"timeout": 30000}, slow, ["via the name"]])
            await eventually(lambda: healthz(url)["calls_in_flight"] == 1, what="the call waiting for the name", blocking=True)
            started = time.monotonic()
            replies = [await other.call(services["rep"], [f"{i}"], timeout=30) for i in range(3)]
            waited = time.monotonic() - started
            slow_reply = await attacker.recv_json(timeout=30)
            again = await attacker.call(slow, ["cached"], timeout=5)
            # a lookup still stuck in the resolver when the bridge stops
            stuck = await attacker.call(f"tcp://stuck.slow.test:{port}", ["x"], options={"timeout": 200})
            await attacker.goodbye()
            await other.goodbye()
            return replies, waited, slow_reply, again, stuck

        replies, waited, slow_reply, again, stuck = run(scenario())
        assert [r[0] for r in replies] == [RESULT] * 3
        # the name takes 8 s: calls that waited for it would take that long
        assert waited < 7, f"another session's calls waited {waited:.1f}s for the name"
        timing_bound(waited < 4, f"another session's 3 calls took {waited:.1f} s meanwhile (bound 4 s)")
        assert slow_reply[0] == RESULT and slow_reply[3] == ["got this via the name"], slow_reply
        assert again[0] == RESULT
        assert metric(url, "zmqwamp_name_lookups_total", outcome="ok") == 1
        assert stuck[0] == ERROR and stuck[4] == "wamp.error.canceled"
        assert proc.stop(timeout=5) == 0, "the bridge did not exit cleanly with a lookup in progress"
    finally:
        proc.stop()


def test_a_name_that_does_not_resolve_fails_the_request_clearly(services):
    """CALL and SUBSCRIBE to a name the resolver does not know: ERROR backend_unavailable saying so, at once."""
    proc, url = start_bridge("--anonymous", "--allow", "tcp://*.invalid:*")
    try:

        async def scenario():
            ws = await joined(url)
            call = await ws.call("tcp://no-such-host.invalid:5555", ["x"], timeout=10)
            sub = await ws.subscribe("tcp://no-such-host.invalid:5556", timeout=10)
            await ws.goodbye()
            return call, sub

        call, sub = run(scenario())
        for reply in (call, sub):
            assert reply[0] == ERROR and reply[4] == UNAVAILABLE and "did not resolve" in reply[5][0], reply
        assert healthz(url)["zmq_endpoints"] == {"req": [], "sub": []}
    finally:
        proc.stop()


# -- 6. zmq sockets ----------------------------------------------------------------------


def test_one_client_cannot_use_up_the_zmq_sockets(services):
    """5 sessions from one address SUBSCRIBE to 256 distinct dead ports each (the review's attack used
    4 x 256 to take all 1,023 sockets of the context): a session gets 32 connections, and so does the address
    (max_endpoints_per_peer 32 since issue 21: with 128, four addresses took all 512), the rest ERROR
    limit_exceeded; a session from another address still reaches the REP and the PUB."""
    proc, url = start_bridge("--anonymous", "--allow", "tcp://127.0.0.1:*")
    try:

        async def attacker(ws: WSClient, first_port: int) -> list:
            requests = {}
            for i in range(256):
                request = ws.next_id()
                requests[request] = None
                ws.send_json([32, request, {}, f"tcp://127.0.0.1:{first_port + i}"])
            while any(v is None for v in requests.values()):
                msg = await ws.recv_json(timeout=20)
                if msg[0] == SUBSCRIBED:
                    requests[msg[1]] = "ok"
                elif msg[0] == ERROR:
                    requests[msg[2]] = msg[5][0].split(":")[0]
            return list(requests.values())

        async def scenario():
            sessions = [await joined(url) for _ in range(5)]
            outcomes = [await attacker(ws, 20000 + 300 * n) for n, ws in enumerate(sessions)]
            victim = await joined(url, source="127.0.0.2")
            reply = await victim.call(services["rep"], ["hello"])
            sub = await victim.subscribe(services["pub"], {"filter": "otto"})
            event = await next_event(victim) if sub[0] == SUBSCRIBED else None
            health = healthz(url)
            for ws in sessions + [victim]:
                ws.abort()
            return outcomes, reply, sub, event, health

        outcomes, reply, sub, event, health = run(scenario())
        assert reply[0] == RESULT, reply
        assert sub[0] == SUBSCRIBED and event is not None
        assert [o.count("ok") for o in outcomes] == [32, 0, 0, 0, 0]
        assert set(outcomes[0][32:]) == {"max_endpoints_per_session"}
        assert all(set(o) == {"max_endpoints_per_peer"} for o in outcomes[1:])
        assert len(health["zmq_endpoints"]["sub"]) == 33  # 32 dead ports and the PUB
    finally:
        proc.stop()


# -- 12. metrics cardinality ---------------------------------------------------------------


def test_refused_endpoints_do_not_each_become_a_series():
    """9 sessions (3 peer addresses) call 630 distinct missing ipc paths and 288 distinct dead tcp ports:
    zmqwamp_calls_total has at most 256 endpoint labels (tcp ones, whose connections opened) and 'other'."""
    proc, url = start_bridge("--anonymous", "--allow", "tcp://127.0.0.1:*", "--allow", "ipc://*",
                             "--max-endpoints-per-peer", "128")  # 96 per address here: labels, not that limit
    try:

        async def calls(ws: WSClient, n: int) -> None:
            targets = [f"ipc:///tmp/zmqwamp-missing-{n}-{i}.sock" for i in range(70)]
            targets += [f"tcp://127.0.0.1:{30000 + 32 * n + i}" for i in range(32)]
            pending = set()
            for target in targets:
                request = ws.next_id()
                pending.add(request)
                ws.send_json([48, request, {"timeout": 300}, target, ["x"]])
            while pending:
                msg = await ws.recv_json(timeout=20)
                assert msg[0] == ERROR and msg[4] != LIMIT, msg
                pending.discard(msg[2])
            await ws.goodbye()

        async def scenario():
            sessions = [await joined(url, source=f"127.0.0.{1 + n % 3}") for n in range(9)]
            await asyncio.gather(*(calls(ws, n) for n, ws in enumerate(sessions)))

        run(scenario())
        labels = {dict(k[1])["endpoint"] for k in metrics(url) if k[0] == "zmqwamp_calls_total"}
        assert len(labels) <= 257, f"{len(labels)} endpoint labels"
        assert "other" in labels and not any(label.startswith("ipc://") for label in labels)
        assert metric(url, "zmqwamp_calls_total", endpoint="other", outcome="unavailable") == 630
    finally:
        proc.stop()
