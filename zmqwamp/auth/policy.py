"""Allow rules, as plain functions of their inputs (no network, no reactor).

* :class:`EndpointPolicy`: the global rules, which endpoints the bridge may
  reach at all.  Deny by default.  An endpoint is allowed when it is a
  configured alias or its address matches one of the operator's shell-style
  glob patterns (``--allow``), as :func:`address_matches` says.
* :class:`UserRule` / :func:`rules_allow`: the per-user rules of the config
  file, applied by the default avatar (:mod:`zmqwamp.auth.cred`) after the global
  rules; they only ever narrow them.
* :class:`OriginPolicy`: the default ``websocket_allowed``, an Origin allowlist.

Logging only for a filter glob that a rule does not apply to an authid (:func:`delimiter_clash`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache

from twisted.logger import Logger

from zmqwamp.upstream.endpoints import Endpoint, ip_version, split_tcp

log = Logger()

# a pattern's tcp part: a bracketed host (IPv6) or anything up to the last ':', then an optional port glob
_BRACKETED = re.compile(r"^(?P<host>\[[^\]]*\])(?::(?P<port>.*))?$")
# a letter outside [...] character classes: the pattern spells a host name, not an IP address
_NAME_LETTER = re.compile(r"(?:\[[^\]]*\]|[^A-Za-z\[])*[A-Za-z]")


def _all_stars(glob: str) -> bool:
    return bool(glob) and not glob.strip("*")


def _split_pattern(rest: str) -> tuple[str, str | None]:
    """The host glob and the port glob (None: any port) of a pattern's ``host[:port]`` part."""
    match = _BRACKETED.match(rest)
    if match:
        return match.group("host"), match.group("port")
    host, sep, port = rest.rpartition(":")
    return (host, port) if sep else (rest, None)


def _host_matches(glob: str, host: str) -> bool:
    """A tcp host against a pattern's host glob, by kind: IP globs match IP literals, name globs names.

    A glob of only ``*`` matches every host.  A glob in brackets with a ``:`` (``[fd00::*]``) matches
    bracketed IPv6 literals.  A glob with a letter outside ``[...]`` spells a name and matches
    host names only.  Any other glob (digits, dots, glob characters: ``10.0.0.*``) matches IPv4
    literals only, so ``10.0.0.1.attacker.example`` (a name) or ``127.1`` (a name to Python,
    127.0.0.1 to the resolver) cannot pass for an address the operator allowed.
    """
    if _all_stars(glob):
        return True
    version = ip_version(host)
    if glob.startswith("[") and glob.endswith("]") and ":" in glob:
        return version == 6 and fnmatchcase(host[1:-1].lower(), glob[1:-1].lower())
    if _NAME_LETTER.match(glob):
        return version is None and fnmatchcase(host, glob)
    return version == 4 and fnmatchcase(host, glob)


@lru_cache(maxsize=4096)
def address_matches(glob: str, address: str) -> bool:
    """Does an allow glob match an endpoint address (one that :func:`~zmqwamp.upstream.endpoints.parse_address`
    accepted)?

    ``ipc://`` addresses: the glob over the whole address (their paths are clean: no ``.``,
    ``..`` or empty segments).  ``tcp://`` addresses: scheme, host and port separately, the
    host by kind (:func:`_host_matches`); a pattern without a port (``tcp://10.0.0.*``) allows
    any port, and a pattern without ``://`` reaches tcp hosts only if it is all ``*``.
    Cached: the per-user rules ask per CALL.
    """
    hostport = split_tcp(address)
    if hostport is None:
        return fnmatchcase(address, glob)
    scheme, sep, rest = glob.partition("://")
    if not sep:
        return _all_stars(glob)
    if not fnmatchcase("tcp", scheme):
        return False
    host_glob, port_glob = _split_pattern(rest)
    host, port = hostport
    if port_glob is not None and not fnmatchcase(port, port_glob):
        return False
    return _host_matches(host_glob, host)


class EndpointPolicy:
    """The global allow rules; immutable (a reload makes a new one), so answers are cached per address."""

    CACHE_SIZE = 1024

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns: tuple[str, ...] = tuple(patterns)
        self._allows_address = lru_cache(maxsize=self.CACHE_SIZE)(self._matches)

    def allows(self, endpoint: Endpoint) -> bool:
        if endpoint.alias is not None:
            return True
        return self._allows_address(endpoint.address)

    def _matches(self, address: str) -> bool:
        return any(address_matches(p, address) for p in self.patterns)


# -- per-user rules (applied by the default avatar, after the global rules) ----

ACTIONS = ("call", "subscribe")
PLACEHOLDERS = ("{authid}", "{authrole}")
GLOB_CHARACTERS = "*?["
_PLACEHOLDER_AT = re.compile(r"\{(authid|authrole)\}")


@lru_cache(maxsize=1024)
def placeholder_delimiters(glob: str) -> tuple[tuple[str, str | None], ...]:
    """The placeholders of a filter glob and the character that follows each (None: the end, or a glob character
    or another placeholder, which a filter cannot have: see :func:`filter_glob_error`).

    ``"{authid}/*"`` -> ``(("authid", "/"),)``.
    """
    found = []
    for match in _PLACEHOLDER_AT.finditer(glob):
        following = glob[match.end() : match.end() + 1]
        found.append((match.group(1), following if following and following not in GLOB_CHARACTERS + "{" else None))
    return tuple(found)


def filter_glob_error(glob: str) -> str | None:
    """Why a rule's filter glob would let one authid (or role) read another's messages, or None.

    ZeroMQ filters are prefixes, so ``{authid}`` must be followed by a literal delimiter: with ``{authid}*``
    (or ``{authid}`` alone, or ``{authid}{authrole}``) the authid ``john`` may take the filter ``john`` and get
    every ``johnny...`` message.
    """
    for name, delimiter in placeholder_delimiters(glob):
        if delimiter is None:
            return (
                f"{{{name}}} in {glob!r} must be followed by a delimiter character (not a glob character, "
                f"another placeholder or the end), e.g. '{{{name}}}/*': ZeroMQ filters are prefixes, so "
                f"'john' would also get what is meant for 'johnny'"
            )
    return None


def delimiter_clash(glob: str, authid: str | None, authrole: str | None) -> tuple[str, str] | None:
    """The placeholder whose value holds the delimiter that follows it in ``glob``, and that delimiter; or None.

    With ``{authid}.*`` the authids ``john`` and ``john.smith`` would overlap (``john`` may take
    ``john.smith.inbox``; a ``john.`` filter receives john.smith's messages too), so such a glob never
    applies to an authid containing ``.``.
    """
    values = {"authid": authid or "", "authrole": authrole or ""}
    for name, delimiter in placeholder_delimiters(glob):
        if delimiter is not None and delimiter in values[name]:
            return name, delimiter
    return None


@lru_cache(maxsize=1024)
def _log_clash(glob: str, name: str, value: str, delimiter: str) -> None:
    """Once per glob and value (while cached): why a filter glob was not applied."""
    log.warn(
        "rule filter {glob!r} does not apply to {name} {value!r}: it contains {delimiter!r}, the delimiter that "
        "follows {{{name}}} there, so it could read what is meant for others; use a delimiter {name}s cannot "
        "contain (e.g. '/')",
        glob=glob,
        name=name,
        value=value[:120],
        delimiter=delimiter,
    )


def _glob_literal(text: str) -> str:
    """``text`` as a glob that matches only itself (an authid like ``a*`` must not widen a rule)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def expand(pattern: str, authid: str | None, authrole: str | None) -> str:
    """Fill ``{authid}`` / ``{authrole}`` in a rule's glob with the session's (literal) values."""
    return pattern.replace("{authid}", _glob_literal(authid or "")).replace("{authrole}", _glob_literal(authrole or ""))


def endpoint_matches(pattern: str, endpoint: Endpoint, authid: str | None = None, authrole: str | None = None) -> bool:
    """A glob matches an endpoint by its alias name, or by its address (:func:`address_matches`)."""
    glob = expand(pattern, authid, authrole)
    return (endpoint.alias is not None and fnmatchcase(endpoint.alias, glob)) or address_matches(glob, endpoint.address)


@dataclass(frozen=True)
class UserRule:
    """One ``[[rules]]`` entry of the config file: who, which actions, which endpoints, which filters.

    Empty ``authids`` and ``roles`` mean every session; ``filters`` None means any filter.
    """

    endpoints: tuple[str, ...]
    authids: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    actions: tuple[str, ...] = ACTIONS
    filters: tuple[str, ...] | None = None

    def applies_to(self, authid: str | None, authrole: str | None) -> bool:
        if self.authids and not any(fnmatchcase(authid or "", p) for p in self.authids):
            return False
        if self.roles and not any(fnmatchcase(authrole or "", p) for p in self.roles):
            return False
        return True

    def allows(
        self, authid: str | None, authrole: str | None, action: str, endpoint: Endpoint, filter_: bytes | None
    ) -> bool:
        if not self.applies_to(authid, authrole):
            return False
        if not any(fnmatchcase(action, p) for p in self.actions):
            return False
        if not any(endpoint_matches(p, endpoint, authid, authrole) for p in self.endpoints):
            return False
        if action == "subscribe" and self.filters is not None:
            text = (filter_ or b"").decode("utf-8", "surrogateescape")
            return any(self._filter_matches(p, text, authid, authrole) for p in self.filters)
        return True

    @staticmethod
    def _filter_matches(glob: str, text: str, authid: str | None, authrole: str | None) -> bool:
        if not fnmatchcase(text, expand(glob, authid, authrole)):
            return False
        clash = delimiter_clash(glob, authid, authrole)
        if clash is not None:
            name, delimiter = clash
            _log_clash(glob, name, (authid if name == "authid" else authrole) or "", delimiter)
            return False
        return True


def delimiter_warnings(rules: Iterable[UserRule], identities: Iterable[tuple[str, str]]) -> list[str]:
    """For each rule filter glob: the known (authid, role) pairs it serves but will never apply to, as a warning.

    ``rules[2].filters '{authid}.*' never applies to authid(s) 'john.smith' (they contain '.'): ...``
    """
    identities = list(identities)
    warnings = []
    for index, rule in enumerate(rules):
        for glob in rule.filters or ():
            if not placeholder_delimiters(glob):
                continue
            names = set()
            for authid, role in identities:
                clash = delimiter_clash(glob, authid, role) if rule.applies_to(authid, role) else None
                if clash is not None:
                    names.add(f"{clash[0]} {(authid if clash[0] == 'authid' else role)!r}")
            if names:
                refused = sorted(names)
                shown = ", ".join(refused[:10]) + (f" and {len(refused) - 10} more" if len(refused) > 10 else "")
                warnings.append(
                    f"rules[{index}].filters {glob!r} never applies to {shown}: they contain the delimiter that "
                    f"follows the placeholder, so their subscriptions under it are denied; use a delimiter "
                    f"that authids and roles cannot contain (e.g. '/')"
                )
    return warnings


def rules_allow(
    rules: Iterable[UserRule],
    authid: str | None,
    authrole: str | None,
    action: str,
    endpoint: Endpoint,
    filter_: bytes | None,
) -> bool:
    """Deny unless some rule allows."""
    return any(rule.allows(authid, authrole, action, endpoint, filter_) for rule in rules)


# -- who may open a WebSocket -------------------------------------------------

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _split_host(hostport: str) -> tuple[str, int | None]:
    hostport = hostport.strip().lower()
    if hostport.startswith("["):
        host, _, rest = hostport.partition("]")
        host += "]"
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = hostport.partition(":")
    return host, (int(port) if port.isdigit() else None)


class OriginPolicy:
    """The default ``websocket_allowed``: an Origin allowlist.

    Allowed: requests without an ``Origin`` header (non-browser clients), and
    same-origin requests (the Origin's scheme, host and port are the connection's:
    ``https`` for a client that used TLS, here or at a proxy that says so, else
    ``http``; host and port from the Host header); and Origins matching one of
    ``patterns`` (shell-style globs over ``scheme://host[:port]``, e.g.
    ``https://*.example.com``; ``*`` allows any).  (autobahn's handshake already
    refuses the ``null`` origin with HTTP 400.)
    """

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns: tuple[str, ...] = tuple(p.lower().rstrip("/") for p in patterns)

    def allows(self, origin: str | None, host: str | None, secure: bool = False) -> bool:
        """``secure``: the client used TLS (the request's ``secure``, set by the WebSocket layer)."""
        if not origin:
            return True
        origin = origin.strip().lower()
        if any(fnmatchcase(origin, p) for p in self.patterns):
            return True
        return origin != "null" and host is not None and _same_origin(origin, host, secure)


_SECURE_SCHEMES = {"http": False, "ws": False, "https": True, "wss": True}


def _same_origin(origin: str, host_header: str, secure: bool) -> bool:
    scheme, sep, rest = origin.partition("://")
    if not sep or scheme not in _DEFAULT_PORTS or _SECURE_SCHEMES[scheme] != secure:
        return False  # https://h:p is not the origin of a plain ws://h:p connection, nor http:// of wss://
    o_host, o_port = _split_host(rest.split("/", 1)[0])
    h_host, h_port = _split_host(host_header)
    if not o_host or o_host != h_host:
        return False
    o_port = o_port or _DEFAULT_PORTS[scheme]
    # a Host without a port is the default port of the scheme the client used
    return o_port == (h_port or _DEFAULT_PORTS[scheme])
