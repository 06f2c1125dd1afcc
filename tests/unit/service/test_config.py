"""TOML configuration and its merge with the command line."""

import pytest
from twisted.python import usage

from zmqwamp.service.config import ConfigError, load_config, parse_config
from zmqwamp.service.tap import Options

from harness import ROOT


def test_full_config(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        'listen = "tcp:9000"\nrealm = "r"\nallow = ["tcp://127.0.0.1:*"]\nanonymous = true\ncall_timeout = 2\n'
        '[endpoints.echo]\naddress = "tcp://127.0.0.1:5555"\nkind = "req"\ncodec = "json"\ntimeout = 1.5\n'
    )
    c = load_config(path)
    assert (c.listen, c.realm, c.allow, c.anonymous, c.call_timeout) == (["tcp:9000"], "r", ["tcp://127.0.0.1:*"], True, 2.0)
    echo = c.endpoints["echo"]
    assert (echo.address, echo.kind, echo.codec, echo.timeout, echo.alias) == ("tcp://127.0.0.1:5555", "req", "json", 1.5, "echo")


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
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert message in str(e.value)


def test_invalid_toml(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("realm = ")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(path)


def test_cli_overrides_and_extends_config(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('realm = "file"\nallow = ["ipc://*"]\nlisten = ["tcp:1"]\n')
    options = Options()
    options.parseOptions(["--config", str(path), "--realm", "cli", "--allow", "tcp://127.0.0.1:*", "--listen", "tcp:2", "--listen", "tcp:3"])
    c = options.config
    assert c.realm == "cli"
    assert c.allow == ["ipc://*", "tcp://127.0.0.1:*"]
    assert c.listen == ["tcp:2", "tcp:3"]


def test_defaults_are_safe():
    options = Options()
    options.parseOptions([])
    c = options.config
    assert c.listen_endpoints == ["tcp:8080:interface=127.0.0.1"]
    assert c.allow == [] and c.anonymous is False and c.realm == "zmqwamp"


def test_bad_cli_values():
    with pytest.raises(usage.UsageError, match="call-timeout"):
        Options().parseOptions(["--call-timeout", "soon"])
    with pytest.raises(usage.UsageError, match="bridge-class"):
        Options().parseOptions(["--bridge-class", "no.such.Thing"])


def test_parse_config_empty():
    assert parse_config({}).realm == "zmqwamp"


def test_shipped_deploy_example_parses():
    """examples/deploy/zmqwamp.toml stays a valid configuration."""

    c = load_config(ROOT / "examples/deploy/zmqwamp.toml")
    assert c.endpoints["orders"].kind == "req" and c.rules
