"""zmqwamp.service.healthcheck: where the health check connects for each kind of listen description."""

from __future__ import annotations

import pytest

from zmqwamp.service import descriptions
from zmqwamp.service.healthcheck import EXIT_STATUS, main, target

TARGETS = [
    ("tcp:8080", ("tcp", ("127.0.0.1", 8080), False)),
    ("tcp:port=8081:interface=0.0.0.0", ("tcp", ("127.0.0.1", 8081), False)),
    ("haproxy:tcp:8082:interface=10.0.0.5", ("tcp", ("10.0.0.5", 8082), True)),
    ("tcp6:8083:interface=\\:\\:", ("tcp6", ("::1", 8083), False)),
    ("ssl:8443:privateKey=/nonexistent/key.pem", ("ssl", ("127.0.0.1", 8443), False)),
    ("unix:/run/zmqwamp/bridge.sock:mode=660", ("unix", "/run/zmqwamp/bridge.sock", False)),
    ("unix:address=/tmp/a\\:b.sock", ("unix", "/tmp/a:b.sock", False)),
]


@pytest.fixture(params=["twisted's parser", "our copy"])
def parser(request, monkeypatch):
    """Each description read by Twisted's private parser, and by the fallback (zmqwamp.internals)."""
    if request.param == "our copy":
        monkeypatch.setattr(descriptions, "_parse", descriptions.split)
    return request.param


@pytest.mark.parametrize("description, expected", TARGETS)
def test_where_the_check_connects(parser, description, expected):
    """tcp, tcp6 (it failed with an AttributeError when Twisted's _parseServer was used), ssl (its key is not
    read), unix, and a haproxy: listener (a PROXY header first): the same with either parser."""
    assert target(description) == expected


@pytest.mark.parametrize("description", ["systemd:domain=INET:index=0", "tcp:", "tcp:port=http", "tcp"])
def test_what_cannot_be_checked_is_a_value_error(parser, description):
    """A kind the check cannot connect to, or no port: ValueError (one line on stderr), not a traceback."""
    with pytest.raises(ValueError):
        target(description)


def test_help_prints_the_usage_and_exits_0(capsys):
    """``--help`` (and ``-h``) print the usage, the CONFIG it reads and the exit statuses: 0, not "unhealthy:
    --help: cannot read" (it was read as a config path)."""
    for flag in ("--help", "-h"):
        assert main([flag]) == 0
        out, err = capsys.readouterr()
        assert out.startswith("usage: python -m zmqwamp.healthcheck [-h] [--timeout SECONDS] CONFIG") and not err
        assert "metrics_listen" in out and EXIT_STATUS.split(";")[0] in out.replace("\n", " ")


@pytest.mark.parametrize("argv", [[], ["a.toml", "b.toml"], ["--timeout", "0", "a.toml"], ["--timeout", "x", "a.toml"], ["--bogus", "a.toml"]])
def test_usage_errors_exit_2(capsys, argv):
    """No CONFIG, two, a timeout that is not a positive number, an unknown option: exit 2 with the usage on stderr."""
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert not out and err.startswith("usage: python -m zmqwamp.healthcheck")


def test_an_unreadable_config_is_unhealthy_with_one_line(tmp_path, capsys):
    """A config that cannot be read: exit 1 and one line on stderr saying so."""
    assert main([str(tmp_path / "missing.toml")]) == 1
    out, err = capsys.readouterr()
    assert not out and err.startswith("unhealthy: ") and err.count("\n") == 1
