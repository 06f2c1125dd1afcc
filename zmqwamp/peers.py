"""Who the client is: the peer of a connection, or the address a trusted proxy forwarded.

Every part that needs the client's address (the connection guard and its
per-peer count, the WebSocket session's ``peer``, the login throttle, logs, the
local-only pages) gets it from here, so there is one answer to "who is this".

* A listener behind a PROXY protocol endpoint (``--listen haproxy:tcp:...``):
  Twisted's wrapper makes ``transport.getPeer()`` the client the proxy saw.
* ``X-Forwarded-For`` (or RFC 7239 ``Forwarded``, ``--forwarded-header``) is read
  only when the TCP peer is a trusted proxy (``--trusted-proxy CIDR``; ``unix``
  for connections on a unix socket).  The client is the right-most address in
  the chain that is not itself a trusted proxy: every proxy appends the peer it
  saw, so everything left of the first untrusted address could be made up.
  From anyone else the headers are ignored.

Addresses are Twisted ``IAddress`` objects; a forwarded client without a port
gets port 0.  A trusted proxy that forwards a request without naming the client
(a right-most hop ``unknown``, RFC 7239's obfuscated ``_hidden``, nginx's
``unix:``) gives :data:`UNKNOWN_CLIENT`: not local, and every such client shares
one per-peer key (``unknown``) instead of passing as the proxy, which no per-peer
limit counts.  :func:`peer_string` writes addresses as autobahn does
(``tcp4:1.2.3.4:5678``), which :func:`peer_host` turns into the key of every
per-peer limit (connections, login throttle, upstream budget): the address
without its port, an IPv4-mapped IPv6 address as IPv4, an IPv6 address as its /64.

The scheme the client used (:meth:`ClientAddresses.secure`, for the same-origin
check) is the connection's (TLS or not); behind a proxy that terminates TLS, it
is the one that proxy names (``X-Forwarded-Proto``, or ``proto=`` of RFC 7239
``Forwarded``), believed from a trusted proxy or on a PROXY protocol listener.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress
from twisted.web.http_headers import Headers
from zope.interface import implementer

FORWARDED_HEADERS = ("x-forwarded-for", "forwarded")
UNIX = "unix"  # the --trusted-proxy value for peers on unix sockets

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_trusted(values: Iterable[str]) -> tuple[tuple[IPNetwork, ...], bool]:
    """``--trusted-proxy`` values -> (networks, trust unix peers); ValueError names a bad one."""
    networks = []
    unix = False
    for value in values:
        if value == UNIX:
            unix = True
            continue
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address, a CIDR network or 'unix'") from None
    return tuple(networks), unix


def _ip(address: IAddress) -> IPAddress | None:
    """The IP of a TCP address (an IPv4-mapped IPv6 address as IPv4), else None."""
    if not isinstance(address, (IPv4Address, IPv6Address)):
        return None
    try:
        ip = ipaddress.ip_address(address.host.split("%", 1)[0])  # no IPv6 zone id
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@implementer(IAddress)
class UnknownClient:
    """A client a trusted proxy forwarded without an address: autobahn's peer string is then ``unknown``."""

    def __repr__(self) -> str:
        return "UnknownClient()"


UNKNOWN_CLIENT = UnknownClient()
UNKNOWN = "unknown"  # its peer string, and the per-peer key all such clients share


def _address(ip: IPAddress, port: int = 0) -> IAddress:
    if isinstance(ip, ipaddress.IPv4Address):
        return IPv4Address("TCP", str(ip), port)
    return IPv6Address("TCP", str(ip), port)


def is_local(address: IAddress) -> bool:
    """A loopback address (127.0.0.0/8, ::1) or a unix socket peer: a client on this machine."""
    if isinstance(address, UNIXAddress):
        return True
    ip = _ip(address)
    return ip is not None and ip.is_loopback


def peer_string(address: IAddress) -> str:
    """``tcp4:1.2.3.4:5678``, ``tcp6:::1:5678``, ``unix``: autobahn's ``peer`` form."""
    if isinstance(address, IPv4Address):
        return f"tcp4:{address.host}:{address.port}"
    if isinstance(address, IPv6Address):
        return f"tcp6:{address.host}:{address.port}"
    if isinstance(address, UNIXAddress):
        name = address.name.decode(errors="replace") if isinstance(address.name, bytes) else address.name
        return f"unix:{name}" if name else "unix"
    return UNKNOWN


IPV6_PREFIX = 64  # an IPv6 client is keyed by its /64: one subscriber line usually has a whole /64 of addresses


def ip_key(ip: IPAddress) -> str:
    """The per-peer key of an IP: ``tcp4:1.2.3.4`` (also for ``::ffff:1.2.3.4``), ``tcp6:2001:db8:1:2::/64``.

    A loopback IPv6 address (``::1``, the only one) stays itself.
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address):
        return f"tcp4:{ip}"
    if ip.is_loopback:
        return f"tcp6:{ip}"
    return f"tcp6:{ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False)}"


def peer_host(peer: str) -> str:
    """The key of every per-peer limit, from an autobahn peer string (one function, so they all agree).

    ``tcp4:1.2.3.4:5678`` -> ``tcp4:1.2.3.4``; ``tcp6:::ffff:1.2.3.4:5678`` -> ``tcp4:1.2.3.4``;
    ``tcp6:2001:db8:1:2:3:4:5:6:5678`` -> ``tcp6:2001:db8:1:2::/64``; anything else (``unix``,
    ``unknown``) is its own key.
    """
    kind, sep, rest = peer.partition(":")
    if not sep or kind not in ("tcp4", "tcp6", "tcp"):
        return peer
    host = rest.rsplit(":", 1)[0]
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])  # no IPv6 zone id
    except ValueError:
        return f"{kind}:{host}"
    return ip_key(ip)


def host_key(address: IAddress) -> str:
    """The per-peer key of a client's address (:func:`peer_host` of its peer string)."""
    return peer_host(peer_string(address))


def _hop(text: str) -> IPAddress | tuple[IPAddress, int] | None:
    """One element of a forwarded chain: ``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1``; None if not an address."""
    text = text.strip().strip('"').strip()
    port = 0
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
        elif rest:
            return None
    elif text.count(":") == 1:
        host, _, digits = text.partition(":")
        if not digits.isdigit():
            return None
        port = int(digits)
    else:
        host = text
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None  # "unknown", "_hidden" (RFC 7239 obfuscated), garbage
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (ip, port) if 0 < port < 65536 else ip


def forwarded_chain(headers: Headers, header: str) -> list[str]:
    """The elements of every ``header`` line, in order (left: farthest from us)."""
    lines = headers.getRawHeaders(header.encode()) or []
    chain = []
    for line in lines:
        for element in line.decode("latin-1").split(","):
            if header == "forwarded":
                for pair in element.split(";"):
                    name, _, value = pair.partition("=")
                    if name.strip().lower() == "for":
                        element = value
                        break
                else:
                    element = ""  # an element without for=: no address
            chain.append(element)
    return chain


def forwarded_proto(headers: Headers, header: str) -> str | None:
    """The scheme the client used at the first proxy, lower case: ``proto=`` of RFC 7239 ``Forwarded`` (with
    ``header`` ``forwarded``), else ``X-Forwarded-Proto``; the left-most value if proxies appended; None if none."""
    if header == "forwarded":
        for line in headers.getRawHeaders(b"forwarded") or []:
            for element in line.decode("latin-1").split(","):
                for pair in element.split(";"):
                    name, _, value = pair.partition("=")
                    if name.strip().lower() == "proto":
                        return value.strip().strip('"').lower() or None
        return None
    lines = headers.getRawHeaders(b"x-forwarded-proto")
    if not lines:
        return None
    return lines[0].decode("latin-1").split(",", 1)[0].strip().lower() or None


# Headers that say a request came through a proxy (X-Real-IP: nginx's other habit)
FORWARDING = (b"x-forwarded-for", b"forwarded", b"x-real-ip")


class ClientAddresses:
    """Which peers are trusted proxies, and the client of a request that came through them."""

    def __init__(self, trusted_proxies: Iterable[str] = (), header: str = "x-forwarded-for") -> None:
        if header not in FORWARDED_HEADERS:
            raise ValueError(f"forwarded header must be one of {', '.join(FORWARDED_HEADERS)}")
        self.networks, self.trust_unix = parse_trusted(trusted_proxies)
        self.header = header

    def __bool__(self) -> bool:
        return bool(self.networks) or self.trust_unix

    def trusted(self, address: IAddress | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """Is ``address`` (a connection's peer, or a hop of a forwarded chain) a trusted proxy?"""
        if isinstance(address, UNIXAddress):
            return self.trust_unix
        ip = address if isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else _ip(address)
        return ip is not None and any(ip in network for network in self.networks)

    def client(self, peer: IAddress, headers: Headers) -> IAddress:
        """The client of a request from ``peer`` carrying ``headers``; ``peer`` itself unless it is a trusted proxy."""
        if not self.trusted(peer):
            return peer
        current = peer
        for element in reversed(forwarded_chain(headers, self.header)):
            hop = _hop(element)
            if hop is None:  # "unknown", "_hidden", "unix:": the proxy does not know (or say) who it is
                return UNKNOWN_CLIENT
            ip, port = hop if isinstance(hop, tuple) else (hop, 0)
            current = _address(ip, port)
            if not self.trusted(ip):
                return current
        return current  # every hop trusted: the left-most one

    def secure(self, peer: IAddress, headers: Headers, tls: bool, proxy_listener: bool = False) -> bool:
        """Did the client use TLS (``https``/``wss``)?  For the same-origin check, which compares schemes too.

        ``tls``: this connection is TLS.  A proxy that terminates TLS says so in its
        forwarded proto (:func:`forwarded_proto`), believed from a trusted proxy and
        on a PROXY protocol listener (``proxy_listener``: only the proxy reaches it).
        """
        if proxy_listener or self.trusted(peer):
            proto = forwarded_proto(headers, self.header)
            if proto is not None:
                return proto in ("https", "wss")
        return tls

    def local(self, peer: IAddress, client: IAddress, headers: Headers) -> bool:
        """Is the client of this request on this machine (for the operator's pages)?

        Its address must be local (:func:`is_local`); and a request from a peer
        that is not a trusted proxy but says it was forwarded is not: that is a
        proxy on this machine nobody told us about, passing on remote clients.
        """
        if not is_local(client):
            return False
        return self.trusted(peer) or not any(headers.hasHeader(name) for name in FORWARDING)
