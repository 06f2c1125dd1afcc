"""The history keys of an alias and max_history_bytes (zmqwamp/service/config.py): accepted values and clear errors."""

import pytest

from zmqwamp.service.config import ConfigError, parse_config
from zmqwamp.upstream.history import DEFAULT_HISTORY_BYTES


def alias(**keys) -> dict:
    return {"endpoints": {"ticks": {"address": "tcp://127.0.0.1:9000", "kind": "sub", **keys}}}


def test_history_keys_reach_the_endpoint_with_their_defaults():
    ticks = parse_config(alias(history=10, keep_open=True)).endpoints["ticks"]
    assert (ticks.history, ticks.history_bytes, ticks.keep_open) == (10, DEFAULT_HISTORY_BYTES, True)
    plain = parse_config(alias()).endpoints["ticks"]
    assert (plain.history, plain.keep_open) == (0, False)


@pytest.mark.parametrize(
    "table, message",
    [
        (alias(history=10, kind="req"), 'only a kind = "sub" alias keeps a history'),
        ({"endpoints": {"t": {"address": "tcp://127.0.0.1:9000", "history": 3}}}, 'only a kind = "sub" alias'),
        (alias(history=100_001), "must be 0 (off) to 100000 messages"),
        (alias(history=-1), "must be 0 (off) to 100000 messages"),
        (alias(history="10"), "expected int, got str"),
        (alias(history=10, history_bytes=0), "history_bytes: must be positive"),
        (alias(keep_open=True), "keep_open: only applies with history > 0"),
        (alias(history_bytes=1000), "history_bytes: only applies with history > 0"),
        (alias(history=1, keep_open="yes"), "expected bool, got str"),
    ],
)
def test_bad_history_keys_name_the_alias_and_the_key(table, message):
    with pytest.raises(ConfigError) as e:
        parse_config(table, "bridge.toml")
    assert message in str(e.value) and "bridge.toml: endpoints." in str(e.value)


def test_the_sum_of_history_bytes_is_bounded_by_max_history_bytes():
    table = {
        "max_history_bytes": 1500,
        "endpoints": {
            "a": {"address": "tcp://127.0.0.1:9000", "kind": "sub", "history": 5, "history_bytes": 1000},
            "b": {"address": "tcp://127.0.0.1:9001", "kind": "sub", "history": 5, "history_bytes": 1000},
        },
    }
    with pytest.raises(ConfigError) as e:
        parse_config(table, "bridge.toml")
    assert "add up to 2000 bytes (a: 1000, b: 1000), over max_history_bytes (1500)" in str(e.value)
    table["max_history_bytes"] = 2000
    assert parse_config(table).max_history_bytes == 2000
