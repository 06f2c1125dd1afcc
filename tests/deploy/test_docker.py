"""examples/deploy/Dockerfile without a Docker engine: its build context, its config, its HEALTHCHECK."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from zmqwamp.service.config import load_config
from zmqwamp.service.tap import Options

from harness import ROOT, start_bridge, start_rep
from probes import healthz
from waiting import eventually

DEPLOY = ROOT / "examples" / "deploy"
DOCKERFILE = (DEPLOY / "Dockerfile").read_text()


def _pattern(glob: str) -> re.Pattern:
    """A .dockerignore pattern (Go filepath.Match plus Docker's **) as a regex over a relative path."""
    out = ""
    i = 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif glob.startswith("**", i):
            out += ".*"
            i += 2
        elif glob[i] == "*":
            out += "[^/]*"
            i += 1
        elif glob[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(glob[i])
            i += 1
    return re.compile(out + r"\Z")


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker excludes a path when a pattern matches it or one of its parent directories (no ! rules here)."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    return any(p.match(c) for p in map(_pattern, patterns) for c in candidates)


def dockerignore() -> list[str]:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [line.rstrip("/") for line in lines if line and not line.startswith("#")]
    assert not any(p.startswith("!") for p in patterns), "the matcher here does not handle ! rules"
    return patterns


def test_dockerignore_keeps_the_context_to_the_sources():
    patterns = dockerignore()
    for path in (".git/HEAD", ".venv/bin/python", ".venv-lowest/bin/python", "js-client/node_modules/ws/index.js", "tests/js/node_modules/a.js",
                 "build/lib/zmqwamp/removed.py", "dist/zmqwamp-0.1.0-py3-none-any.whl", "zmqwamp.egg-info/PKG-INFO",
                 "zmqwamp/__pycache__/bridge.cpython-311.pyc", "js-client/dist/zmqwamp.js",
                 "twisted/plugins/dropin.cache", "test-artifacts/demo-page.png"):
        assert ignored(path, patterns), f"{path} would be sent to the Docker build"
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True, check=True).stdout.split()
    needed = [p for p in tracked if p.startswith(("zmqwamp/", "twisted/plugins/"))]
    needed += ["pyproject.toml", "setup.py", "README.md", "LICENSE", "examples/deploy/docker.toml"]
    assert len(needed) > 20
    for path in needed:
        assert not ignored(path, patterns), f"{path} is needed to build the image but .dockerignore drops it"


def test_dockerfile_copies_what_exists_and_documents_the_stop_grace():
    for source in re.findall(r"^COPY (?!--from)(\S+) ", DOCKERFILE, re.M):
        assert source == "." or (ROOT / source).exists(), source
    config = load_config(DEPLOY / "docker.toml")
    grace = int(re.search(r"--stop-timeout (\d+)", DOCKERFILE).group(1))
    assert grace >= config.drain_time + 3 + 5
    assert f"stop_grace_period: {grace}s" in DOCKERFILE
    assert "getPlugins(IPlugin)" in DOCKERFILE  # the plugin cache is built in the image
    assert re.search(r"^USER zmqwamp$", DOCKERFILE, re.M)


def _exec_form(instruction: str) -> list[str]:
    m = re.search(rf"^{instruction} (\[.*\])$", DOCKERFILE, re.M)
    return json.loads(m.group(1))


def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    subprocess.run([sys.executable, "-m", "zmqwamp.users", "add", str(path), "alice", "--password-stdin"],
                   input="pw\n", text=True, check=True, capture_output=True, timeout=60)
    return path


def test_cmd_and_its_config_are_accepted(tmp_path):
    """ENTRYPOINT + CMD with the image's config (users file path pointed at a temp file) pass twistd's checks;
    the config is a production one: no demo page, no anonymous sessions, logins from the users file."""
    assert _exec_form("ENTRYPOINT") == ["zmqwamp"]
    args = _exec_form("CMD")
    config = tmp_path / "zmqwamp.toml"
    config.write_text((DEPLOY / "docker.toml").read_text().replace("/etc/zmqwamp/users", str(users_file(tmp_path))))
    options = Options()
    options.parseOptions([str(config) if a == "/etc/zmqwamp/zmqwamp.toml" else a for a in args])
    c = options.config
    assert c.static is False and c.anonymous is False and len(options["credCheckers"]) == 1
    assert c.listen == ["tcp:8080:interface=0.0.0.0"] and c.log_format == "json"


def _healthcheck(config: Path) -> subprocess.CompletedProcess:
    argv = _exec_form("HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \\\\\n  CMD")
    assert argv[:3] == ["python", "-m", "zmqwamp.healthcheck"]
    return subprocess.run([sys.executable, *argv[1:-1], str(config)], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("kind", ["tcp", "haproxy:tcp"])
def test_healthcheck_follows_the_configured_port(tmp_path, kind):
    """The HEALTHCHECK command asks the port the config names (plain or PROXY protocol listener):
    healthy while serving, unhealthy (one line) while draining and once stopped."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    slow, slow_addr = start_rep(delay=4.0)
    config = tmp_path / "zmqwamp.toml"
    listen = f"{kind}:{port}:interface=127.0.0.1"
    config.write_text(
        (DEPLOY / "docker.toml").read_text()
        .replace("tcp:8080:interface=0.0.0.0", listen)
        .replace("/etc/zmqwamp/users", str(users_file(tmp_path)))
        .replace("anonymous = false", "anonymous = true")
        .replace("allow = []", f'allow = ["{slow_addr}"]')
    )
    proc, url = start_bridge("--config", str(config), "--drain-time", "8", listen=listen)
    try:
        ok = _healthcheck(config)
        assert ok.returncode == 0, ok.stderr
        if kind == "tcp":  # a call in flight keeps the bridge draining for ~4 s
            from wampclient import connect

            async def drain():
                s = await connect(url)
                call = asyncio.ensure_future(s.call(slow_addr, "x"))
                await eventually(lambda: healthz(url)["calls_in_flight"] == 1, what="the call in flight", blocking=True)
                proc.proc.send_signal(signal.SIGTERM)
                await asyncio.get_running_loop().run_in_executor(None, lambda: proc.wait_for("stopping: draining"))
                draining = await asyncio.get_running_loop().run_in_executor(None, _healthcheck, config)
                assert await call == "got this x"
                return draining

            draining = asyncio.run(asyncio.wait_for(drain(), 30))
            assert draining.returncode == 1 and "503" in draining.stderr, draining.stderr
            assert proc.proc.wait(20) == 0
        else:
            assert proc.stop() == 0
        down = _healthcheck(config)
        assert down.returncode == 1 and len(down.stderr.strip().splitlines()) == 1, down.stderr
        assert "unhealthy" in down.stderr
    finally:
        proc.stop()
        slow.stop()
