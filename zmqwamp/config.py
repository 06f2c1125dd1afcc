"""Bridge configuration: the TOML file and the command line, merged once.

Every option can be given in the TOML file (read with :mod:`tomllib`) or on the
command line; a command-line value wins, and repeatable options (``allow``,
``listen``) are added to the file's.  Errors name the file and the key.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from zmqwamp.endpoints import CODECS, KINDS, Endpoint, InvalidEndpoint, parse_address

DEFAULT_LISTEN = "tcp:8080:interface=127.0.0.1"


class ConfigError(ValueError):
    """The configuration cannot be used; the message says where and why."""


@dataclass
class BridgeConfig:
    listen: list[str] = field(default_factory=list)
    realm: str = "zmqwamp"
    allow: list[str] = field(default_factory=list)
    anonymous: bool = False
    call_timeout: float = 10.0
    max_call_timeout: float = 300.0
    idle_close: float = 30.0
    max_message_size: int = 1024 * 1024
    endpoints: dict[str, Endpoint] = field(default_factory=dict)

    @property
    def listen_endpoints(self) -> list[str]:
        return self.listen or [DEFAULT_LISTEN]


_SCALARS = {f.name: f.type for f in fields(BridgeConfig) if f.name not in ("listen", "allow", "endpoints")}


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


def _alias(where: str, name: str, table: Any) -> Endpoint:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown = set(table) - {"address", "kind", "codec", "timeout"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    if "address" not in table:
        raise ConfigError(f"{where}: 'address' is required")
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
    return Endpoint(address=address, kind=kind, codec=codec, timeout=timeout, alias=name)


def parse_config(data: dict[str, Any], source: str = "<config>") -> BridgeConfig:
    """Build a configuration from a parsed TOML document."""
    config = BridgeConfig()
    for key, value in data.items():
        where = f"{source}: {key}"
        if key in ("listen", "allow"):
            setattr(config, key, _string_list(where, value))
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
    if not config.realm:
        raise ConfigError(f"{source}: realm must not be empty")
