"""zmqwamp.peers: who the client is behind trusted proxies (X-Forwarded-For, RFC 7239 Forwarded), the scheme it
used, whether it is local, and the one key every per-peer limit counts it under.  Through a real proxy:
tests/e2e/test_proxies.py.
"""

from __future__ import annotations

import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.web.http_headers import Headers

from zmqwamp.peers import UNKNOWN_CLIENT, ClientAddresses, host_key, is_local, peer_host, peer_string

# -- who the client is -------------------------------------------------------------------------------------------------


def xff(*values, name="X-Forwarded-For"):
    return Headers({name: list(values)})


def test_forwarded_for_is_believed_only_from_trusted_proxies():
    """X-Forwarded-For is believed from trusted proxies only: the right-most untrusted hop is the client; a hop that is no address, an unknown client."""
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
    """With header=forwarded, RFC 7239's for= is read (X-Forwarded-For is not); _hidden, unknown or no for= is an unknown client."""
    addresses = ClientAddresses(["10.0.0.0/8"], header="forwarded")
    proxy = IPv4Address("TCP", "10.1.1.1", 5000)
    headers = xff('for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https, for=10.2.2.2;by=10.1.1.1', name="Forwarded")
    assert addresses.client(proxy, headers).host == "2001:db8:cafe::17"
    assert addresses.client(proxy, xff("for=_hidden", name="Forwarded")) is UNKNOWN_CLIENT
    assert addresses.client(proxy, xff("for=unknown;proto=https", name="Forwarded")) is UNKNOWN_CLIENT
    assert addresses.client(proxy, xff("proto=https", name="Forwarded")) is UNKNOWN_CLIENT  # no for=
    assert addresses.client(proxy, xff("1.2.3.4")).host == "10.1.1.1"  # X-Forwarded-For is not read then


def test_clients_a_trusted_proxy_cannot_name_share_one_key_and_are_not_local():
    """Item 10: 'unknown', '_hidden', 'unix:' made the client the proxy itself: no per-peer count, local pages."""
    addresses = ClientAddresses(["127.0.0.1"])
    proxy = IPv4Address("TCP", "127.0.0.1", 5000)
    for headers in (xff("unknown"), xff("_hidden"), xff("unix:"), xff("6.6.6.6, unknown")):
        client = addresses.client(proxy, headers)
        assert client is UNKNOWN_CLIENT and peer_string(client) == "unknown" and host_key(client) == "unknown"
        assert not addresses.trusted(client) and not is_local(client)
        assert not addresses.local(proxy, client, headers)


def test_a_request_forwarded_by_an_untrusted_local_proxy_is_not_local():
    """A loopback peer that forwards for someone (any forwarding header) is not local unless it is trusted and the client is local."""
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
    """A unix socket peer is local and trusted only when "unix" is listed; loopback v4 and v6 are local, other addresses not."""
    assert ClientAddresses(["unix"]).trusted(UNIXAddress(None))
    assert not ClientAddresses(["127.0.0.1"]).trusted(UNIXAddress(None))
    assert is_local(UNIXAddress(None)) and is_local(IPv4Address("TCP", "127.0.0.2", 1)) and is_local(IPv6Address("TCP", "::1", 1))
    assert not is_local(IPv4Address("TCP", "10.0.0.1", 1))
    assert host_key(IPv6Address("TCP", "::1", 5)) == "tcp6:::1"


# -- the scheme it used ------------------------------------------------------------------------------------------------


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
    """With header=forwarded the scheme is the client hop's proto= (quoted or not); X-Forwarded-Proto is not read then."""
    addresses = ClientAddresses(["10.0.0.0/8"], header="forwarded")
    proxy = IPv4Address("TCP", "10.1.1.1", 1)
    assert addresses.secure(proxy, xff("for=1.2.3.4;proto=https, for=10.2.2.2;proto=http", name="Forwarded"), False)
    assert not addresses.secure(proxy, xff('for=1.2.3.4;proto="http"', name="Forwarded"), True)
    assert not addresses.secure(proxy, xff("https", name="X-Forwarded-Proto"), False)  # not the configured header


# -- one key per client ------------------------------------------------------------------------------------------------


def test_peer_host():
    """Throttling groups by address, not by source port."""
    assert peer_host("tcp4:10.1.2.3:5555") == "tcp4:10.1.2.3"
    assert peer_host("tcp6:::1:5555") == "tcp6:::1"
    assert peer_host("unix:/tmp/s") == "unix:/tmp/s"


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
