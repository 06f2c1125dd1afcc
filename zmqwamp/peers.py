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
gets port 0.  :func:`peer_string` writes them as autobahn does
(``tcp4:1.2.3.4:5678``), which :func:`peer_host` cuts to the key of
per-peer limits (``tcp4:1.2.3.4``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress
from twisted.web.http_headers import Headers

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
    return "unknown"


def peer_host(peer: str) -> str:
    """The address part of an autobahn peer string (``tcp4:1.2.3.4:5678`` -> ``tcp4:1.2.3.4``)."""
    if peer.startswith(("tcp4:", "tcp6:", "tcp:")):
        return peer.rsplit(":", 1)[0]
    return peer


def host_key(address: IAddress) -> str:
    """The key of per-peer counts: the address without its port (``tcp4:1.2.3.4``)."""
    ip = _ip(address)
    if ip is not None:  # normalised: ::ffff:1.2.3.4 counts as 1.2.3.4
        address = _address(ip)
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
            if hop is None:
                return current  # not an address: the nearest proxy is all we know
            ip, port = hop if isinstance(hop, tuple) else (hop, 0)
            current = _address(ip, port)
            if not self.trusted(ip):
                return current
        return current  # every hop trusted: the left-most one

    def local(self, peer: IAddress, client: IAddress, headers: Headers) -> bool:
        """Is the client of this request on this machine (for the operator's pages)?

        Its address must be local (:func:`is_local`); and a request from a peer
        that is not a trusted proxy but says it was forwarded is not: that is a
        proxy on this machine nobody told us about, passing on remote clients.
        """
        if not is_local(client):
            return False
        return self.trusted(peer) or not any(headers.hasHeader(name) for name in FORWARDING)
