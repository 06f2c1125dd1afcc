"""Every limit (zmqwamp.wamp.limits, zmqwamp.transport.guard, zmqwamp.upstream.budget, zmqwamp.tokenbucket): the logic as plain calls. Each against a real bridge: tests/e2e/test_limits.py."""

from __future__ import annotations

import pytest
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport

from zmqwamp.testing import new_session, received, send
from zmqwamp.tokenbucket import TokenBucket
from zmqwamp.transport.guard import ConnectionCounter, ConnectionGuardFactory
from zmqwamp.upstream.budget import UpstreamBudget
from zmqwamp.upstream.errors import LimitExceeded
from zmqwamp.wamp.limits import SessionLimits

from memory import PUB, REP, SiteWorld

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
    world = SiteWorld(timeout=2.0)
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


def test_messages_per_second_limit_ends_a_flooding_session(world):
    """Past twice max_messages_per_second at once, the session gets ABORT limit_exceeded and is closed, whatever
    the messages are (each unknown UNSUBSCRIBE had its own ERROR, and cost its decoding, without end)."""
    session, transport, clock = limited_session(world, max_messages_per_second=5)
    for request in range(1, 10):  # the burst: two seconds' worth, HELLO included
        send(session, 34, request, 999)
    assert [m[0] for m in received(transport)] == [8] * 9 and transport.closed is None
    send(session, 34, 10, 999)
    abort = received(transport)[-1]
    assert abort[0] == 3 and abort[2] == LIMIT and abort[1]["message"].startswith("max_messages_per_second"), abort
    assert transport.closed == 1000
    assert world.metrics.registry.get_sample_value("zmqwamp_limit_exceeded_total", {"limit": "max_messages_per_second"}) == 1


def test_messages_per_second_limit_refills(world):
    session, transport, clock = limited_session(world, max_messages_per_second=5)
    for request in range(1, 10):  # the burst (HELLO was the first)
        send(session, 34, request, 999)
    clock.now += 1.0  # five more
    for request in range(10, 15):
        send(session, 34, request, 999)
    assert transport.closed is None and [m[0] for m in received(transport)] == [8] * 14


def test_call_arguments_limit(world):
    """A CALL with more than max_call_arguments arguments (each a ZeroMQ frame) is refused before anything is sent."""
    world.router.max_call_arguments = 3
    session, transport, _ = limited_session(world)
    send(session, 48, 1, {}, REP, ["a", "b", "c", "d"])
    send(session, 48, 2, {}, REP, ["a", "b", "c"])
    [error] = received(transport)
    assert error[:5] == [8, 48, 1, {}, LIMIT] and error[5][0].startswith("max_call_arguments: 4 arguments, at most 3")
    assert [r[1] for r in world.forwarder.requests] == [[b"a", b"b", b"c"]]


def test_limits_in_config_file(tmp_path):
    from zmqwamp.service.config import ConfigError, load_config

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

    from zmqwamp.service.tap import Options

    o = Options()
    o.parseOptions(["--max-calls-in-flight", "4", "--slow-consumer", "close", "--ping-timeout", "2.5"])
    assert (o.config.max_calls_in_flight, o.config.slow_consumer, o.config.ping_timeout) == (4, "close", 2.5)
    o = Options()
    o.parseOptions(["--max-filter-length", "64", "--max-endpoints-per-session", "8", "--max-zmq-sockets", "2000"])
    assert (o.config.max_filter_length, o.config.max_endpoints_per_session, o.config.max_zmq_sockets) == (64, 8, 2000)
    for bad in (["--max-sessions", "many"], ["--slow-consumer", "maybe"], ["--max-subscriptions", "0"]):
        with pytest.raises(usage.UsageError):
            Options().parseOptions(bad)


def test_many_peers_are_needed_to_fill_the_zmq_sockets():
    """Issue 21 item 12: with 128 per peer, four addresses (or one IPv6 client's /64, keyed apart before) used up the
    512 zmq sockets. Now a peer may open what one session may, and 16 peers are needed."""
    from zmqwamp.service.config import BridgeConfig

    config = BridgeConfig()
    assert config.max_endpoints_per_peer == config.max_endpoints_per_session
    assert config.max_zmq_sockets // config.max_endpoints_per_peer >= 16
