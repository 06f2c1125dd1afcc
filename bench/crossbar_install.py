"""The bench's tool virtualenv, bench/.crossbar-venv (gitignored; not a project dependency):
Crossbar for the anchor target, installed on first use, and py-spy for --profile."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from common import BENCH, RESULTS, ROOT, say

CROSSBAR_VERSION = os.environ.get("BENCH_CROSSBAR_VERSION", "26.10.1")
CROSSBAR_VENV = BENCH / ".crossbar-venv"


def ensure_crossbar() -> Path:
    """The crossbar executable; installs Crossbar (and pyzmq, for the forwarder) first, once per version."""
    exe = CROSSBAR_VENV / "bin" / "crossbar"
    stamp = CROSSBAR_VENV / f".installed-{CROSSBAR_VERSION}"
    if stamp.exists() and exe.exists():
        return exe
    say(f"installing Crossbar {CROSSBAR_VERSION} into {CROSSBAR_VENV.relative_to(ROOT)} (once; not a project dependency) ...")
    with open(RESULTS / "crossbar-install.log", "w") as log:
        steps = [
            [sys.executable, "-m", "venv", "--clear", str(CROSSBAR_VENV)],
            [str(CROSSBAR_VENV / "bin/pip"), "install", "-q", "--upgrade", "pip"],
            [str(CROSSBAR_VENV / "bin/pip"), "install", "-q", f"crossbar=={CROSSBAR_VERSION}", "pyzmq"],
            [str(exe), "version"],
        ]
        for argv in steps:
            rc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, timeout=1200).returncode
            if rc != 0:
                raise RuntimeError(f"{' '.join(argv)} failed ({rc}); see {log.name}")
    stamp.touch()
    return exe


def ensure_pyspy() -> Path | None:
    """py-spy in the bench's tool virtualenv (the Crossbar one), installed on first --profile."""
    exe = CROSSBAR_VENV / "bin" / "py-spy"
    if exe.exists():
        return exe
    pip = CROSSBAR_VENV / "bin" / "pip"
    if not pip.exists():
        return None
    with open(RESULTS / "pyspy-install.log", "w") as log:
        subprocess.run([str(pip), "install", "-q", "py-spy"], stdout=log, stderr=subprocess.STDOUT, timeout=600)
    return exe if exe.exists() else None
