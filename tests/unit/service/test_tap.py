"""zmqwamp.service.tap: ``twistd zmqwamp``'s command line: every option, what it adds to or overrides in the TOML
file (``--config``), the checkers of ``--auth`` and of the file's ``auth`` (the same strcred factories), and its
errors.  A real bridge logging in with the file's checkers: tests/e2e/test_config_auth.py; the README's options table
against ``--help``: tests/e2e/test_operations.py.
"""

from __future__ import annotations

import pytest
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import IUsernameHashedPassword, IUsernamePassword
from twisted.python import usage

from zmqwamp import Bridge
from zmqwamp.auth.users import UsersFileChecker
from zmqwamp.service.config import BridgeConfig, ConfigError, load_config, parse_config
from zmqwamp.service.tap import Options


def test_defaults_are_safe():
    """With no options: listen on 127.0.0.1:8080 only, nothing allowed, no anonymous sessions."""
    options = Options()
    options.parseOptions([])
    c = options.config
    assert c.listen_endpoints == ["tcp:8080:interface=127.0.0.1"]
    assert c.allow == [] and c.anonymous is False and c.realm == "zmqwamp"


def test_cli_overrides_and_extends_config(tmp_path):
    """A flag overrides the file's value; --allow adds to the file's list, and --listen replaces it."""
    path = tmp_path / "c.toml"
    path.write_text('realm = "file"\nallow = ["ipc://*"]\nlisten = ["tcp:1"]\n')
    options = Options()
    options.parseOptions(["--config", str(path), "--realm", "cli", "--allow", "tcp://127.0.0.1:*", "--listen", "tcp:2", "--listen", "tcp:3"])
    c = options.config
    assert c.realm == "cli"
    assert c.allow == ["ipc://*", "tcp://127.0.0.1:*"]
    assert c.listen == ["tcp:2", "tcp:3"]


def test_bad_cli_values():
    """A value of the wrong type, or a --bridge-class that is not there, is a UsageError naming the option."""
    with pytest.raises(usage.UsageError, match="call-timeout"):
        Options().parseOptions(["--call-timeout", "soon"])
    with pytest.raises(usage.UsageError, match="bridge-class"):
        Options().parseOptions(["--bridge-class", "no.such.Thing"])


# -- limits ------------------------------------------------------------------------------------------------------------


def test_limit_options_on_the_command_line():
    """Every limit has its flag; a value that is not a number, not a choice, or not positive is a UsageError."""
    from twisted.python import usage

    from zmqwamp.service.tap import Options

    o = Options()
    o.parseOptions(["--max-calls-in-flight", "4", "--slow-consumer", "close", "--ping-timeout", "2.5"])
    assert (o.config.max_calls_in_flight, o.config.slow_consumer, o.config.ping_timeout) == (4, "close", 2.5)
    o = Options()
    o.parseOptions(["--max-filter-length", "64", "--max-endpoints-per-session", "8", "--max-zmq-sockets", "2000"])
    assert (o.config.max_filter_length, o.config.max_endpoints_per_session, o.config.max_zmq_sockets) == (64, 8, 2000)
    for bad in (["--max-sessions", "many"], ["--slow-consumer", "maybe"], ["--max-subscriptions", "0"]):
        with pytest.raises(usage.UsageError):
            Options().parseOptions(bad)


def test_new_limits_in_the_config_file_and_on_the_command_line(tmp_path):
    """max_message_fragments and the log-line rates: defaults, TOML keys and flags, each refusing what is not positive."""
    from twisted.python import usage

    from zmqwamp.service.config import ConfigError, load_config
    from zmqwamp.service.tap import Options

    defaults = BridgeConfig()
    assert (defaults.max_message_fragments, defaults.max_log_lines_per_second, defaults.max_log_lines_per_second_total) == (
        64, 1.0, 100.0
    )
    path = tmp_path / "c.toml"
    path.write_text("max_message_fragments = 8\nmax_log_lines_per_second = 0.5\nmax_log_lines_per_second_total = 20\n")
    c = load_config(path)
    assert (c.max_message_fragments, c.max_log_lines_per_second, c.max_log_lines_per_second_total) == (8, 0.5, 20.0)
    for bad in ("max_message_fragments = 0", "max_log_lines_per_second = 0", "max_log_lines_per_second_total = -1"):
        path.write_text(bad + "\n")
        with pytest.raises(ConfigError):
            load_config(path)
    o = Options()
    o.parseOptions(["--max-message-fragments", "3", "--max-log-lines-per-second", "2", "--max-log-lines-per-second-total", "7"])
    assert (o.config.max_message_fragments, o.config.max_log_lines_per_second, o.config.max_log_lines_per_second_total) == (
        3, 2.0, 7.0
    )
    with pytest.raises(usage.UsageError):
        Options().parseOptions(["--max-message-fragments", "0"])


def test_the_new_limits_as_options():
    """max_login_message_size and max_control_frames_per_second: defaults, TOML keys and flags, with their lower bounds."""
    defaults = BridgeConfig()
    assert (defaults.max_login_message_size, defaults.max_control_frames_per_second) == (16_384, 10.0)
    c = parse_config({"max_login_message_size": 8192, "max_control_frames_per_second": 2.5})
    assert (c.max_login_message_size, c.max_control_frames_per_second) == (8192, 2.5)
    for bad in ({"max_login_message_size": 1000}, {"max_control_frames_per_second": 0}):
        with pytest.raises(ConfigError):
            parse_config(bad)
    o = Options()
    o.parseOptions(["--max-login-message-size", "32768", "--max-control-frames-per-second", "4"])
    assert (o.config.max_login_message_size, o.config.max_control_frames_per_second) == (32768, 4.0)
    with pytest.raises(usage.UsageError):
        Options().parseOptions(["--max-login-message-size", "10"])


def test_max_pending_logins_option(made):
    """A TOML key and a CLI flag (which wins), positive; it reaches the bridge's throttle with the login deadline."""
    assert parse_config({"max_pending_logins": 5}).max_pending_logins == 5
    with pytest.raises(ConfigError, match="max_pending_logins must be positive"):
        parse_config({"max_pending_logins": 0})
    options = Options()
    options.parseOptions(["--max-pending-logins", "7", "--handshake-timeout", "6"])
    assert options.config.max_pending_logins == 7
    world, _ = made(Bridge(options.config))
    throttle = world.logins.throttle
    assert (throttle.max_queue, throttle.login_timeout, throttle.budget) == (7, 6.0, 3.0)


# -- who the client is -------------------------------------------------------------------------------------------------


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
    """A bad trusted proxy, forwarded header or allowed host is an error naming its key, in the file and as a flag; a string is a list of one."""
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


# -- checkers: --auth and the file's auth ------------------------------------------------------------------------------


def options_for(tmp_path, text: str, *argv: str) -> Options:
    path = tmp_path / "z.toml"
    path.write_text(text)
    options = Options()
    options.parseOptions(["--config", str(path), *argv])
    return options


def test_auth_and_origin_options(tmp_path):
    """--auth (strcred, repeatable) collects checkers; --origin adds to the config file's origins."""
    config = tmp_path / "c.toml"
    config.write_text('origins = ["https://a.example"]\n')
    options = Options()
    options.parseOptions(
        ["--config", str(config), "--auth", "memory:alice:pw", "--auth", "file:/dev/null", "--origin", "https://b.example"]
    )
    assert len(options["credCheckers"]) == 2
    assert set(options["credInterfaces"]) == {IUsernamePassword, IUsernameHashedPassword}
    assert options.config.origins == ["https://a.example", "https://b.example"]


def test_auth_anonymous_checker_is_refused():
    """--auth anonymous is not supported: anonymous access is --anonymous."""
    with pytest.raises(usage.UsageError, match="not supported"):
        Options().parseOptions(["--auth", "anonymous"])


def test_unknown_auth_type():
    """--auth with a checker type no plugin provides is a UsageError."""
    with pytest.raises(usage.UsageError, match="not recognized"):
        Options().parseOptions(["--auth", "nosuch:x"])


def test_file_auth_makes_the_same_checkers_as_the_command_line(tmp_path):
    """auth = [...] uses the same strcred factories (plugins included); --auth adds after the file's."""
    users = tmp_path / "users"
    users.write_text("")
    options = options_for(
        tmp_path, f'auth = ["memory:alice:pw", "zmqwamp-users:{users}"]\nanonymous = false\n', "--auth", "memory:bob:pw2"
    )
    checkers = options["credCheckers"]
    assert [type(c) for c in checkers] == [
        InMemoryUsernamePasswordDatabaseDontUse, UsersFileChecker, InMemoryUsernamePasswordDatabaseDontUse,
    ]
    assert checkers[0].users == {"alice": "pw"} and checkers[2].users == {"bob": "pw2"}
    assert options.config.anonymous is False and options.config.auth[0] == "memory:alice:pw"


def test_a_single_string_is_a_list_of_one(tmp_path):
    """The file's auth may be a single string."""
    assert len(options_for(tmp_path, 'auth = "memory:alice:pw"\n')["credCheckers"]) == 1


@pytest.mark.parametrize(
    "entry, message",
    [
        ('"nosuch:alice:topsecret"', "auth[0] (nosuch): Auth plugin not recognized: nosuch"),
        ("1", "auth: expected a string or a list of strings"),
    ],
)
def test_bad_auth_entries_name_the_file_and_never_the_secret(tmp_path, entry, message):
    """A bad auth entry is a UsageError naming the file and the entry, never the secret in it."""
    with pytest.raises(usage.UsageError) as e:
        options_for(tmp_path, f"auth = [{entry}]\n")
    assert message in str(e.value) and "z.toml" in str(e.value)
    assert "topsecret" not in str(e.value)
