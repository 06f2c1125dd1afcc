"""The HTTP layer (zmqwamp.transport.site, zmqwamp.transport.guard.ConnectionGuard, zmqwamp.peers) in memory.

Holes of issue 13 closed here: idle and half-sent requests holding connections
forever (7), request bodies spooled to disk (8), DNS rebinding (11), Range
amplification (16), operational details and versions for anyone (20).
Against a real bridge: tests/e2e/test_http.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from twisted.internet import tcp
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent
from twisted.protocols.haproxy import _wrapper as haproxy_wrapper
from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper, HAProxyWrappingFactory
from twisted.python import usage
from twisted.web.http_headers import Headers

from zmqwamp import internals
from zmqwamp.peers import UNKNOWN_CLIENT, ClientAddresses, host_key, is_local, peer_host, peer_string
from zmqwamp.service.config import ConfigError, load_config
from zmqwamp.service.tap import Options
from zmqwamp.transport import guard as guard_module
from zmqwamp.transport.guard import PASS_THROUGH_WRAPPERS, ConnectionCounter
from zmqwamp.transport.writer import plain_tcp

from memory import SiteWorld

# -- in memory: a guarded site on a StringTransport ------------------------------------------


def request(path="/data", method="GET", host="127.0.0.1:8080", headers=()) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


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
    world = SiteWorld(timeout=2.0)
    guard, transport = world.connect()
    for _ in range(5):  # each within the deadline of the previous response
        world.clock.advance(1.5)
        guard.dataReceived(request())
    assert transport.value().count(b"HTTP/1.1 200") == 5 and not transport.disconnecting
    guard.upgraded()  # a WebSocket: no HTTP deadline any more (twisted.web's own 60 s idle timeout aside)
    world.clock.advance(30)
    assert not transport.disconnecting and world.refused == []


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


def test_connection_counter_keys_rekey_and_release():
    counter = ConnectionCounter(max_total=10, max_per_peer=2)
    assert counter.admit(None) is None and counter.admit(None) is None and counter.admit(None) is None
    assert counter.total == 3 and counter.peers() == 0  # not known yet: the total only
    assert counter.rekey(None, "a") is None and counter.rekey(None, "a") is None
    assert counter.rekey(None, "a") == "max_sessions_per_peer"  # unchanged when refused
    assert counter.rekey("a", "b") is None and counter.peers() == 2
    for key in ("a", "b", None):
        counter.release(key)
    assert counter.total == 0 and counter.peers() == 0


def test_a_body_is_refused_with_413_before_it_is_read():
    """Content-Length over 0, or chunked: 413 at once, nothing of the body stored, connection closed."""
    for framing in ("Content-Length: 107374182400", "Transfer-Encoding: chunked"):
        world = SiteWorld()
        guard, transport = world.connect()
        stored = []
        guard.wrappedProtocol.requestFactory = type(
            "Spy", (world.site.requestFactory,), {"handleContentChunk": lambda self, d: stored.append(d)}  # noqa: B023
        )
        guard.dataReceived(request("/healthz", "POST", headers=[framing, "Expect: 100-continue"]) + b"5\r\nxxxxx\r\n" * 100)
        assert status(transport.value()) == 413 and b"100 Continue" not in transport.value()
        assert transport.disconnecting and world.refused == ["request_body"]
        guard.dataReceived(b"x" * 100000)
        assert transport.value().count(b"HTTP/1.1") == 1 and stored == []


def test_only_get_and_head():
    world = SiteWorld()
    guard, transport = world.connect()
    guard.dataReceived(request("/data", "DELETE"))
    assert status(transport.value()) == 405 and b"allow: get, head" in transport.value().lower()
    transport.clear()
    guard.dataReceived(request("/data", "POST", headers=["Content-Length: 0"]))
    assert status(transport.value()) == 405
    transport.clear()
    guard.dataReceived(request("/data", "HEAD"))
    assert status(transport.value()) == 200
    assert world.refused == ["http_method", "http_method"]


def test_host_check_on_loopback():
    """A connection to a loopback address needs a local Host or an allowed one (DNS rebinding)."""
    world = SiteWorld(allow_hosts=["app.example.com", "*.corp.example"])
    codes = {}
    for host in ("attacker.example:8080", "localhost:8080", "127.0.0.1", "127.3.4.5:1", "[::1]:8080", "LOCALHOST.",
                 "foo.localhost", "app.example.com:443", "x.corp.example", "app.example.com.attacker.example",
                 "127.0.0.1.attacker.example", "[::ffff:7f00:1]:80"):
        guard, transport = world.connect()
        guard.dataReceived(request(host=host))
        codes[host] = status(transport.value())
    assert {h for h, c in codes.items() if c == 403} == {
        "attacker.example:8080", "app.example.com.attacker.example", "127.0.0.1.attacker.example",
    }, codes
    guard, transport = world.connect(local="192.0.2.10")  # a public listener: not the check's business
    guard.dataReceived(request(host="attacker.example"))
    assert status(transport.value()) == 200
    assert world.refused == ["allow_hosts"] * 3
    off = SiteWorld(allow_hosts=["*"])
    guard, transport = off.connect()
    guard.dataReceived(request(host="attacker.example"))
    assert status(transport.value()) == 200


def test_server_header_names_no_version():
    world = SiteWorld()
    guard, transport = world.connect()
    guard.dataReceived(request() + request("/nothing") + request("/data", "PUT"))
    servers = re.findall(rb"(?im)^server: (.*)\r$", transport.value())
    assert servers == [b"zmqwamp"] * 3


def test_healthz_details_and_local_only_pages_for_local_clients_only():
    world = SiteWorld(trusted=["127.0.0.1/32"])
    guard, transport = world.connect(peer="127.0.0.1")
    guard.dataReceived(request("/healthz") + request("/local"))
    local = transport.value()
    assert b'"sessions": 2' in local and b'"pid"' in local and b"secret" in local
    guard, transport = world.connect(peer="127.0.0.1")  # through the trusted proxy, for a remote client
    xff = ["X-Forwarded-For: 198.51.100.7"]
    guard.dataReceived(request("/healthz", headers=xff) + request("/local", headers=xff))
    remote = transport.value()
    assert b'{"up": true}' in remote and b"pid" not in remote and b"10.9.9.9" not in remote
    assert b"404" in remote.split(b"\r\n\r\n", 2)[1].split(b"\r\n", 1)[0] and b"secret" not in remote


# -- who the client is ------------------------------------------------------------------------


def xff(*values, name="X-Forwarded-For"):
    return Headers({name: list(values)})


def test_forwarded_for_is_believed_only_from_trusted_proxies():
    addresses = ClientAddresses(["10.0.0.0/8", "192.0.2.1"])
    proxy = IPv4Address("TCP", "10.1.1.1", 5000)
    stranger = IPv4Address("TCP", "203.0.113.5", 5000)
    assert addresses.client(stranger, xff("1.2.3.4")) is stranger
    assert addresses.client(proxy, Headers()) is proxy
    assert peer_string(addresses.client(proxy, xff("1.2.3.4"))) == "tcp4:1.2.3.4:0"
    # right-most untrusted: what the client wrote on the left is not believed
    assert addresses.client(proxy, xff("6.6.6.6, 1.2.3.4, 10.2.2.2")).host == "1.2.3.4"
    assert addresses.client(proxy, xff("6.6.6.6", "1.2.3.4, 192.0.2.1")).host == "1.2.3.4"  # two header lines
    assert addresses.client(proxy, xff("10.3.3.3, 10.2.2.2")).host == "10.3.3.3"  # all trusted: the left-most
    # issue 21 item 10: a hop that is not an address is an unknown client, not the proxy (which no limit counts)
    assert addresses.client(proxy, xff("garbage, unknown")) is UNKNOWN_CLIENT
    assert addresses.client(proxy, xff("6.6.6.6, unknown, 10.2.2.2")) is UNKNOWN_CLIENT
    assert addresses.client(proxy, xff("1.2.3.4, unix:")) is UNKNOWN_CLIENT  # nginx, for a client on a unix socket
    assert addresses.client(proxy, xff("")) is UNKNOWN_CLIENT
    ipv6 = addresses.client(proxy, xff("[2001:db8::7]:4711"))
    assert isinstance(ipv6, IPv6Address) and peer_string(ipv6) == "tcp6:2001:db8::7:4711"
    assert host_key(addresses.client(proxy, xff("::ffff:1.2.3.4"))) == "tcp4:1.2.3.4"
    assert addresses.client(proxy, xff("1.2.3.4:80")).port == 80


def test_rfc7239_forwarded_when_configured():
    addresses = ClientAddresses(["10.0.0.0/8"], header="forwarded")
    proxy = IPv4Address("TCP", "10.1.1.1", 5000)
    headers = xff('for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https, for=10.2.2.2;by=10.1.1.1', name="Forwarded")
    assert addresses.client(proxy, headers).host == "2001:db8:cafe::17"
    assert addresses.client(proxy, xff("for=_hidden", name="Forwarded")) is UNKNOWN_CLIENT
    assert addresses.client(proxy, xff("for=unknown;proto=https", name="Forwarded")) is UNKNOWN_CLIENT
    assert addresses.client(proxy, xff("proto=https", name="Forwarded")) is UNKNOWN_CLIENT  # no for=
    assert addresses.client(proxy, xff("1.2.3.4")).host == "10.1.1.1"  # X-Forwarded-For is not read then


def test_a_request_forwarded_by_an_untrusted_local_proxy_is_not_local():
    addresses = ClientAddresses(["10.0.0.0/8"])
    loopback = IPv4Address("TCP", "127.0.0.1", 5000)
    assert addresses.local(loopback, loopback, Headers())
    assert not addresses.local(loopback, loopback, xff("198.51.100.7"))
    assert not addresses.local(loopback, loopback, xff("for=1.2.3.4", name="Forwarded"))
    assert not addresses.local(loopback, loopback, xff("1.2.3.4", name="X-Real-IP"))
    proxy = IPv4Address("TCP", "10.1.1.1", 5000)
    assert addresses.local(proxy, addresses.client(proxy, xff("127.0.0.1")), xff("127.0.0.1"))
    assert not addresses.local(proxy, addresses.client(proxy, xff("198.51.100.7")), xff("198.51.100.7"))


def test_unix_peers_and_locality():
    assert ClientAddresses(["unix"]).trusted(UNIXAddress(None))
    assert not ClientAddresses(["127.0.0.1"]).trusted(UNIXAddress(None))
    assert is_local(UNIXAddress(None)) and is_local(IPv4Address("TCP", "127.0.0.2", 1)) and is_local(IPv6Address("TCP", "::1", 1))
    assert not is_local(IPv4Address("TCP", "10.0.0.1", 1))
    assert host_key(IPv6Address("TCP", "::1", 5)) == "tcp6:::1"


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


# -- the options --------------------------------------------------------------------------------


def test_options_from_toml_and_command_line(tmp_path):
    """allow_hosts and trusted_proxies are lists (the command line adds to the file's); forwarded_header a choice."""
    path = tmp_path / "c.toml"
    path.write_text('allow_hosts = ["app.example.com"]\ntrusted_proxies = ["10.0.0.0/8", "unix"]\nforwarded_header = "forwarded"\n')
    options = Options()
    options.parseOptions(["--config", str(path), "--allow-host", "*.corp.example", "--trusted-proxy", "::1"])
    c = options.config
    assert c.allow_hosts == ["app.example.com", "*.corp.example"]
    assert c.trusted_proxies == ["10.0.0.0/8", "unix", "::1"] and c.forwarded_header == "forwarded"
    defaults = Options()
    defaults.parseOptions([])
    assert (defaults.config.allow_hosts, defaults.config.trusted_proxies) == ([], [])
    assert defaults.config.forwarded_header == "x-forwarded-for"


@pytest.mark.parametrize(
    "text, message",
    [
        ('trusted_proxies = ["10.0.0.0/33"]', "trusted_proxies: '10.0.0.0/33' is not an IP address"),
        ('trusted_proxies = ["proxy.example"]', "trusted_proxies: 'proxy.example' is not"),
        ('trusted_proxies = "10.0.0.1"', None),  # a single string is a list of one
        ('forwarded_header = "x-real-ip"', "forwarded_header must be one of x-forwarded-for, forwarded"),
        ('allow_hosts = [""]', "allow_hosts: a pattern must not be empty"),
        ("allow_hosts = 1", "allow_hosts: expected a string or a list of strings"),
    ],
)
def test_option_errors(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    if message is None:
        assert load_config(path).trusted_proxies == ["10.0.0.1"]
        return
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert message in str(e.value)
    with pytest.raises(usage.UsageError, match="trusted_proxies"):
        Options().parseOptions(["--trusted-proxy", "not-an-address"])


# -- issue 21 ----------------------------------------------------------------------------------


def test_every_per_peer_limit_has_one_key_ipv4_mapped_as_ipv4_and_ipv6_by_its_64():
    """Item 12: the connection counter (host_key of an address), the login throttle and the upstream budget
    (peer_host of the session's peer string) key a client alike."""
    mapped = IPv6Address("TCP", "::ffff:10.1.2.3", 4000)
    assert host_key(mapped) == peer_host(peer_string(mapped)) == peer_host("tcp6:::ffff:10.1.2.3:4000") == "tcp4:10.1.2.3"
    assert peer_host("tcp4:10.1.2.3:5555") == "tcp4:10.1.2.3"
    one, other = IPv6Address("TCP", "2001:db8:1:2::1", 1), IPv6Address("TCP", "2001:db8:1:2:ffff:ffff:ffff:ffff", 2)
    assert host_key(one) == host_key(other) == peer_host(peer_string(other)) == "tcp6:2001:db8:1:2::/64"
    assert host_key(IPv6Address("TCP", "2001:db8:1:3::1", 1)) == "tcp6:2001:db8:1:3::/64"  # the next /64: apart
    assert peer_host("tcp6:fe80::1%eth0:5555") == "tcp6:fe80::/64"
    assert host_key(IPv6Address("TCP", "::1", 5)) == peer_host("tcp6:::1:5") == "tcp6:::1"  # loopback: itself
    assert peer_host("unix:/run/zmqwamp.sock") == "unix:/run/zmqwamp.sock" and peer_host("unknown") == "unknown"


def test_clients_a_trusted_proxy_cannot_name_share_one_key_and_are_not_local():
    """Item 10: 'unknown', '_hidden', 'unix:' made the client the proxy itself: no per-peer count, local pages."""
    addresses = ClientAddresses(["127.0.0.1"])
    proxy = IPv4Address("TCP", "127.0.0.1", 5000)
    for headers in (xff("unknown"), xff("_hidden"), xff("unix:"), xff("6.6.6.6, unknown")):
        client = addresses.client(proxy, headers)
        assert client is UNKNOWN_CLIENT and peer_string(client) == "unknown" and host_key(client) == "unknown"
        assert not addresses.trusted(client) and not is_local(client)
        assert not addresses.local(proxy, client, headers)


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


@pytest.mark.parametrize(
    "peer, headers, tls, proxy_listener, secure",
    [
        ("203.0.113.5", (), False, False, False),  # plain, no proxy
        ("203.0.113.5", (), True, False, True),  # TLS here
        ("203.0.113.5", ("X-Forwarded-Proto: https",), False, False, False),  # not from a trusted proxy: ignored
        ("203.0.113.5", ("X-Forwarded-Proto: http",), True, False, True),
        ("10.1.1.1", ("X-Forwarded-Proto: https",), False, False, True),  # a trusted proxy that terminates TLS
        ("10.1.1.1", ("X-Forwarded-Proto: https, http",), False, False, True),  # the left-most: the client's
        ("10.1.1.1", ("X-Forwarded-Proto: http",), True, False, False),  # TLS to the proxy only
        ("10.1.1.1", (), False, False, False),
        ("203.0.113.5", ("X-Forwarded-Proto: https",), False, True, True),  # a PROXY protocol listener: the proxy's
    ],
)
def test_the_scheme_the_client_used(peer, headers, tls, proxy_listener, secure):
    """Item 12: same-origin compares schemes, so the bridge must know whether the client used TLS."""
    addresses = ClientAddresses(["10.0.0.0/8"])
    parsed = Headers({name: [value] for name, _, value in (h.partition(": ") for h in headers)})
    assert addresses.secure(IPv4Address("TCP", peer, 1), parsed, tls, proxy_listener) is secure


def test_the_scheme_from_rfc7239_forwarded():
    addresses = ClientAddresses(["10.0.0.0/8"], header="forwarded")
    proxy = IPv4Address("TCP", "10.1.1.1", 1)
    assert addresses.secure(proxy, xff("for=1.2.3.4;proto=https, for=10.2.2.2;proto=http", name="Forwarded"), False)
    assert not addresses.secure(proxy, xff('for=1.2.3.4;proto="http"', name="Forwarded"), True)
    assert not addresses.secure(proxy, xff("https", name="X-Forwarded-Proto"), False)  # not the configured header


def test_the_guard_knows_the_scheme_of_each_request():
    world = SiteWorld(trusted=["127.0.0.1"])
    guard, _ = world.connect("127.0.0.1")
    guard.dataReceived(request("/data", headers=["X-Forwarded-For: 1.2.3.4", "X-Forwarded-Proto: https"]))
    assert guard.client_secure
    guard.dataReceived(request("/data", headers=["X-Forwarded-For: 1.2.3.4"]))
    assert not guard.client_secure


def test_a_nul_in_the_path_is_refused_with_400_and_no_traceback(log_events):
    """Item 6: GET /js/.%00./x made twisted.web's static files raise ValueError: a 500 and a traceback per request."""
    from zmqwamp.transport.site import StaticFile

    world = SiteWorld()
    world.site.resource.putChild(b"js", StaticFile("."))
    answers = []
    for path in ("/js/.%00./x", "/js/%00", "/data%00"):
        guard, transport = world.connect()
        guard.dataReceived(request(path))
        answers.append(status(transport.value()))
    assert answers == [400, 400, 400] and world.refused == ["http_path"] * 3
    assert not [e for e in log_events if e.get("log_failure") is not None]


class Exploding:
    """A resource that raises: a bug anywhere under a request (a hook, a library)."""

    isLeaf = True

    def render(self, request):
        raise ValueError("boom " + "x" * 10_000)


def test_an_exception_while_rendering_is_a_500_and_logged_once_per_class_and_interval(log_events):
    """Item 6 (the class): 500 requests that raise: two log lines (the first with its traceback, then a count)."""
    from twisted.logger import formatEvent

    world = SiteWorld()
    world.site.resource.putChild(b"boom", Exploding())
    for _ in range(500):
        guard, transport = world.connect()
        guard.dataReceived(request("/boom"))
        assert status(transport.value()) == 500 and b"boom" not in transport.value() and b"Traceback" not in transport.value()
    errors = [e for e in log_events if e.get("log_namespace") == "zmqwamp.clientlog"]
    assert len(errors) == 1 and errors[0]["log_failure"].check(ValueError)
    assert len(formatEvent(errors[0])) < 400  # the message is clipped (the traceback is the failure's)
    world.clock.advance(10)
    errors = [formatEvent(e) for e in log_events if e.get("log_namespace") == "zmqwamp.clientlog"]
    assert len(errors) == 2 and "499 more unhandled builtins.ValueError (http) in the last 10.0s" in errors[1], errors
    assert world.site.errors._metric.labels("http")._value.get() == 500


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


def ws_factory(world, allowed=lambda request: True):
    from zmqwamp.service.bridge import websocket_options
    from zmqwamp.service.config import BridgeConfig
    from zmqwamp.transport.websocket import WampServerFactory

    return WampServerFactory(world.context, allowed, websocket_options(BridgeConfig()), world.zmq_factory.write_batch)


def upgrade(factory, origin: str | None, peer_secure: bool | None = None) -> bytes:
    """One WebSocket upgrade to a WampServerFactory in memory: what the client got."""
    from zmqwamp.testing import WebSocketTransport

    proto = factory.buildProtocol(None)
    transport = WebSocketTransport()
    if peer_secure is not None:
        transport.client_secure = peer_secure  # as the connection guard says
    proto.makeConnection(transport)
    lines = [
        "GET /ws HTTP/1.1", "Host: 127.0.0.1:8080", "Upgrade: websocket", "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Protocol: wamp.2.json",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    proto.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode())
    return transport.value()


def test_a_refused_upgrade_logs_its_reason_once_and_clipped(world, log_events):
    """Item 6: autobahn put a 14 KB Origin in its refusal twice (an info line, then dropConnection's warning) and in
    the status line: 100 upgrades added 2.7 MiB of log."""
    huge = "zz" + "b" * 14_000  # no host part: refused by autobahn itself, quoting it
    answer = upgrade(ws_factory(world), huge)
    assert answer.startswith(b"HTTP/1.1 400 ") and len(answer) < 300
    text = [formatEvent(e) for e in log_events]
    assert len(text) == 1 and "refused: HTTP Origin header invalid" in text[0] and len(text[0]) < 300, text
    log_events.clear()
    answer = upgrade(ws_factory(world, lambda request: False), "http://evil.example")  # refused by the hook
    assert answer.startswith(b"HTTP/1.1 403 ")
    [line] = [formatEvent(e) for e in log_events]
    assert line.startswith("WebSocket from ") and line.endswith(" refused (origin=http://evil.example)")


def test_the_same_origin_check_sees_the_scheme_of_the_connection(world):
    """Item 12: Origin https://h:p was accepted for Host h:p on a plain ws:// connection."""
    from zmqwamp.auth.policy import OriginPolicy

    factory = ws_factory(world, lambda request: OriginPolicy().allows(request.origin, request.headers.get("host"), request.secure))
    assert upgrade(factory, "http://127.0.0.1:8080").startswith(b"HTTP/1.1 101 ")
    assert upgrade(factory, "https://127.0.0.1:8080").startswith(b"HTTP/1.1 403 ")
    assert upgrade(factory, "https://127.0.0.1:8080", peer_secure=True).startswith(b"HTTP/1.1 101 ")
    assert upgrade(factory, "http://127.0.0.1:8080", peer_secure=True).startswith(b"HTTP/1.1 403 ")


def test_a_websocket_allowed_hook_that_raises_is_a_500_logged_once_per_interval(world, log_events):
    """autobahn logged two warnings with the traceback per upgrade; now one line per class and interval."""

    def broken(request):
        raise KeyError("a bug in the hook")

    factory = ws_factory(world, broken)
    answers = {upgrade(factory, None).split(b"\r\n", 1)[0] for _ in range(100)}
    assert answers == {b"HTTP/1.1 500 internal error"}
    errors = [e for e in log_events if e.get("log_failure") is not None]
    assert len(errors) == 1 and errors[0]["log_failure"].check(KeyError)
    assert len(log_events) == 1, [formatEvent(e) for e in log_events]
    assert world.context.metrics.internal_errors.labels("websocket_allowed")._value.get() == 100


def test_the_access_log_clips_what_the_client_chose():
    """A 14 kB path, Referer and User-Agent make a short access log line (twisted.web quoted them whole)."""
    from twisted.web.test.requesthelper import DummyRequest

    from zmqwamp.transport.site import access_line

    request = DummyRequest([b""])
    request.method = b"GET"
    request.uri = b"/" + b"u" * 14_000
    request.clientproto = b"HTTP/1.1"
    request.code = 404
    request.sentLength = 10
    request.requestHeaders.setRawHeaders(b"user-agent", [b'a"\n' * 5_000])
    request.requestHeaders.setRawHeaders(b"referer", [b"r" * 14_000])
    line = access_line("[08/Dec/2026:02:00:00 +0000]", request)
    assert len(line) < 600, len(line)
    assert "\n" not in line and '"GET /uuu' in line and "…" in line
    assert 'a\\" a\\"' in line  # double quotes escaped, as twisted.web does


# -- Twisted's PROXY protocol wrapper, which it does not export (zmqwamp.internals) -----------------------


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


# -- twisted.web's cached access log time (zmqwamp.internals) ----------------------------------------------


@pytest.mark.parametrize("renamed", [False, True])
def test_a_refused_requests_access_line_goes_through_the_client_log_with_its_time(monkeypatch, log_events, renamed):
    """A 404's access line is written through the client log with twisted.web's time; a twisted.web without its
    cached time (renamed): the time is formatted for the line, the same text."""
    import io

    from twisted.internet.task import Clock
    from twisted.web.http import datetimeToLogString
    from twisted.web.resource import Resource
    from twisted.web.test.requesthelper import DummyRequest

    from zmqwamp.clientlog import ClientLog
    from zmqwamp.metrics import BridgeMetrics
    from zmqwamp.transport import site as site_module
    from zmqwamp.transport.site import access_line

    if renamed:
        monkeypatch.setattr(site_module, "SITE_LOG_TIME", ("_renamed_in_a_future_twisted",))
        monkeypatch.setattr(internals, "_warned", set())
    clock = Clock()
    clock.advance(1_796_000_000)
    site = site_module.BridgeSite(Resource(), client_log=ClientLog(BridgeMetrics(), clock=clock.seconds), reactor=clock)
    site.startFactory()
    site.logFile = written = io.StringIO()
    request = DummyRequest([b""])
    request.method, request.uri, request.path, request.clientproto = b"GET", b"/x", b"/x", b"HTTP/1.1"
    request.code, request.sentLength = 404, 10
    site.log(request)
    assert written.getvalue() == access_line(datetimeToLogString(clock.seconds()), request) + "\n"
    assert bool([e for e in log_events if e.get("what") == "this twisted.web's Site"]) is renamed
    site.stopFactory()


def test_the_static_files_are_the_package_data():
    """``/`` and ``/js/`` serve zmqwamp/static (package data) wherever the site's module lives (after the move to
    zmqwamp/transport/ they pointed at a zmqwamp/transport/static that does not exist: 404)."""
    from zmqwamp.testing import make_world
    from zmqwamp.transport.site import build_site

    from memory import FakeStatus

    world = make_world()
    site = build_site(None, world.context, FakeStatus(), static=True)
    index, js = site.resource.children[b""], site.resource.children[b"js"]
    package = Path(__file__).resolve().parents[3] / "zmqwamp" / "static"
    assert Path(index.path) == package / "index.html" and index.isfile()
    assert Path(js.path) == package / "js" and js.child("zmqwamp.js").isfile()
    world.close()
