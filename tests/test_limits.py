"""Every limit (zmqwamp.limits): the logic as plain calls, then each one against a real bridge."""

from __future__ import annotations

import asyncio
import time

import pytest
from test_http import World
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport

from zmqwamp.limits import (
    ConnectionCounter,
    ConnectionGuardFactory,
    LimitExceeded,
    SessionLimits,
    TokenBucket,
    UpstreamBudget,
)

from harness import start_bridge, start_pub, start_rep
from memory import PUB, REP, new_session, received, send
from minws import ERROR, RESULT, SUBSCRIBED, Closed, HandshakeRefused, WSClient, open_tcp
from probes import metric

LIMIT = "zmqwamp.error.limit_exceeded"


# -- the logic ------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_token_bucket_allows_a_burst_then_the_rate():
    clock = Clock()
    bucket = TokenBucket(5, clock=clock)
    assert [bucket.take() for _ in range(6)] == [True] * 5 + [False]
    clock.now += 0.2
    assert [bucket.take(), bucket.take()] == [True, False]
    clock.now += 100
    assert sum(bucket.take() for _ in range(10)) == 5


def test_connection_counter_per_peer_and_total():
    counter = ConnectionCounter(max_total=3, max_per_peer=2)
    assert [counter.admit("a"), counter.admit("a"), counter.admit("a")] == [None, None, "max_sessions_per_peer"]
    assert counter.admit("b") is None
    assert counter.admit("c") == "max_sessions"
    counter.release("a")
    assert counter.admit("c") is None
    for host in ("a", "b", "c"):
        counter.release(host)
    assert counter.total == 0 and counter.peers() == 0


class Peer:
    def __init__(self, peer):
        self.peer = peer


def test_upstream_budget_per_session_per_peer_and_total():
    """Sockets are charged to the session that opened them, and its peer address, until released."""
    budget = UpstreamBudget(max_per_session=2, max_per_peer=3, max_total=4)
    a1, a2, b = Peer("tcp4:10.0.0.1:1000"), Peer("tcp4:10.0.0.1:1001"), Peer("tcp4:10.0.0.2:1000")
    budget.charge("x", a1)
    budget.charge("y", a1)
    with pytest.raises(LimitExceeded) as e:
        budget.charge("z", a1)
    assert e.value.limit == "max_endpoints_per_session" and str(e.value).startswith("max_endpoints_per_session: ")
    budget.charge("z", a2)  # the same address, another session: 3 for the address
    with pytest.raises(LimitExceeded, match="max_endpoints_per_peer"):
        budget.charge("w", a2)
    budget.charge("w", b)
    with pytest.raises(LimitExceeded, match="max_zmq_sockets"):
        budget.charge("v", b)
    budget.release("x")
    budget.charge("v", a1)  # a freed socket is a1's to reuse, and the total has room again
    assert budget.total == 4 and budget.charged(a1) == 2
    for key in ("y", "z", "w", "v"):
        budget.release(key)
    assert budget.total == 0 and not budget._sessions and not budget._peers


def test_upstream_budget_reclaims_before_refusing():
    """At a limit the reclaim hook is asked for an idle socket that counts against that limit, then it refuses."""
    budget = UpstreamBudget(max_per_session=1, max_per_peer=10, max_total=2)
    idle = []  # keys the "forwarder" may close, oldest first

    def reclaim(counts):
        for key in idle:
            if counts(key):
                idle.remove(key)
                budget.release(key)
                return True
        return False

    budget.reclaim = reclaim
    a, b = Peer("tcp4:10.0.0.1:1"), Peer("tcp4:10.0.0.2:1")
    budget.charge("a-old", a)
    budget.charge("b-old", b)
    idle += ["b-old", "a-old"]
    budget.charge("a-new", a)  # a's own cap: closes a's idle socket, not b's older one
    assert idle == ["b-old"]
    budget.charge("nobody", None)  # the total: the oldest idle one, whoever's
    assert idle == [] and budget.total == 2
    with pytest.raises(LimitExceeded, match="max_zmq_sockets"):
        budget.charge("more", None)


def test_handshake_deadline_drops_a_silent_connection_and_spares_a_complete_request():
    """No complete request headers within the timeout: dropped; headers in time: left alone."""
    world = World(timeout=2.0)
    slow, slow_t = world.connect()
    fast, fast_t = world.connect()
    slow.dataReceived(b"GET /data HTTP/1.1\r\nHost: localhost\r\n")
    world.clock.advance(1.5)
    fast.dataReceived(b"GET /data HTTP/1.1\r\nHost: localhost\r")
    fast.dataReceived(b"\n\r\n")  # the end of the headers split across reads
    assert b"200 OK" in fast_t.value()
    world.clock.advance(0.6)  # 2.1 s after accept, 0.6 s after the response
    assert slow_t.disconnecting and not fast_t.disconnecting
    assert world.refused == ["handshake_timeout"]


def test_lingering_close_half_closes_then_drains():
    """Closing shuts down our side first and discards late input, so a client's RST cannot eat our close frame."""
    clock = MemoryReactorClock()
    received = []

    class Recorder(Protocol):
        def dataReceived(self, data):
            received.append(data)

    guard = ConnectionGuardFactory(Factory.forProtocol(Recorder), 10.0, clock).buildProtocol(None)
    transport = HalfCloseTransport()
    guard.makeConnection(transport)
    guard.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
    guard.write(b"bye")
    guard.loseConnection()
    assert transport.write_closed and not transport.disconnecting
    guard.dataReceived(b"late frames from the client")
    assert received == [b"GET / HTTP/1.1\r\n\r\n"]
    clock.advance(2.1)
    assert transport.disconnecting


class HalfCloseTransport(StringTransport):
    write_closed = False

    def loseWriteConnection(self):
        self.write_closed = True

    def resumeProducing(self):
        pass


def limited_session(world, **limits):
    values = {"max_calls_in_flight": 100, "max_subscriptions": 100, "max_calls_per_second": 1000.0, **limits}
    clock = Clock()
    session, transport = new_session(world, limits=SessionLimits(**values), clock=clock)
    send(session, 1, "zmqwamp", {"roles": {"caller": {}}})
    transport.sent.clear()
    return session, transport, clock


def test_calls_in_flight_limit(world):
    """The (n+1)th CALL waiting for a reply gets ERROR limit_exceeded; once one is answered, CALLs pass again."""
    session, transport, _ = limited_session(world, max_calls_in_flight=2)
    for request in (1, 2, 3):
        send(session, 48, request, {}, REP, ["x"])
    assert len(world.forwarder.requests) == 2
    [error] = received(transport)
    assert error[:5] == [8, 48, 3, {}, LIMIT] and error[5][0].startswith("max_calls_in_flight")
    world.forwarder.requests[0][3].callback([b"ok"])
    send(session, 48, 4, {}, REP, ["x"])
    assert len(world.forwarder.requests) == 3


def test_calls_per_second_limit(world):
    session, transport, clock = limited_session(world, max_calls_per_second=3)
    for request in range(1, 5):
        send(session, 48, request, {}, REP, ["x"])
        world.forwarder.requests[-1][3].callback([b"ok"]) if len(world.forwarder.requests) == request else None
    errors = [m for m in received(transport) if m[0] == 8]
    assert [e[2] for e in errors] == [4] and errors[0][5][0].startswith("max_calls_per_second")
    clock.now += 1.0
    send(session, 48, 5, {}, REP, ["x"])
    assert len(world.forwarder.requests) == 4


def test_subscriptions_limit(world):
    session, transport, _ = limited_session(world, max_subscriptions=2)
    send(session, 32, 1, {}, PUB + "?filter=a")
    send(session, 32, 2, {}, PUB + "?filter=b")
    send(session, 32, 3, {}, PUB + "?filter=c")
    replies = received(transport)
    assert [m[0] for m in replies] == [33, 33, 8]
    assert replies[2][4] == LIMIT and replies[2][5][0].startswith("max_subscriptions")
    send(session, 34, 4, replies[0][2])
    send(session, 32, 5, {}, PUB + "?filter=c")
    assert received(transport)[-1][0] == 33
    assert world.metrics.registry.get_sample_value("zmqwamp_limit_exceeded_total", {"limit": "max_subscriptions"}) == 1


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
        await mine[0].goodbye()
        await mine[0].close()
        await asyncio.sleep(0.2)
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
                await asyncio.sleep(0.2)

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
    assert 0.8 < silent < 2.5 and 0.8 < dripping < 2.5
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


def test_limits_in_config_file(tmp_path):
    from zmqwamp.config import ConfigError, load_config

    path = tmp_path / "c.toml"
    path.write_text(
        "max_calls_in_flight = 7\nmax_subscriptions = 8\nmax_calls_per_second = 9.5\nmax_sessions = 10\n"
        "max_sessions_per_peer = 11\nhandshake_timeout = 3\nping_interval = 4\nping_timeout = 5\n"
        'max_outgoing_buffer = 65536\nslow_consumer = "close"\n'
        "max_filter_length = 12\nmax_filters_per_endpoint = 13\nmax_endpoints_per_session = 14\n"
        "max_endpoints_per_peer = 15\nmax_zmq_sockets = 16\n"
        '[endpoints.feed]\naddress = "tcp://127.0.0.1:9000"\nkind = "sub"\nslow_consumer = "drop_newest"\n'
    )
    c = load_config(path)
    assert (c.max_calls_in_flight, c.max_subscriptions, c.max_calls_per_second) == (7, 8, 9.5)
    assert (c.max_sessions, c.max_sessions_per_peer, c.handshake_timeout) == (10, 11, 3.0)
    assert (c.ping_interval, c.ping_timeout, c.max_outgoing_buffer, c.slow_consumer) == (4.0, 5.0, 65536, "close")
    assert c.endpoints["feed"].slow_consumer == "drop_newest"
    assert (c.max_filter_length, c.max_filters_per_endpoint, c.max_endpoints_per_session) == (12, 13, 14)
    assert (c.max_endpoints_per_peer, c.max_zmq_sockets) == (15, 16)
    for bad in ("max_sessions = 0", "max_zmq_sockets = 0", "max_filter_length = -1", 'slow_consumer = "sometimes"', "max_outgoing_buffer = 10", "ping_timeout = -1",
                '[endpoints.feed]\naddress = "tcp://127.0.0.1:1"\nslow_consumer = "never"'):
        path.write_text(bad + "\n")
        with pytest.raises(ConfigError):
            load_config(path)


def test_limit_options_on_the_command_line():
    from twisted.python import usage

    from zmqwamp.tap import Options

    o = Options()
    o.parseOptions(["--max-calls-in-flight", "4", "--slow-consumer", "close", "--ping-timeout", "2.5"])
    assert (o.config.max_calls_in_flight, o.config.slow_consumer, o.config.ping_timeout) == (4, "close", 2.5)
    o = Options()
    o.parseOptions(["--max-filter-length", "64", "--max-endpoints-per-session", "8", "--max-zmq-sockets", "2000"])
    assert (o.config.max_filter_length, o.config.max_endpoints_per_session, o.config.max_zmq_sockets) == (64, 8, 2000)
    for bad in (["--max-sessions", "many"], ["--slow-consumer", "maybe"], ["--max-subscriptions", "0"]):
        with pytest.raises(usage.UsageError):
            Options().parseOptions(bad)
