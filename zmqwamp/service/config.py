"""Bridge configuration: the TOML file and the command line, merged once.

Every option can be given in the TOML file (read with :mod:`tomllib`) or on the
command line; a command-line value wins, and repeatable options (``allow``,
``listen``, ``origins``, ``allow_hosts``, ``trusted_proxies``, ``auth``) are added to the
file's.  Per-user ``[[rules]]`` exist only in the file (see docs/auth.md).  Errors name the file and the key.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from zmqwamp.auth.policy import ACTIONS, PLACEHOLDERS, UserRule, filter_glob_error
from zmqwamp.peers import FORWARDED_HEADERS, parse_trusted
from zmqwamp.transport.outgoing import SLOW_CONSUMER_POLICIES
from zmqwamp.upstream.endpoints import CODECS, KINDS, Endpoint, InvalidEndpoint, parse_address
from zmqwamp.upstream.history import DEFAULT_HISTORY_BYTES, DEFAULT_MAX_HISTORY_BYTES, MAX_HISTORY

DEFAULT_LISTEN = "tcp:8080:interface=127.0.0.1"


class ConfigError(ValueError):
    """The configuration cannot be used; the message says where and why."""


@dataclass
class BridgeConfig:
    listen: list[str] = field(default_factory=list)
    realm: str = "zmqwamp"
    allow: list[str] = field(default_factory=list)
    anonymous: bool = False
    # Cred checker descriptions, as --auth takes them ("zmqwamp-users:/etc/zmqwamp/users", "jwt:..."); the
    # command line's --auth adds to them.  Built once at start (tap.py): SIGHUP does not change checkers.
    auth: list[str] = field(default_factory=list)
    call_timeout: float = 10.0
    max_call_timeout: float = 300.0
    idle_close: float = 30.0
    max_message_size: int = 1024 * 1024
    drain_time: float = 10.0
    log_format: str = "text"
    static: bool = True  # serve the demo page at / and the client bundle at /js/
    metrics_listen: list[str] = field(default_factory=list)  # serve /metrics here instead of on every listen port
    # HTTP: Host names allowed on loopback besides the local ones; proxies whose forwarded client addresses count
    allow_hosts: list[str] = field(default_factory=list)
    trusted_proxies: list[str] = field(default_factory=list)
    forwarded_header: str = "x-forwarded-for"
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    # authentication and authorization (docs/auth.md)
    origins: list[str] = field(default_factory=list)
    rules: list[UserRule] = field(default_factory=list)
    login_delay: float = 0.5
    login_penalty_max: float = 30.0
    max_pending_logins: int = 32  # login attempts waiting for their check, per peer and per authid
    # limits and slow consumers (docs/reliability.md)
    max_outgoing_buffer: int = 1024 * 1024
    slow_consumer: str = "drop_oldest"
    max_calls_in_flight: int = 256
    max_subscriptions: int = 256
    max_filter_length: int = 256  # bytes of one subscription filter
    max_filters_per_endpoint: int = 1024  # distinct filters on one upstream address, all sessions together
    max_endpoints_per_session: int = 32  # zmq connections a session's requests opened and that are still open
    # the same, for all sessions from one peer address (an IPv6 /64): no more than one session may open, so at
    # least max_zmq_sockets / 32 = 16 addresses are needed to fill max_zmq_sockets (with 128: four)
    max_endpoints_per_peer: int = 32
    max_zmq_sockets: int = 512  # zmq connections in total
    max_calls_per_second: float = 500.0
    max_subscribes_per_second: float = 20.0  # per session, after a burst of max_subscriptions plus as many
    max_messages_per_second: float = 1000.0  # every WAMP message of a session (then ABORT), after a 2 s burst
    max_call_arguments: int = 256  # positional arguments of a CALL: each is a ZeroMQ frame
    max_sessions: int = 1000
    max_sessions_per_peer: int = 200
    handshake_timeout: float = 10.0
    ping_interval: float = 30.0
    ping_timeout: float = 20.0
    max_message_fragments: int = 64
    max_login_message_size: int = 16 * 1024  # bytes of a message before the session is open (HELLO, AUTHENTICATE)
    max_control_frames_per_second: float = 10.0  # WebSocket pings and pongs from one client (burst of the same)
    max_log_lines_per_second: float = 1.0
    max_log_lines_per_second_total: float = 100.0
    max_history_bytes: int = DEFAULT_MAX_HISTORY_BYTES  # the sum of the aliases' history_bytes (docs/history.md)
    reactor_lag_warning: float = 1.0  # seconds the reactor may be blocked before a warning (docs/reliability.md)
    max_replay_per_second: float = 10000.0  # replayed EVENTs per second per client address (docs/history.md)

    @property
    def listen_endpoints(self) -> list[str]:
        return self.listen or [DEFAULT_LISTEN]


# The bounds an operator sets (the numeric LIMIT_OPTIONS of zmqwamp/service/tap.py, and the call timeouts):
# exported as zmqwamp_limit{limit=...} (zmqwamp/metrics.py), so alert rules compare against the running values,
# and shown on /status.
LIMITS = (
    "max_sessions",
    "max_sessions_per_peer",
    "max_zmq_sockets",
    "max_endpoints_per_session",
    "max_endpoints_per_peer",
    "max_filters_per_endpoint",
    "max_filter_length",
    "max_subscriptions",
    "max_calls_in_flight",
    "max_calls_per_second",
    "max_subscribes_per_second",
    "max_messages_per_second",
    "max_call_arguments",
    "max_message_size",
    "max_message_fragments",
    "max_login_message_size",
    "max_control_frames_per_second",
    "max_outgoing_buffer",
    "max_pending_logins",
    "max_log_lines_per_second",
    "max_log_lines_per_second_total",
    "max_history_bytes",
    "max_replay_per_second",
    "handshake_timeout",
    "ping_interval",
    "ping_timeout",
    "reactor_lag_warning",
    "call_timeout",
    "max_call_timeout",
)


def limits(config: BridgeConfig) -> dict[str, float]:
    """The :data:`LIMITS` of ``config``, by name."""
    return {name: getattr(config, name) for name in LIMITS}


_LISTS = ("listen", "allow", "origins", "metrics_listen", "allow_hosts", "trusted_proxies", "auth")
_SCALARS: dict[str, str] = {  # name -> its type's name (the annotation, a string here)
    f.name: str(f.type) for f in fields(BridgeConfig) if f.name not in (*_LISTS, "endpoints", "rules")
}


def _check_type(where: str, value: Any, kind: str) -> Any:
    ok = {
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
    }[kind]
    if not ok:
        raise ConfigError(f"{where}: expected {kind}, got {type(value).__name__}")
    return float(value) if kind == "float" else value


def _string_list(where: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a string or a list of strings")
    return list(value)


def _check_table(where: str, table: Any, keys: set[str], required: str, hint: str = "") -> None:
    """A TOML table with only ``keys``, ``required`` among them."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown = set(table) - keys
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    if required not in table:
        raise ConfigError(f"{where}: '{required}' is required{hint}")


def _alias(where: str, name: str, table: Any) -> Endpoint:
    _check_table(
        where,
        table,
        {"address", "kind", "codec", "timeout", "slow_consumer", "history", "history_bytes", "keep_open"},
        "address",
    )
    if "://" in name or "?" in name:
        raise ConfigError(f"{where}: an alias name cannot look like an address")
    try:
        address = parse_address(_check_type(f"{where}.address", table["address"], "str"))
    except InvalidEndpoint as e:
        raise ConfigError(f"{where}.address: {e}") from None
    kind = table.get("kind")
    if kind is not None and kind not in KINDS:
        raise ConfigError(f"{where}.kind: must be one of {', '.join(KINDS)}")
    codec = table.get("codec", "auto")
    if codec not in CODECS:
        raise ConfigError(f"{where}.codec: must be one of {', '.join(CODECS)}")
    timeout = table.get("timeout")
    if timeout is not None:
        timeout = _check_type(f"{where}.timeout", timeout, "float")
        if timeout <= 0:
            raise ConfigError(f"{where}.timeout: must be positive (seconds)")
    slow_consumer = table.get("slow_consumer")
    if slow_consumer is not None and slow_consumer not in SLOW_CONSUMER_POLICIES:
        raise ConfigError(f"{where}.slow_consumer: must be one of {', '.join(SLOW_CONSUMER_POLICIES)}")
    history, history_bytes, keep_open = _history(where, table, kind)
    return Endpoint(
        address=address,
        kind=kind,
        codec=codec,
        timeout=timeout,
        alias=name,
        slow_consumer=slow_consumer,
        history=history,
        history_bytes=history_bytes,
        keep_open=keep_open,
    )


def _history(where: str, table: dict, kind: str | None) -> tuple[int, int, bool]:
    """An alias's ``history``, ``history_bytes`` and ``keep_open``: a sub alias's, and keep_open only with history."""
    history = _check_type(f"{where}.history", table.get("history", 0), "int")
    history_bytes = _check_type(f"{where}.history_bytes", table.get("history_bytes", DEFAULT_HISTORY_BYTES), "int")
    keep_open = _check_type(f"{where}.keep_open", table.get("keep_open", False), "bool")
    if not 0 <= history <= MAX_HISTORY:
        raise ConfigError(f"{where}.history: must be 0 (off) to {MAX_HISTORY} messages")
    if history_bytes <= 0:
        raise ConfigError(f"{where}.history_bytes: must be positive")
    if history and kind != "sub":
        raise ConfigError(f'{where}.history: only a kind = "sub" alias keeps a history')
    if keep_open and not history:
        raise ConfigError(f"{where}.keep_open: only applies with history > 0 (it keeps the history warm)")
    if "history_bytes" in table and not history:
        raise ConfigError(f"{where}.history_bytes: only applies with history > 0")
    return history, history_bytes, keep_open


_PLACEHOLDER = re.compile(r"\{[^}]*\}")


def _rule_globs(where: str, value: Any, placeholders: bool) -> tuple[str, ...]:
    globs = _string_list(where, value)
    if not globs:
        raise ConfigError(f"{where}: must not be empty")
    for glob in globs:
        for found in _PLACEHOLDER.findall(glob):
            if not placeholders or found not in PLACEHOLDERS:
                allowed = " and ".join(PLACEHOLDERS) if placeholders else "none"
                raise ConfigError(f"{where}: unknown placeholder {found} in {glob!r} (allowed: {allowed})")
    return tuple(globs)


def _rule(where: str, table: Any) -> UserRule:
    """One [[rules]] entry: authid/role (globs), actions (globs), endpoints (globs), filters (globs)."""
    _check_table(
        where,
        table,
        {"authid", "role", "actions", "endpoints", "filters"},
        "endpoints",
        " (globs of endpoint addresses or aliases)",
    )
    authids = _rule_globs(f"{where}.authid", table["authid"], False) if "authid" in table else ()
    roles = _rule_globs(f"{where}.role", table["role"], False) if "role" in table else ()
    actions = _rule_globs(f"{where}.actions", table["actions"], False) if "actions" in table else ACTIONS
    for glob in actions:
        if not any(fnmatchcase(action, glob) for action in ACTIONS):
            raise ConfigError(f"{where}.actions: {glob!r} matches none of {', '.join(ACTIONS)}")
    filters = None
    if "filters" in table:
        filters = _rule_globs(f"{where}.filters", table["filters"], True)
        if not any(fnmatchcase("subscribe", glob) for glob in actions):
            raise ConfigError(f"{where}.filters: filters only apply to 'subscribe', which actions does not include")
    return UserRule(
        endpoints=_rule_globs(f"{where}.endpoints", table["endpoints"], True),
        authids=authids,
        roles=roles,
        actions=actions,
        filters=filters,
    )


def parse_config(data: dict[str, Any], source: str = "<config>") -> BridgeConfig:
    """Build a configuration from a parsed TOML document."""
    config = BridgeConfig()
    for key, value in data.items():
        where = f"{source}: {key}"
        if key in _LISTS:
            setattr(config, key, _string_list(where, value))
        elif key == "rules":
            if not isinstance(value, list):
                raise ConfigError(f"{where}: expected an array of tables ([[rules]])")
            config.rules = [_rule(f"{where}[{i}]", t) for i, t in enumerate(value)]
        elif key == "endpoints":
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: expected a table of aliases")
            config.endpoints = {n: _alias(f"{where}.{n}", n, t) for n, t in value.items()}
        elif key in _SCALARS:
            setattr(config, key, _check_type(where, value, _SCALARS[key]))
        else:
            raise ConfigError(f"{where}: unknown option")
    validate(config, source)
    return config


def load_config(path: str | Path) -> BridgeConfig:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    return parse_config(data, str(path))


def validate(config: BridgeConfig, source: str = "options") -> None:
    for name in ("call_timeout", "max_call_timeout", "idle_close"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"{source}: {name} must be positive")
    if config.max_message_size < 1024:
        raise ConfigError(f"{source}: max_message_size must be at least 1024 bytes")
    if config.max_login_message_size < 1024:
        raise ConfigError(f"{source}: max_login_message_size must be at least 1024 bytes")
    if config.log_format not in ("text", "json"):
        raise ConfigError(f"{source}: log_format must be 'text' or 'json'")
    if config.drain_time < 0:
        raise ConfigError(f"{source}: drain_time must not be negative")
    if config.login_delay < 0 or config.login_penalty_max < 0:
        raise ConfigError(f"{source}: login_delay and login_penalty_max must not be negative")
    if not config.realm:
        raise ConfigError(f"{source}: realm must not be empty")
    for name in (
        "max_calls_in_flight",
        "max_subscriptions",
        "max_calls_per_second",
        "max_messages_per_second",
        "max_call_arguments",
        "max_subscribes_per_second",
        "max_replay_per_second",
        "max_sessions",
        "max_sessions_per_peer",
        "handshake_timeout",
        "ping_interval",
        "ping_timeout",
        "max_filter_length",
        "max_filters_per_endpoint",
        "max_endpoints_per_session",
        "max_endpoints_per_peer",
        "max_zmq_sockets",
        "max_pending_logins",
        "max_message_fragments",
        "max_control_frames_per_second",
        "max_log_lines_per_second",
        "max_log_lines_per_second_total",
        "max_history_bytes",
        "reactor_lag_warning",
    ):
        if getattr(config, name) <= 0:
            raise ConfigError(f"{source}: {name} must be positive")
    for index, rule in enumerate(config.rules):
        for glob in rule.filters or ():
            error = filter_glob_error(glob)
            if error:
                raise ConfigError(f"{source}: rules[{index}].filters: {error}")
    held = {name: e.history_bytes for name, e in config.endpoints.items() if e.history}
    total = sum(held.values())
    if total > config.max_history_bytes:
        raise ConfigError(
            f"{source}: the aliases' history_bytes add up to {total} bytes "
            f"({', '.join(f'{n}: {b}' for n, b in sorted(held.items()))}), over max_history_bytes "
            f"({config.max_history_bytes}): lower history_bytes or raise max_history_bytes"
        )
    if config.max_outgoing_buffer < 4096:
        raise ConfigError(f"{source}: max_outgoing_buffer must be at least 4096 bytes")
    if config.slow_consumer not in SLOW_CONSUMER_POLICIES:
        raise ConfigError(f"{source}: slow_consumer must be one of {', '.join(SLOW_CONSUMER_POLICIES)}")
    if any(not pattern.strip() for pattern in config.allow_hosts):
        raise ConfigError(f"{source}: allow_hosts: a pattern must not be empty")
    try:
        parse_trusted(config.trusted_proxies)
    except ValueError as e:
        raise ConfigError(f"{source}: trusted_proxies: {e}") from None
    if config.forwarded_header not in FORWARDED_HEADERS:
        raise ConfigError(f"{source}: forwarded_header must be one of {', '.join(FORWARDED_HEADERS)}")
