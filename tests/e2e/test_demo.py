"""`make demo`: Ctrl-C stops everything quietly (exit 0); a port in use is one clear line."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys

import pytest

from harness import ROOT, Process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_args() -> list[str]:
    return [f"--listen=tcp:{free_port()}:interface=127.0.0.1", f"--rep=tcp://127.0.0.1:{free_port()}",
            f"--pub=tcp://127.0.0.1:{free_port()}"]


def assert_quiet(output: str) -> None:
    for bad in ("Traceback", "KeyboardInterrupt", "ReactorNotRunning", "Error", "***"):
        assert bad not in output, f"{bad!r} in the demo's output:\n{output[-3000:]}"


def wait_ready(proc: Process) -> None:
    proc.wait_for(r"starting on \d+")
    proc.wait_for(r"echo REP bound to")
    proc.wait_for(r"counter PUB bound to")
    proc.wait_for(r"Ctrl-C stops everything")


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_ctrl_c_on_make_demo_stops_everything_quietly():
    """Ctrl-C in a terminal: SIGINT to make's whole process group (make, demo.py, REP, PUB, twistd)."""
    listen, rep, pub = (a.split("=", 1)[1] for a in demo_args())
    # -o: the venv running these tests counts as installed (make would otherwise reinstall it when
    # pyproject.toml is newer than its stamp)
    proc = Process(["make", "--no-print-directory", "-o", ".venv/.installed", "demo", f"DEMO_LISTEN={listen}",
                    f"DEMO_REP={rep}", f"DEMO_PUB={pub}"], cwd=str(ROOT), new_session=True)
    try:
        wait_ready(proc)
        os.killpg(proc.proc.pid, signal.SIGINT)
        code = proc.proc.wait(30)
    finally:
        proc.stop()
    # make itself got the SIGINT too: it exits by that signal, as after any Ctrl-C, but reports no error
    assert code in (0, -signal.SIGINT), (code, proc.output[-3000:])
    assert_quiet(proc.output)


def test_sigint_to_demo_alone_stops_its_children_and_exits_0():
    proc = Process([sys.executable, str(ROOT / "scripts" / "demo.py"), *demo_args()], new_session=True)
    try:
        wait_ready(proc)
        proc.proc.send_signal(signal.SIGINT)
        assert proc.proc.wait(30) == 0
    finally:
        proc.stop()
    assert_quiet(proc.output)
    proc.wait_for("Server Shut Down")


@pytest.mark.parametrize("which", ["listen", "rep"])
def test_port_in_use_is_one_clear_line(which):
    args = demo_args()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        if which == "listen":
            args[0] = f"--listen=tcp:{port}:interface=127.0.0.1"
        else:
            args[1] = f"--rep=tcp://127.0.0.1:{port}"
        proc = Process([sys.executable, str(ROOT / "scripts" / "demo.py"), *args])
        code = proc.proc.wait(30)
        proc.stop()
    assert code == 1
    assert proc.lines == [proc.lines[0]] and f"port already in use: 127.0.0.1:{port}" in proc.lines[0], proc.output
