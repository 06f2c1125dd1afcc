"""examples/deploy/zmqwamp.service: valid (`systemd-analyze verify`), sandboxed (`systemd-analyze security`
under 5, "OK"), and its command line works with the shipped configuration."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from zmqwamp.service.config import load_config
from zmqwamp.service.tap import Options

from harness import BIN, ROOT

DEPLOY = ROOT / "examples" / "deploy"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def unit_for_this_machine(tmp_path: Path) -> Path:
    """The shipped unit with ExecStart's program where it is here (verify checks that it exists)."""
    text = (DEPLOY / "zmqwamp.service").read_text()
    assert text.count("/opt/zmqwamp/venv/bin/zmqwamp") == 1
    path = tmp_path / "zmqwamp.service"
    path.write_text(text.replace("/opt/zmqwamp/venv/bin/zmqwamp", str(BIN / "zmqwamp")))
    return path


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z]+)=(.*)$", line)
        if m:
            out.setdefault(m.group(1), []).append(m.group(2))
    return out


@needs_analyze
def test_systemd_analyze_verify_is_clean(tmp_path):
    out = subprocess.run([ANALYZE, "verify", str(unit_for_this_machine(tmp_path))], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout + out.stderr == "", out.stdout + out.stderr


@needs_analyze
def test_systemd_analyze_security_rates_it_ok(tmp_path):
    out = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(unit_for_this_machine(tmp_path))],
        capture_output=True, text=True, timeout=60,
    )
    m = re.search(r"Overall exposure level for zmqwamp\.service: ([\d.]+) (\w+)", out.stdout)
    assert m, out.stdout[-2000:] + out.stderr
    print(f"\nsystemd-analyze security: {m.group(1)} {m.group(2)}")
    assert float(m.group(1)) < 5.0 and m.group(2) == "OK", m.group(0)


def test_unit_stop_and_tmp_settings():
    """SIGTERM to the supervisor only (it drains its workers), a stop timeout past the drain, ipc:///tmp visible."""
    d = directives((DEPLOY / "zmqwamp.service").read_text())
    assert d["KillMode"] == ["mixed"] and d["KillSignal"] == ["SIGTERM"]
    config = load_config(DEPLOY / "zmqwamp.toml")
    assert float(d["TimeoutStopSec"][0]) >= config.drain_time + 3 + 5
    assert d.get("PrivateTmp", ["no"]) == ["no"]
    assert d["User"] == ["zmqwamp"]
    assert "zmqwamp" in (DEPLOY / "zmqwamp.sysusers.conf").read_text().split()


def test_exec_start_parses_with_the_shipped_config(tmp_path):
    """ExecStart's arguments with examples/deploy/zmqwamp.toml (its paths pointed at temp files) are accepted:
    the same checks twistd makes before it starts (endpoints, auth checkers, --workers)."""
    users = tmp_path / "users"
    subprocess.run([str(BIN / "python"), "-m", "zmqwamp.users", "add", str(users), "alice", "--password-stdin"],
                   input="pw\n", text=True, check=True, capture_output=True, timeout=60)
    config = tmp_path / "zmqwamp.toml"
    config.write_text((DEPLOY / "zmqwamp.toml").read_text().replace("/etc/zmqwamp/users", str(users)))
    [exec_start] = directives((DEPLOY / "zmqwamp.service").read_text())["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0] == "/opt/zmqwamp/venv/bin/zmqwamp"
    args = [str(config) if a == "/etc/zmqwamp/zmqwamp.toml" else a for a in argv[1:]]
    options = Options()
    options.parseOptions(args)
    assert options["workers"] == 2 and len(options["credCheckers"]) == 1
    assert options.config.static is False and options.config.anonymous is False
