"""The standing hostile-client suite (issue 21): what one client's input may cost the bridge, end to end.

Every message type and option a client controls, at its limits and pipelined, sent to one real twistd
bridge (real pyzmq REP and PUB services, an alias holding a 100,000-message history) by raw clients
(tests/minws.py: exactly the bytes an attacker would send). For each attack the test asserts:

* the bridge's own CPU seconds (``/proc/PID/stat``, steady on a busy machine where wall time is not) under a
  bound: ``cpu_base + cpu_per_mb`` per MB the attacker sent, so no message costs more than a small multiple
  of its size;
* the bytes of log it wrote under a bound (a client may not flood the log);
* that a healthy session kept being served meanwhile: its CALLs are answered correctly during the attack
  (their latency is a timing bound: enforced under ``make soak``, a warning otherwise).

New features add their attacks to :data:`ATTACKS`. The attacks of one issue item have tests of their own
too, next to the feature (tests/e2e/test_hostile_input.py, test_history.py, ...); this module is the
table that keeps the whole class closed. docs/reliability.md's "Hostile clients" table lists them.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import cbor2
import msgpack
import pytest

from collisions import bignum_key_map, tuple_key_map
from harness import start_bridge, start_rep
from minws import CALL, RESULT, Closed, HandshakeRefused, WSClient, open_tcp
from probes import cpu_seconds, get, metric, start_fastpub
from waiting import timing_bound, wait_for

HISTORY = 100_000
PUBLISH, REGISTER, UNSUBSCRIBE, CANCEL, SUBSCRIBE, HELLO, AUTHENTICATE = 16, 64, 34, 49, 32, 1, 5


def run(coro, timeout: float = 120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


# -- the bridge every attack is sent to ------------------------------------------------------------


@dataclass
class Suite:
    proc: object
    url: str
    rep: str  # an echo REP
    slow_rep: str  # answers after 50 ms
    ring: str  # an alias with a full 100,000-message history
    port: int
    sources: list[str]
    attacker: str = "127.0.0.2"  # the address of the attack running: one per attack (see source)

    @property
    def pid(self) -> int:
        return self.proc.proc.pid

    def source(self) -> str:
        """The attack's source address: one 127.x address per attack, so per-address limits and penalties stay
        with it, and every connection of an attack comes from it, as from one attacker."""
        return self.attacker


@pytest.fixture(scope="module")
def suite():
    rep, rep_addr = start_rep()
    slow, slow_addr = start_rep(delay=0.05)
    fill, fill_addr = start_fastpub(rate=40_000, size=6, topic="t", count=HISTORY + 20_000, wait=True)
    config = Path(tempfile.mkdtemp()) / "suite.toml"
    config.write_text(
        f"""
anonymous = true
allow = ["tcp://127.0.0.1:*"]
auth = ["memory:alice:alice-right-ticket-1"]

[endpoints.ring]
address = "{fill_addr}"
kind = "sub"
history = {HISTORY}
history_bytes = 60000000
keep_open = true

[endpoints.jsonring]
address = "{fill_addr}"
kind = "sub"
codec = "json"
history = 1000
keep_open = true
"""
    )
    proc, url = start_bridge("--config", str(config), "--call-timeout", "5")
    try:
        fill.wait_for(r"sent \d+ messages", timeout=120)
        wait_for(
            lambda: metric(url, "zmqwamp_history_messages", endpoint="ring") >= HISTORY * 0.99,
            timeout=60,
            what="the ring alias holds its 100,000 messages",
        )
        yield Suite(proc, url, rep_addr, slow_addr, "ring", int(url.rsplit(":", 1)[1].split("/")[0]),
                    [f"127.0.{i // 250}.{i % 250 + 2}" for i in range(1, 200)])
    finally:
        for p in (proc, rep, slow, fill):
            p.stop()


# -- measuring one attack ----------------------------------------------------------------------------


def log_bytes(proc) -> int:
    return sum(len(line) + 1 for line in proc.lines)


def settle(pid: int, quiet: float = 0.4, timeout: float = 60.0) -> None:
    """Wait until the bridge is idle (no more than a tick of CPU per 100 ms for ``quiet`` s): the attack's
    work, including whatever it queued for later turns, is over."""
    deadline = time.monotonic() + timeout
    last = cpu_seconds(pid)
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = cpu_seconds(pid)
        if now - last > 0.015:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet:
            return
        last = now


class Healthy:
    """Another session, calling the echo REP back to back while an attack runs."""

    def __init__(self, s: Suite) -> None:
        self.s = s
        self.answered = 0
        self.worst = 0.0
        self._stop = False

    async def run(self) -> None:
        ws = await WSClient.connect(self.s.url, timeout=30)
        try:
            await ws.hello()
            while not self._stop:
                sent = time.monotonic()
                reply = await ws.call(self.s.rep, ["still here"], timeout=60)
                assert reply[0] == RESULT and reply[3] == ["got this still here"], reply
                self.answered += 1
                self.worst = max(self.worst, time.monotonic() - sent)
                await asyncio.sleep(0.02)
        finally:
            ws.abort()

    def stop(self) -> None:
        self._stop = True


Attack = Callable[[Suite], Awaitable[int]]  # sends its attack, returns the bytes it sent


@dataclass(frozen=True)
class Case:
    name: str
    attack: Attack
    cpu_base: float = 0.3  # CPU seconds the bridge may spend on it, plus
    cpu_per_mb: float = 0.15  # per MB the attacker sent
    max_log: int = 16_000  # bytes of log the bridge may write for it

    def __str__(self) -> str:
        return self.name


async def _attack_with_healthy(s: Suite, case: Case) -> tuple[int, Healthy]:
    healthy = Healthy(s)
    task = asyncio.create_task(healthy.run())
    await asyncio.sleep(0.1)
    try:
        sent = await case.attack(s)
    finally:
        healthy.stop()
    await task
    return sent, healthy


# -- helpers for the attacks ----------------------------------------------------------------------------


async def connect(s: Suite, protocol: str = "wamp.2.json", **kw) -> WSClient:
    kw.setdefault("source", s.source())
    ws = await WSClient.connect(s.url, protocols=(protocol,), timeout=30, **kw)
    assert ws.protocol == protocol
    return ws


async def joined(s: Suite, protocol: str = "wamp.2.json", **kw) -> WSClient:
    ws = await connect(s, protocol, **kw)
    send(ws, [HELLO, "zmqwamp", {"roles": {"caller": {}, "subscriber": {}}}])
    welcome = decode(ws, (await ws.recv(30)).payload)
    assert welcome[0] == 2, welcome
    return ws


def encode(ws: WSClient, msg) -> bytes:
    if ws.protocol == "wamp.2.cbor":
        return cbor2.dumps(msg)
    if ws.protocol == "wamp.2.msgpack":
        return msgpack.packb(msg)
    return json.dumps(msg).encode()


def decode(ws: WSClient, payload: bytes):
    if ws.protocol == "wamp.2.cbor":
        return cbor2.loads(payload)
    if ws.protocol == "wamp.2.msgpack":
        return msgpack.unpackb(payload)
    return json.loads(payload)


def send(ws: WSClient, msg) -> int:
    payload = encode(ws, msg)
    ws.send(payload, binary=ws.protocol != "wamp.2.json")
    return len(payload)


async def drain(ws: WSClient, seconds: float = 3.0) -> list:
    """Read (and decode) what the bridge sends for up to ``seconds`` or until it closes; then drop the connection."""
    got = []
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            try:
                got.append((await ws.recv(left)).payload)
            except TimeoutError:
                break
    except Closed:
        pass
    finally:
        ws.abort()
    return got


async def never_read(ws: WSClient, seconds: float) -> None:
    """Hold the connection without reading for ``seconds`` (the bridge's buffers fill), then drop it."""
    await asyncio.sleep(seconds)
    ws.abort()


def cbor_call(rep: str, argument: bytes) -> bytes:
    """A CBOR CALL to ``rep`` whose one argument is the raw CBOR item ``argument``."""
    return b"\x85" + cbor2.dumps(CALL) + cbor2.dumps(1) + b"\xa0" + cbor2.dumps(rep) + b"\x81" + argument


# -- the attacks -------------------------------------------------------------------------------------------
# Before login (anyone who reaches the port; CBOR is always offered, a client without Origin passes).


async def cbor_colliding_keys_before_hello(s: Suite) -> int:
    """Item 1: 1 MB of colliding bignum map keys before HELLO (43 s of a frozen reactor before)."""
    ws = await connect(s, "wamp.2.cbor")
    payload = b"\x83\x01" + cbor2.dumps("zmqwamp") + bignum_key_map(75_000)
    ws.send(payload, binary=True)
    await drain(ws)
    return len(payload)


async def cbor_colliding_tuple_keys_before_hello(s: Suite) -> int:
    """Item 1: 850 kB of colliding array (tuple) keys, no tag at all (4.3 s before)."""
    ws = await connect(s, "wamp.2.cbor")
    payload = b"\x83\x01" + cbor2.dumps("zmqwamp") + tuple_key_map(55_000)
    ws.send(payload, binary=True)
    await drain(ws)
    return len(payload)


async def cbor_colliding_keys_in_call(s: Suite) -> int:
    """Item 1, after login: colliding keys in a CALL argument, 250 kB under the message size limit."""
    ws = await joined(s, "wamp.2.cbor")
    payload = cbor_call(s.rep, bignum_key_map(18_000))
    ws.send(payload, binary=True)
    await drain(ws)
    return len(payload)


async def cbor_colliding_tuples_in_call(s: Suite) -> int:
    ws = await joined(s, "wamp.2.cbor")
    payload = cbor_call(s.rep, tuple_key_map(60_000))
    ws.send(payload, binary=True)
    await drain(ws)
    return len(payload)


async def oversized_hello(s: Suite) -> int:
    """A HELLO padded to the message size limit: before login only a few kB are needed."""
    ws = await connect(s)
    payload = json.dumps([HELLO, "zmqwamp", {"roles": {"caller": {}}, "pad": "x" * 1_040_000}]).encode()
    ws.send(payload)
    await drain(ws)
    return len(payload)


async def deep_nesting(s: Suite, protocol: str) -> int:
    """Arrays nested 200,000 deep in a CALL argument, after login."""
    ws = await joined(s, protocol)
    depth = 200_000
    if protocol == "wamp.2.json":
        payload = (f'[48,1,{{}},"{s.rep}",[' + "[" * depth + "]" * depth + "]]").encode()
        ws.send(payload)
    else:
        inner = (b"\x81" * depth + b"\x80") if protocol == "wamp.2.cbor" else (b"\x91" * depth + b"\x90")
        head = encode(ws, [CALL, 1, {}, s.rep])
        # the 4-element list's header says 5, and the fifth element is the argument list holding the nesting
        payload = bytes([head[0] + 1]) + head[1:] + (b"\x81" if protocol == "wamp.2.cbor" else b"\x91") + inner
        ws.send(payload, binary=True)
    await drain(ws)
    return len(payload)


async def json_nul_strings(s: Suite) -> int:
    """Item 11: a 1 MB CALL argument of strings with \\u0000 (autobahn's pure-Python scanner: 0.5 s/MiB)."""
    ws = await joined(s)
    payload = json.dumps([CALL, 1, {}, s.rep, ["\u0000" + "QUJD" * 10] * 17_000]).encode()
    ws.send(payload)
    await drain(ws)
    return len(payload)


async def ping_flood(s: Suite) -> int:
    """Item 11: 1 MiB of 125-byte pings before HELLO (2 s of CPU per MiB before)."""
    ws = await connect(s)
    n = 1024 * 1024 // 131
    data = b"".join(
        b"\x89\xfd" + b"\x00\x00\x00\x00" + b"p" * 125 for _ in range(n)
    )  # a zero mask: the payload as is
    ws.send_raw(data)
    await drain(ws, 5)
    return len(data)


async def unsolicited_pongs(s: Suite) -> int:
    ws = await connect(s)
    data = b"".join(b"\x8a\xfd" + b"\x00\x00\x00\x00" + b"q" * 125 for _ in range(8000))
    ws.send_raw(data)
    await drain(ws, 5)
    return len(data)


async def empty_fragments(s: Suite) -> int:
    """One message in 1,000,000 empty continuation frames (5.1 s before max_message_fragments)."""
    ws = await joined(s)
    data = b"\x01\x80" + b"\x00\x00\x00\x00" + (b"\x00\x80\x00\x00\x00\x00" * 1_000_000)
    ws.send_raw(data)
    await drain(ws)
    return len(data)


async def unknown_types_pipelined(s: Suite) -> int:
    ws = await connect(s)
    n = 0
    for _ in range(10_000):
        n += send(ws, [999, {}, "x" * 20])
    await drain(ws)
    return n


async def second_hellos(s: Suite) -> int:
    ws = await joined(s)
    n = 0
    for _ in range(5_000):
        n += send(ws, [HELLO, "zmqwamp", {"roles": {"caller": {}}}])
    await drain(ws)
    return n


async def wrong_tickets(s: Suite) -> int:
    """Many wrong tickets at once from one address (the throttle answers them, unchecked past max_pending_logins)."""
    source = s.source()
    n = 0

    async def one() -> int:
        ws = await WSClient.connect(s.url, timeout=30, source=source)
        try:
            sent = send(ws, [HELLO, "zmqwamp", {"roles": {"caller": {}}, "authmethods": ["ticket"], "authid": "alice"}])
            await ws.recv(30)
            sent += send(ws, [AUTHENTICATE, "wrong-" + "x" * 100, {}])
            await ws.recv(30)
            return sent
        except (Closed, TimeoutError):
            return 0
        finally:
            ws.abort()

    for sent in await asyncio.gather(*(one() for _ in range(150))):
        n += sent
    return n


async def lone_surrogates(s: Suite) -> int:
    """Item 6: an authid and a ticket holding a lone surrogate (a critical traceback per connection before)."""
    n = 0
    for _ in range(40):
        ws = await connect(s)
        hello = '[1,"zmqwamp",{"roles":{"caller":{}},"authmethods":["ticket"],"authid":"al\\ud800ice"}]'
        ws.send(hello)
        n += len(hello)
        try:
            await ws.recv(10)
            auth = '[5,"tick\\udfffet",{}]'
            ws.send(auth)
            n += len(auth)
        except (Closed, TimeoutError):
            pass
        await drain(ws, 2)
    return n


# After login (anonymous)


async def calls_pipelined(s: Suite) -> int:
    """20,000 tiny CALLs at once (max_calls_per_second, max_calls_in_flight answer most with ERROR)."""
    ws = await joined(s)
    n = 0
    for i in range(20_000):
        n += send(ws, [CALL, i + 1, {}, s.rep, ["x"]])
    await drain(ws, 5)
    return n


async def big_calls(s: Suite) -> int:
    """20 CALLs with a 900 kB argument each, pipelined (the REP's echo is over the size limit: ERROR)."""
    ws = await joined(s)
    n = 0
    for i in range(20):
        n += send(ws, [CALL, i + 1, {}, s.rep, ["y" * 900_000]])
    await drain(ws, 5)
    return n


async def late_replies(s: Suite) -> int:
    """Item 6: 2,000 CALLs with a 1 ms timeout to a 50 ms REP: 1,846 warnings in 2.9 s before."""
    ws = await joined(s)
    n = 0
    for i in range(2_000):
        n += send(ws, [CALL, i + 1, {"timeout": 1}, s.slow_rep, ["late"]])
        if i % 400 == 399:
            await asyncio.sleep(1)  # under max_calls_per_second
    await drain(ws, 3)
    return n


async def call_then_cancel(s: Suite) -> int:
    ws = await joined(s)
    n = 0
    for i in range(2_000):
        n += send(ws, [CALL, i + 1, {}, s.slow_rep, ["cancelled"]])
        n += send(ws, [CANCEL, i + 1, {"mode": "kill"}])
        if i % 400 == 399:
            await asyncio.sleep(1)
    await drain(ws, 3)
    return n


async def unknown_cancels(s: Suite) -> int:
    ws = await joined(s)
    n = 0
    for i in range(20_000):
        n += send(ws, [CANCEL, i + 1, {}])
    await drain(ws, 3)
    return n


async def subscribe_distinct_filters(s: Suite) -> int:
    """5,000 SUBSCRIBEs with distinct filters, pipelined (max_subscriptions, max_filters_per_endpoint)."""
    ws = await joined(s)
    n = 0
    for i in range(5_000):
        n += send(ws, [SUBSCRIBE, i + 1, {"filter": f"f{i}"}, s.ring])
    await drain(ws, 5)
    return n


async def long_filters(s: Suite) -> int:
    ws = await joined(s)
    n = 0
    for i in range(200):
        n += send(ws, [SUBSCRIBE, i + 1, {"filter": "z" * 5_000}, s.rep])
    await drain(ws, 3)
    return n


async def replay_everything_duplicates(s: Suite) -> int:
    """Item 2: ten SUBSCRIBEs {_since: 0} to the same subscription, from a client that never reads
    (112 s of CPU before: each replayed the whole ring again)."""
    ws = await joined(s, rcvbuf=4096)
    n = 0
    for i in range(10):
        n += send(ws, [SUBSCRIBE, i + 1, {"_since": 0}, s.ring])
    await never_read(ws, 5)
    return n


async def replay_everything_once(s: Suite) -> int:
    """Item 2: one SUBSCRIBE {_since: 0} to a 100,000-message ring (2.5 s of CPU in one reactor turn before)."""
    ws = await joined(s)
    n = send(ws, [SUBSCRIBE, 1, {"_since": 0}, s.ring])
    await drain(ws, 5)
    return n


async def retained_nothing_matches(s: Suite) -> int:
    """Item 2: 1,000 get_retained SUBSCRIBEs whose filter matches nothing (each walked the ring: 10 s before)."""
    ws = await joined(s)
    n = 0
    for i in range(1_000):
        n += send(ws, [SUBSCRIBE, i + 1, {"get_retained": True, "filter": f"nothing{i % 50}"}, s.ring])
    await drain(ws, 5)
    return n


async def since_far_future(s: Suite) -> int:
    """Item 2: _since 2**53 (3.4 s before: the ring walked for nothing)."""
    ws = await joined(s)
    n = 0
    for i in range(1_000):
        n += send(ws, [SUBSCRIBE, i + 1, {"_since": 2**53, "filter": f"x{i % 50}"}, s.ring])
    await drain(ws, 5)
    return n


async def json_alias_holding_non_json(s: Suite) -> int:
    """Item 6: replaying a json-codec alias whose messages are not JSON (a warning per held message before)."""
    ws = await joined(s)
    n = 0
    for i in range(20):
        n += send(ws, [SUBSCRIBE, i + 1, {"_since": 0}, "jsonring"])
        n += send(ws, [UNSUBSCRIBE, 100 + i, i + 1])
    await drain(ws, 3)
    return n


async def unknown_unsubscribes(s: Suite) -> int:
    ws = await joined(s)
    n = 0
    for i in range(20_000):
        n += send(ws, [UNSUBSCRIBE, i + 1, i + 12345])
    await drain(ws, 3)
    return n


async def publish_big_topic(s: Suite) -> int:
    """Unacknowledged PUBLISH to a 1 MB topic: 28.6 MiB/s of log before the client log limits."""
    ws = await joined(s)
    n = 0
    for i in range(20):
        n += send(ws, [PUBLISH, i + 1, {}, "t" * 1_000_000])
    await drain(ws, 3)
    return n


async def registers(s: Suite) -> int:
    ws = await joined(s)
    n = 0
    for i in range(10_000):
        n += send(ws, [REGISTER, i + 1, {}, "com.example.proc"])
    await drain(ws, 3)
    return n


async def slow_subscribers(s: Suite) -> int:
    """Item 3: eight clients stop reading a fast tiny-message PUB (225 us per EVENT with a full queue before)."""
    pub, address = start_fastpub(rate=900, size=8, topic="s")
    try:
        clients = [await joined(s, rcvbuf=4096) for _ in range(8)]
        n = 0
        for ws in clients:
            n += send(ws, [SUBSCRIBE, 1, {}, address])
        await asyncio.sleep(8)
        for ws in clients:
            ws.abort()
        return n
    finally:
        pub.stop()


async def nul_paths(s: Suite) -> int:
    """Item 6: GET /js/.%00./x answered 500 with a traceback per request before."""
    loop = asyncio.get_running_loop()
    source = s.source()
    n = 0
    for _ in range(100):
        status, _, _ = await loop.run_in_executor(None, lambda: get(s.port, "/js/.%00./x", source=source))
        assert status in (400, 404), status
        n += 40
    return n


async def huge_origins(s: Suite) -> int:
    """Item 6: refused upgrades with a 14 kB Origin (2.7 MiB of log for 100 before)."""
    n = 0
    for _ in range(100):
        try:
            ws = await connect(s, headers={"Origin": "https://evil.example/" + "o" * 14_000})
            ws.abort()
        except HandshakeRefused as e:
            assert e.status == 403, e
        n += 14_100
    return n


async def huge_request_headers(s: Suite) -> int:
    """200 requests with a 4 kB path, Referer and User-Agent (twisted.web takes 16 kB of headers): its access log
    quoted them whole."""
    loop = asyncio.get_running_loop()
    source = s.source()
    long = "h" * 4_000
    extra = (f"User-Agent: {long}", f"Referer: http://x/{long}")
    for _ in range(200):
        await loop.run_in_executor(None, lambda: get(s.port, "/" + long, extra=extra, source=source))
    return 200 * 12_100


async def slowloris_upgrades(s: Suite) -> int:
    """Connections that never finish their request: each holds a slot until the request deadline."""
    source = s.source()
    streams = [await open_tcp(s.url, 10, source=source) for _ in range(50)]
    for _, writer in streams:
        writer.write(b"GET /ws HTTP/1.1\r\nHost: localhost\r\n")
    await asyncio.sleep(2)
    for _, writer in streams:
        writer.transport.abort()
    return 50 * 40


CASES = [
    Case("cbor colliding bignum keys before HELLO (item 1)", cbor_colliding_keys_before_hello),
    Case("cbor colliding tuple keys before HELLO (item 1)", cbor_colliding_tuple_keys_before_hello),
    Case("cbor colliding bignum keys in a CALL (item 1)", cbor_colliding_keys_in_call),
    Case("cbor colliding tuple keys in a CALL (item 1)", cbor_colliding_tuples_in_call),
    Case("oversized HELLO", oversized_hello),
    Case("json nesting 200,000 deep", lambda s: deep_nesting(s, "wamp.2.json")),
    Case("cbor nesting 200,000 deep", lambda s: deep_nesting(s, "wamp.2.cbor")),
    Case("msgpack nesting 200,000 deep", lambda s: deep_nesting(s, "wamp.2.msgpack")),
    Case("json strings with \\u0000 (item 11)", json_nul_strings),
    Case("1 MiB of pings (item 11)", ping_flood),
    Case("unsolicited pongs (item 11)", unsolicited_pongs),
    Case("1,000,000 empty fragments", empty_fragments),
    Case("unknown message types pipelined", unknown_types_pipelined),
    Case("second HELLOs pipelined", second_hellos),
    Case("150 wrong tickets at once", wrong_tickets, cpu_base=0.6),
    Case("lone surrogates in authid and ticket (item 6)", lone_surrogates),
    Case("20,000 CALLs pipelined", calls_pipelined, cpu_base=0.8),
    Case("20 CALLs of 900 kB", big_calls),
    Case("late replies (item 6)", late_replies, cpu_base=1.0),
    Case("CALL then CANCEL (item 6)", call_then_cancel, cpu_base=1.0),
    Case("20,000 unknown CANCELs", unknown_cancels, cpu_base=0.8),
    Case("5,000 SUBSCRIBEs, distinct filters", subscribe_distinct_filters, cpu_base=0.5),
    Case("long filters", long_filters),
    Case("ten _since 0 replays, never read (item 2)", replay_everything_duplicates, cpu_base=1.5),
    Case("one _since 0 replay of 100,000 (item 2)", replay_everything_once, cpu_base=2.0),
    Case("1,000 get_retained matching nothing (item 2)", retained_nothing_matches, cpu_base=2.0),
    Case("1,000 _since 2**53 (item 2)", since_far_future, cpu_base=0.6),
    Case("json alias replaying non-JSON (item 6)", json_alias_holding_non_json),
    Case("20,000 unknown UNSUBSCRIBEs", unknown_unsubscribes, cpu_base=0.8),
    Case("unacknowledged PUBLISH to a 1 MB topic", publish_big_topic),
    Case("10,000 REGISTERs", registers, cpu_base=0.6),
    Case("eight slow subscribers of tiny events (item 3)", slow_subscribers, cpu_base=2.0),
    Case("GET /js/.%00./x (item 6)", nul_paths),
    Case("upgrades with a 14 kB Origin (item 6)", huge_origins),
    Case("requests with 4 kB path, Referer, User-Agent", huge_request_headers),
    Case("half-sent upgrade requests", slowloris_upgrades),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_attack_costs_little_and_others_are_served(suite, case):
    """The attack costs the bridge at most its CPU and log budget, and a healthy session is served meanwhile."""
    suite.attacker = suite.sources.pop()
    settle(suite.pid)
    cpu_before = cpu_seconds(suite.pid)
    log_before = log_bytes(suite.proc)
    sent, healthy = run(_attack_with_healthy(suite, case))
    settle(suite.pid)
    cpu = cpu_seconds(suite.pid) - cpu_before
    logged = log_bytes(suite.proc) - log_before
    budget = case.cpu_base + case.cpu_per_mb * sent / 1e6
    print(f"\n{case.name}: sent {sent / 1e6:.2f} MB, bridge CPU {cpu:.2f} s (budget {budget:.2f}), "
          f"log {logged} bytes, healthy calls {healthy.answered} (worst {healthy.worst:.3f} s)")
    assert cpu <= budget, f"{case.name}: the bridge spent {cpu:.2f} s of CPU (budget {budget:.2f} s for {sent} bytes)"
    assert logged <= case.max_log, (
        f"{case.name}: {logged} bytes of log (at most {case.max_log}):\n" + "\n".join(suite.proc.lines[-20:])
    )
    assert healthy.answered > 0, "the healthy session got no answer during the attack"
    timing_bound(healthy.worst <= 1.0, f"{case.name}: a healthy call waited {healthy.worst:.2f} s (bound 1 s)")
    # and after it: the bridge still answers a fresh session at once
    async def after() -> list:
        ws = await WSClient.connect(suite.url, timeout=30)
        try:
            await ws.hello()
            return await ws.call(suite.rep, ["after"], timeout=30)
        finally:
            ws.abort()

    reply = run(after())
    assert reply[0] == RESULT and reply[3] == ["got this after"], reply
    assert not any("Traceback" in line for line in suite.proc.lines[-200:]), "\n".join(suite.proc.lines[-40:])
