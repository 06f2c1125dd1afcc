"""Naming ZeroMQ endpoints from WAMP URIs.

A WAMP procedure or topic URI is either a ZeroMQ address (``tcp://host:port``,
``ipc://path``), optionally with a ``?filter=`` query for subscriptions, or the
name of an alias the operator configured.  This module turns a URI into an
:class:`Endpoint` and nothing else: whether the endpoint may be reached is
:mod:`zmqwamp.auth.policy`'s job.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote_to_bytes

from zmqwamp.upstream.history import DEFAULT_HISTORY_BYTES

CODECS = ("auto", "json", "text", "binary")
KINDS = ("req", "sub")

_TCP = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):(?P<port>[0-9]{1,5})$")
MAX_URI_LENGTH = 2048
MAX_IPC_PATH = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux


class InvalidEndpoint(ValueError):
    """The URI does not name a ZeroMQ endpoint this bridge can connect to."""


@dataclass(frozen=True)
class Endpoint:
    """A ZeroMQ endpoint the bridge may connect to, as a client named it."""

    address: str
    kind: str | None = None
    codec: str = "auto"
    timeout: float | None = None
    alias: str | None = None
    slow_consumer: str | None = None  # zmqwamp.transport.outgoing policy; None: the bridge's default
    # last messages kept for get_retained / _since (zmqwamp.upstream.history; sub aliases only), and in how many bytes
    history: int = 0
    history_bytes: int = DEFAULT_HISTORY_BYTES
    keep_open: bool = False  # keep the SUB connection (and the history) open with no subscriber

    @property
    def name(self) -> str:
        """What the client called it: the alias, else the address."""
        return self.alias or self.address


def parse_address(address: str) -> str:
    """Check that ``address`` is a connectable ZeroMQ address and return it."""
    scheme, sep, rest = address.partition("://")
    if not sep:
        raise InvalidEndpoint(f"{address!r} is not a ZeroMQ endpoint (expected tcp://host:port or ipc://path)")
    if scheme == "tcp":
        match = _TCP.match(rest)
        if not match:
            raise InvalidEndpoint(f"{address!r}: expected tcp://host:port")
        port = int(match.group("port"))
        if not 0 < port < 65536:
            raise InvalidEndpoint(f"{address!r}: port must be 1..65535")
        return address
    if scheme == "ipc":
        if not rest or "\x00" in rest or "?" in rest or "#" in rest:
            raise InvalidEndpoint(f"{address!r}: expected ipc://path")
        # Allow globs match paths as text ('*' crosses '/'), so 'ipc:///run/app/*' would match
        # '/run/app/../other.sock', which the kernel resolves elsewhere: only clean paths are endpoints.
        segments = rest.split("/")
        if any(s in (".", "..") for s in segments) or "" in segments[rest.startswith("/") :]:
            raise InvalidEndpoint(
                f"{address!r}: an ipc path must not contain '.', '..' or empty segments ('//', a trailing '/')"
            )
        if len(rest.encode("utf-8")) > MAX_IPC_PATH:
            raise InvalidEndpoint(f"ipc path longer than {MAX_IPC_PATH} bytes (the limit of a unix socket address)")
        return address
    raise InvalidEndpoint(f"{address!r}: unsupported transport {scheme!r} (use tcp or ipc)")


def split_tcp(address: str) -> tuple[str, str] | None:
    """``(host, port)`` of a ``tcp://`` address :func:`parse_address` accepted (IPv6 in its brackets); else None."""
    if not address.startswith("tcp://"):
        return None
    match = _TCP.match(address[6:])
    return (match.group("host"), match.group("port")) if match else None


def ip_version(host: str) -> int | None:
    """4 for an IPv4 literal, 6 for a bracketed IPv6 literal, None for anything else (a host name).

    What Python's :mod:`ipaddress` accepts: ``127.1``, ``0x7f000001``, ``127.000.0.1`` and a
    trailing dot are names here (the system resolver may still map them to an address).
    A bracketed IPv4 literal is neither (0).
    """
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        ip = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        return 0 if bracketed else None
    if bracketed:
        return 6 if ip.version == 6 else 0
    return 4 if ip.version == 4 else 0


@dataclass(frozen=True)
class EndpointTarget:
    """An endpoint and the subscription filter carried in its URI, if any."""

    endpoint: Endpoint
    filter: bytes | None = None


class EndpointResolver:
    """Resolves WAMP URIs to endpoints, knowing the configured aliases.

    Every CALL resolves its URI, and clients use few distinct URIs: results are
    cached (least recently used, bounded; failures are not cached), and the
    cache is emptied when ``aliases`` is replaced (a reload; replace it, do not
    change it in place).
    """

    CACHE_SIZE = 1024

    def __init__(self, aliases: dict[str, Endpoint] | None = None) -> None:
        self.aliases = dict(aliases or {})

    @property
    def aliases(self) -> dict[str, Endpoint]:
        return self._aliases

    @aliases.setter
    def aliases(self, aliases: dict[str, Endpoint]) -> None:
        self._aliases = aliases
        self._cached = lru_cache(maxsize=self.CACHE_SIZE)(self._resolve)

    def resolve(self, uri: object) -> EndpointTarget:
        if type(uri) is not str:
            return self._resolve(uri)  # refused there (and maybe not hashable)
        return self._cached(uri)

    def _resolve(self, uri: object) -> EndpointTarget:
        if not isinstance(uri, str) or not uri:
            raise InvalidEndpoint("endpoint URI must be a non-empty string")
        if len(uri) > MAX_URI_LENGTH:
            raise InvalidEndpoint(f"endpoint URI longer than {MAX_URI_LENGTH} characters")
        base, sep, query = uri.partition("?")
        filter_ = _parse_query(uri, query) if sep else None
        alias = self._aliases.get(base)
        if alias is not None:
            return EndpointTarget(alias, filter_)
        return EndpointTarget(Endpoint(parse_address(base)), filter_)


def _parse_query(uri: str, query: str) -> bytes:
    key, sep, value = query.partition("=")
    if key != "filter" or not sep or "&" in value or "#" in value:
        raise InvalidEndpoint(f"{uri!r}: the only query allowed is ?filter=<percent-encoded prefix>")
    return unquote_to_bytes(value)
