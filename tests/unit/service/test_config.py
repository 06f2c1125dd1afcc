"""zmqwamp.service.config: the TOML file (BridgeConfig): every key, its defaults, and an error naming the file, the
table and the key for each mistake.  The command line, and its merge with the file: test_tap.py.
"""

import pytest

from zmqwamp.service.config import ConfigError, load_config, parse_config
from zmqwamp.upstream.history import DEFAULT_HISTORY_BYTES

from harness import ROOT


def test_full_config(tmp_path):
    """The main keys and an [endpoints.NAME] alias read from a file, with their types (a listen string is a list of one)."""
    path = tmp_path / "c.toml"
    path.write_text(
        'listen = "tcp:9000"\nrealm = "r"\nallow = ["tcp://127.0.0.1:*"]\nanonymous = true\ncall_timeout = 2\n'
        '[endpoints.echo]\naddress = "tcp://127.0.0.1:5555"\nkind = "req"\ncodec = "json"\ntimeout = 1.5\n'
    )
    c = load_config(path)
    assert (c.listen, c.realm, c.allow, c.anonymous, c.call_timeout) == (["tcp:9000"], "r", ["tcp://127.0.0.1:*"], True, 2.0)
    echo = c.endpoints["echo"]
    assert (echo.address, echo.kind, echo.codec, echo.timeout, echo.alias) == ("tcp://127.0.0.1:5555", "req", "json", 1.5, "echo")


def test_parse_config_empty():
    """An empty configuration is the defaults."""
    assert parse_config({}).realm == "zmqwamp"


def test_shipped_deploy_example_parses():
    """examples/deploy/zmqwamp.toml stays a valid configuration."""

    c = load_config(ROOT / "examples/deploy/zmqwamp.toml")
    assert c.endpoints["orders"].kind == "req" and c.rules


@pytest.mark.parametrize(
    "text, message",
    [
        ("nope = 1", "nope: unknown option"),
        ("realm = 1", "realm: expected str"),
        ("call_timeout = -1", "call_timeout must be positive"),
        ("[endpoints.e]\nkind = 'req'", "'address' is required"),
        ("[endpoints.e]\naddress = 'tcp://h'", "expected tcp://host:port"),
        ("[endpoints.e]\naddress = 'tcp://h:1'\ncodec = 'xml'", "codec: must be one of"),
        ("[endpoints.e]\naddress = 'tcp://h:1'\nport = 1", "unknown key(s) port"),
        ('[endpoints."tcp://a:1"]\naddress = "tcp://h:1"', "cannot look like an address"),
    ],
)
def test_config_errors_name_the_key(tmp_path, text, message):
    """Each mistake (unknown key, wrong type, bad value, a bad alias) is a ConfigError naming the key."""
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert message in str(e.value)


def test_invalid_toml(tmp_path):
    """A file that is not TOML is a ConfigError saying so."""
    path = tmp_path / "c.toml"
    path.write_text("realm = ")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(path)


# -- limits ------------------------------------------------------------------------------------------------------------


def test_limits_in_config_file(tmp_path):
    """Every limit and slow-consumer key (an alias's own policy too) is read from the file; a bad value is a ConfigError."""
    from zmqwamp.service.config import ConfigError, load_config

    path = tmp_path / "c.toml"
    path.write_text(
        "max_calls_in_flight = 7\nmax_subscriptions = 8\nmax_calls_per_second = 9.5\nmax_sessions = 10\n"
        "max_sessions_per_peer = 11\nhandshake_timeout = 3\nping_interval = 4\nping_timeout = 5\n"
        'max_outgoing_buffer = 65536\nslow_consumer = "close"\n'
        "max_filter_length = 12\nmax_filters_per_endpoint = 13\nmax_endpoints_per_session = 14\n"
        "max_endpoints_per_peer = 15\nmax_zmq_sockets = 16\n"
        '[endpoints.feed]\naddress = "tcp://127.0.0.1:9000"\nkind = "sub"\nslow_consumer = "drop_newest"\n'
    )
    c = load_config(path)
    assert (c.max_calls_in_flight, c.max_subscriptions, c.max_calls_per_second) == (7, 8, 9.5)
    assert (c.max_sessions, c.max_sessions_per_peer, c.handshake_timeout) == (10, 11, 3.0)
    assert (c.ping_interval, c.ping_timeout, c.max_outgoing_buffer, c.slow_consumer) == (4.0, 5.0, 65536, "close")
    assert c.endpoints["feed"].slow_consumer == "drop_newest"
    assert (c.max_filter_length, c.max_filters_per_endpoint, c.max_endpoints_per_session) == (12, 13, 14)
    assert (c.max_endpoints_per_peer, c.max_zmq_sockets) == (15, 16)
    for bad in ("max_sessions = 0", "max_zmq_sockets = 0", "max_filter_length = -1", 'slow_consumer = "sometimes"', "max_outgoing_buffer = 10", "ping_timeout = -1",
                '[endpoints.feed]\naddress = "tcp://127.0.0.1:1"\nslow_consumer = "never"'):
        path.write_text(bad + "\n")
        with pytest.raises(ConfigError):
            load_config(path)


def test_many_peers_are_needed_to_fill_the_zmq_sockets():
    """Issue 21 item 12: with 128 per peer, four addresses (or one IPv6 client's /64, keyed apart before) used up the
    512 zmq sockets. Now a peer may open what one session may, and 16 peers are needed."""
    from zmqwamp.service.config import BridgeConfig

    config = BridgeConfig()
    assert config.max_endpoints_per_peer == config.max_endpoints_per_session
    assert config.max_zmq_sockets // config.max_endpoints_per_peer >= 16


# -- [[rules]] and the auth keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ("rules = 1", "expected an array of tables ([[rules]])"),
        ("[[rules]]\nauthid = 'a'", "rules[0]: 'endpoints' is required"),
        ("[[rules]]\nendpoints = []", "rules[0].endpoints: must not be empty"),
        ("[[rules]]\nendpoints = ['*']\nuser = 'a'", "rules[0]: unknown key(s) user"),
        ("[[rules]]\nendpoints = ['*']\nactions = ['publish']", "rules[0].actions: 'publish' matches none of call, subscribe"),
        ("[[rules]]\nendpoints = ['*']\nactions = ['call']\nfilters = ['x*']", "filters only apply to 'subscribe'"),
        ("[[rules]]\nendpoints = ['{user}*']", "rules[0].endpoints: unknown placeholder {user}"),
        ("[[rules]]\nendpoints = ['*']\nauthid = '{authid}'", "rules[0].authid: unknown placeholder {authid}"),
        ("[[rules]]\nendpoints = [1]", "rules[0].endpoints: expected a string or a list of strings"),
        ("[[rules]]\nendpoints = ['*']\n[[rules]]\nendpoints = ['*']\nrole = 5", "rules[1].role: expected a string"),
        ("origins = 5", "origins: expected a string or a list of strings"),
        ("login_delay = -1", "login_delay and login_penalty_max must not be negative"),
        ("login_penalty_max = 'x'", "login_penalty_max: expected float"),
    ],
)
def test_config_errors_name_the_rule_and_key(text, message):
    """Each mistake in the auth part of the config names the file, the rule index and the key."""
    import tomllib

    with pytest.raises(ConfigError) as e:
        parse_config(tomllib.loads(text), "z.toml")
    assert message in str(e.value) and str(e.value).startswith("z.toml: ")


# -- history aliases: their keys, and max_history_bytes ----------------------------------------------------------------


def alias(**keys) -> dict:
    return {"endpoints": {"ticks": {"address": "tcp://127.0.0.1:9000", "kind": "sub", **keys}}}


def test_history_keys_reach_the_endpoint_with_their_defaults():
    """history and keep_open reach the alias's Endpoint, history_bytes defaulting to DEFAULT_HISTORY_BYTES; without them, no history."""
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
    """A bad history key (not a sub alias, out of range, wrong type, without history) names the file, the alias and the key."""
    with pytest.raises(ConfigError) as e:
        parse_config(table, "bridge.toml")
    assert message in str(e.value) and "bridge.toml: endpoints." in str(e.value)


def test_the_sum_of_history_bytes_is_bounded_by_max_history_bytes():
    """The aliases' history_bytes may add up to max_history_bytes, not more: the error lists each one."""
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
