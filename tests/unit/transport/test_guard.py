"""zmqwamp.transport.guard: every connection counted at accept (per peer and in total), a deadline for each HTTP
request, a lingering close, exceptions kept out of Twisted's log, and the PROXY protocol wrapper, in memory (a
guarded site on a StringTransport: memory.SiteWorld).  Against a real bridge: tests/e2e/test_http.py,
tests/e2e/test_limits.py, tests/e2e/test_proxies.py.
"""

from __future__ import annotations

import pytest
from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.haproxy import _wrapper as haproxy_wrapper
from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper, HAProxyWrappingFactory

from zmqwamp import internals
from zmqwamp.transport import guard as guard_module
from zmqwamp.transport.guard import PASS_THROUGH_WRAPPERS, ConnectionCounter, ConnectionGuardFactory
from zmqwamp.transport.writer import plain_tcp

from memory import SiteWorld, request, status

# -- counted at accept -------------------------------------------------------------------------------------------------


def test_connection_counter_per_peer_and_total():
    """ConnectionCounter admits up to max_per_peer per peer and max_total in all, names the limit it refuses by, and frees on release."""
    counter = ConnectionCounter(max_total=3, max_per_peer=2)
    assert [counter.admit("a"), counter.admit("a"), counter.admit("a")] == [None, None, "max_sessions_per_peer"]
    assert counter.admit("b") is None
    assert counter.admit("c") == "max_sessions"
    counter.release("a")
    assert counter.admit("c") is None
    for host in ("a", "b", "c"):
        counter.release(host)
    assert counter.total == 0 and counter.peers() == 0


def test_connection_counter_keys_rekey_and_release():
    """A connection counted before its client is known (total only) is re-keyed to its peer, refused over that peer's limit, and released."""
    counter = ConnectionCounter(max_total=10, max_per_peer=2)
    assert counter.admit(None) is None and counter.admit(None) is None and counter.admit(None) is None
    assert counter.total == 3 and counter.peers() == 0  # not known yet: the total only
    assert counter.rekey(None, "a") is None and counter.rekey(None, "a") is None
    assert counter.rekey(None, "a") == "max_sessions_per_peer"  # unchanged when refused
    assert counter.rekey("a", "b") is None and counter.peers() == 2
    for key in ("a", "b", None):
        counter.release(key)
    assert counter.total == 0 and counter.peers() == 0


def test_every_connection_is_counted_at_accept_per_peer_and_in_total():
    """Plain HTTP connections count too: over max_sessions_per_peer a bare 503 naming the limit, then close."""
    counter = ConnectionCounter(max_total=4, max_per_peer=2)
    world = SiteWorld(counter=counter)
    a1, _ = world.connect("10.0.0.1")
    a2, _ = world.connect("10.0.0.1")
    a3, t3 = world.connect("10.0.0.1")
    assert t3.value().startswith(b"HTTP/1.1 503 ") and b"max_sessions_per_peer reached" in t3.value()
    assert t3.disconnecting and world.refused == ["max_sessions_per_peer"]
    b1, tb = world.connect("10.0.0.2")
    a3.connectionLost(None)  # a refused connection releases nothing
    a1.connectionLost(None)
    assert counter.total == 2 and not tb.disconnecting
    world.connect("10.0.0.3")
    world.connect("10.0.0.4")
    _, t5 = world.connect("10.0.0.5")
    assert b"max_sessions reached" in t5.value()
    assert counter.total == 4


def test_unknown_clients_are_counted_per_peer_by_the_guard():
    """Through a trusted proxy, connections for unknown clients share one per-peer count (503 beyond it)."""
    world = SiteWorld(counter=ConnectionCounter(max_total=100, max_per_peer=2), trusted=["127.0.0.1"])
    answers = []
    for value in ("unknown", "_hidden", "unix:"):
        guard, transport = world.connect("127.0.0.1")
        guard.dataReceived(request("/data", headers=[f"X-Forwarded-For: {value}"]))
        answers.append(status(transport.value()))
    assert answers == [200, 200, 503] and world.refused == ["max_sessions_per_peer"]
    guard, transport = world.connect("127.0.0.1")
    guard.dataReceived(request("/local", headers=["X-Forwarded-For: unknown"]))
    assert b"secret" not in transport.value()


# -- a deadline for each request ---------------------------------------------------------------------------------------


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


def test_each_request_has_a_deadline_and_an_idle_keep_alive_connection_is_dropped():
    """The deadline is re-armed after every response: a second request sent by halves, or none, is dropped."""
    world = SiteWorld(timeout=2.0)
    guard, transport = world.connect()
    guard.dataReceived(request())
    assert status(transport.value()) == 200 and not transport.disconnecting
    world.clock.advance(1.5)
    guard.dataReceived(b"GET /data HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # half a second request
    world.clock.advance(0.6)  # 2.1 s after the response
    assert transport.disconnecting and world.refused == ["handshake_timeout"]

    idle, idle_transport = world.connect()
    idle.dataReceived(request())
    world.clock.advance(2.1)
    assert idle_transport.disconnecting and world.refused == ["handshake_timeout"] * 2


def test_a_request_that_completes_in_time_keeps_its_connection():
    """Requests that each come within the deadline keep the connection; an upgraded one (WebSocket) has no HTTP deadline."""
    world = SiteWorld(timeout=2.0)
    guard, transport = world.connect()
    for _ in range(5):  # each within the deadline of the previous response
        world.clock.advance(1.5)
        guard.dataReceived(request())
    assert transport.value().count(b"HTTP/1.1 200") == 5 and not transport.disconnecting
    guard.upgraded()  # a WebSocket: no HTTP deadline any more (twisted.web's own 60 s idle timeout aside)
    world.clock.advance(30)
    assert not transport.disconnecting and world.refused == []


# -- what the guard tells the rest, closing, errors --------------------------------------------------------------------


def test_the_guard_knows_the_scheme_of_each_request():
    """The guard tells, per request, whether the client used TLS (a trusted proxy's X-Forwarded-Proto)."""
    world = SiteWorld(trusted=["127.0.0.1"])
    guard, _ = world.connect("127.0.0.1")
    guard.dataReceived(request("/data", headers=["X-Forwarded-For: 1.2.3.4", "X-Forwarded-Proto: https"]))
    assert guard.client_secure
    guard.dataReceived(request("/data", headers=["X-Forwarded-For: 1.2.3.4"]))
    assert not guard.client_secure


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


def test_an_exception_escaping_a_connection_drops_it_and_is_logged_once(log_events):
    """Anything that raises out of the wrapped protocol (the HTTP channel, then the WebSocket) would be a Twisted
    traceback per connection: the guard reports it and drops the connection."""
    world = SiteWorld()
    for _ in range(50):
        guard, transport = world.connect()
        guard.wrappedProtocol.dataReceived = lambda data: 1 / 0
        guard.dataReceived(request())
        assert transport.disconnected or transport.disconnecting
    errors = [e for e in log_events if e.get("log_namespace") == "zmqwamp.clientlog"]
    assert len(errors) == 1 and errors[0]["log_failure"].check(ZeroDivisionError)
    assert world.site.errors._metric.labels("connection")._value.get() == 50


# -- Twisted's PROXY protocol wrapper, which it does not export (zmqwamp.internals) ------------------------------------


def test_the_fast_write_path_finds_tcp_under_the_proxy_protocol_wrapper():
    """guard -> Twisted's PROXY protocol wrapper -> tcp.Connection: both wrappers pass writes through."""
    connection = tcp.Connection.__new__(tcp.Connection)
    connection.TLS = False
    connection._tempDataLen, connection.offset, connection.dataBuffer = 0, 0, b""  # what the writer reads
    connection.socket, connection.connected, connection.disconnecting = None, 1, False
    guard = SiteWorld().factory.buildProtocol(None)
    proxied = HAProxyProtocolWrapper(HAProxyWrappingFactory(SiteWorld().factory), guard)
    proxied.transport = connection
    guard.transport = proxied
    assert plain_tcp(guard, PASS_THROUGH_WRAPPERS) is connection
    connection.TLS = True
    assert plain_tcp(guard, PASS_THROUGH_WRAPPERS) is None


def proxied_connection(world):
    """A connection through Twisted's haproxy: wrapper from the proxy 10.0.0.2, before its PROXY header."""
    wrapper = HAProxyWrappingFactory(world.factory).buildProtocol(None)
    transport = StringTransport(IPv4Address("TCP", "127.0.0.1", 8080), IPv4Address("TCP", "10.0.0.2", 40000))
    wrapper.makeConnection(transport)
    return wrapper, transport


@pytest.fixture
def moved_wrapper(monkeypatch):
    """A Twisted whose HAProxyProtocolWrapper is no longer at twisted.protocols.haproxy._wrapper."""
    monkeypatch.delattr(haproxy_wrapper, "HAProxyProtocolWrapper")
    monkeypatch.setattr(internals, "_warned", set())


def test_without_the_private_name_the_proxy_wrapper_is_asked_of_proxy_endpoint(moved_wrapper, log_events):
    """The class is found through the public proxyEndpoint (the same class: the same counts and write path),
    and one warning says so."""
    assert guard_module.proxy_wrappers() == (HAProxyProtocolWrapper,)
    guard_module.proxy_wrappers()
    assert [e["missing"] for e in log_events if e.get("what") == "twisted.protocols.haproxy._wrapper"] == [
        "HAProxyProtocolWrapper"
    ]


@pytest.mark.parametrize("found, served", [(True, [200, 200]), (False, [200, 503])])
def test_proxied_clients_are_counted_each_by_its_address_with_the_wrapper_found(
    monkeypatch, moved_wrapper, log_events, found, served
):
    """With the wrapper found through proxyEndpoint, two clients behind one PROXY protocol listener are counted
    each under its own address (max_sessions_per_peer 1: both served); with no way to it, under the proxy's
    (the second refused), and a warning says so."""
    if not found:
        monkeypatch.setattr(guard_module, "proxyEndpoint", lambda endpoint: endpoint)  # a proxyEndpoint that wraps nothing
    wrappers = guard_module.proxy_wrappers()
    monkeypatch.setattr(guard_module, "_PROXY_WRAPPERS", wrappers)
    world = SiteWorld(counter=ConnectionCounter(max_total=10, max_per_peer=1))
    connections = [proxied_connection(world) for _ in range(2)]  # both accepted before either header is in
    for (wrapper, _), client in zip(connections, ("203.0.113.5", "203.0.113.6"), strict=True):
        wrapper.dataReceived(f"PROXY TCP4 {client} 127.0.0.1 5000 8080\r\n".encode() + request())
    assert [status(transport.value()) for _, transport in connections] == served
    warned = [e for e in log_events if e.get("what") == "twisted.protocols.haproxy.proxyEndpoint"]
    assert bool(warned) is not found
