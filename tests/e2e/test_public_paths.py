"""The public paths outlive the package layout (issue 22, item 5): the names ``zmqwamp`` exports, the command-line
entry points and the twistd plugins, each run as a user runs it (a fresh process, outside the checkout).
Elsewhere: ``python -m zmqwamp.users`` in tests/e2e/test_users.py, examples/custom_bridge.py in tests/e2e/test_auth.py,
the systemd unit and the Dockerfile in tests/deploy/, every path and command the docs name in tests/unit/test_docs.py."""

from __future__ import annotations

import subprocess
import sys
import tempfile

from harness import BIN, start_bridge


def python(*args: str, **kw) -> subprocess.CompletedProcess:
    """``python ARGS`` in a fresh process, away from the checkout (the installed package is what answers)."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60, cwd=tempfile.gettempdir(), **kw)


def twistd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "twistd"), "-n", "--pidfile=", "zmqwamp", *args],
        capture_output=True, text=True, timeout=60, cwd=tempfile.gettempdir(),
    )


LOADED = "import sys; print(sorted({m.split('.')[0] for m in sys.modules} & {'twisted', 'autobahn', 'zmq', 'txzmq'}))"


def test_the_public_names_import_from_zmqwamp():
    """``from zmqwamp import Bridge, BridgeConfig, Endpoint, IZmqAvatar, __version__`` gives the classes of the rooms
    (the same objects), and ``zmqwamp.Bridge`` works; importing ``zmqwamp`` alone loads neither Twisted, Autobahn
    nor ZeroMQ (``zmqwamp --version`` and the twistd plugin scan stay light)."""
    code = (
        "import zmqwamp\n"
        "from zmqwamp import Bridge, BridgeConfig, Endpoint, IZmqAvatar, __version__\n"
        "from zmqwamp.auth.cred import IZmqAvatar as I\n"
        "from zmqwamp.service.bridge import Bridge as B\n"
        "from zmqwamp.service.config import BridgeConfig as C\n"
        "from zmqwamp.upstream.endpoints import Endpoint as E\n"
        "assert (Bridge, BridgeConfig, Endpoint, IZmqAvatar) == (B, C, E, I) and zmqwamp.Bridge is B\n"
        "assert sorted(zmqwamp.__all__) == ['Bridge', 'BridgeConfig', 'Endpoint', 'IZmqAvatar', '__version__']\n"
        "assert __version__ and __version__ != '0+unknown'\n"
        "print('ok')\n"
    )
    out = python("-c", code)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    light = python("-c", "import zmqwamp; " + LOADED)
    assert light.stdout.strip() == "[]", light.stdout + light.stderr


def test_python_m_zmqwamp_healthcheck(tmp_path):
    """``python -m zmqwamp.healthcheck CONFIG``: 0 while the configured bridge answers /healthz, 1 with one line once
    it is gone, 2 with its usage without a CONFIG, 0 with its usage for --help; it loads neither Autobahn nor ZeroMQ."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    listen = f"tcp:{port}:interface=127.0.0.1"
    config = tmp_path / "zmqwamp.toml"
    config.write_text(f'listen = ["{listen}"]\nanonymous = true\n')
    usage = python("-m", "zmqwamp.healthcheck")
    assert usage.returncode == 2 and usage.stderr.startswith("usage: python -m zmqwamp.healthcheck"), usage.stderr
    assert "CONFIG" in usage.stderr
    helped = python("-m", "zmqwamp.healthcheck", "--help")  # read as a config path before issue 25
    assert helped.returncode == 0 and helped.stdout.startswith("usage: python -m zmqwamp.healthcheck"), helped.stderr
    assert "exit status: 0 healthy" in helped.stdout
    proc, _ = start_bridge("--config", str(config), listen=listen)
    try:
        up = python("-m", "zmqwamp.healthcheck", str(config))
        assert up.returncode == 0, up.stderr
    finally:
        assert proc.stop() == 0
    down = python("-m", "zmqwamp.healthcheck", str(config))
    assert down.returncode == 1 and down.stderr.startswith("unhealthy:"), down.stderr
    light = python("-c", "import zmqwamp.healthcheck; " + LOADED)
    assert light.stdout.strip() == "['twisted']", light.stdout + light.stderr


def test_the_twistd_plugin_and_the_console_script_answer_help():
    """``twistd -n zmqwamp --help`` and ``zmqwamp --help`` list the options; ``python -m zmqwamp --version``."""
    for out in (twistd("--help"), subprocess.run([str(BIN / "zmqwamp"), "--help"], capture_output=True, text=True, timeout=60)):
        assert out.returncode == 0 and "--allow=" in out.stdout and "--config=" in out.stdout, out.stderr
    version = python("-m", "zmqwamp", "--version")
    assert version.returncode == 0 and version.stdout.startswith("zmqwamp "), version.stderr


def test_the_checker_plugins_answer_help_auth_type():
    """``--help-auth-type zmqwamp-users`` and ``--help-auth-type jwt`` describe our two checker plugins."""
    users = twistd("--help-auth-type", "zmqwamp-users")
    assert users.returncode == 0 and "PATH of a users file (python -m zmqwamp.users add PATH AUTHID)" in users.stdout, users.stderr
    jwt = twistd("--help-auth-type", "jwt")
    assert jwt.returncode == 0 and "A Cred checker for JSON Web Tokens" in jwt.stdout, jwt.stderr
