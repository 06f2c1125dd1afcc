"""Shared helpers for the bench: its places, latency histograms, /proc readings, child processes.

Used by the orchestrator (run.py and the modules it wires) and the load generator
(loadgen.py); standard library only, so it also runs inside the Crossbar virtualenv
if needed.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

# -- the orchestrator's places and console ---------------------------------------
BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
REALM = "zmqwamp"


class BenchTimeout(Exception):
    """--max-minutes reached (raised by run.py's SIGALRM handler): no section may swallow it."""


def say(*parts) -> None:
    print(*parts, flush=True)


# -- latency histogram ---------------------------------------------------------
# Log-scale buckets, 2% wide: mergeable across processes, cheap to record.
_SCALE = 50.0  # buckets per e-fold: exp(1/50) = 1.0202


def hist_add(hist: dict, seconds: float) -> None:
    us = seconds * 1e6
    key = int(math.log(us) * _SCALE) if us > 1.0 else 0
    hist[key] = hist.get(key, 0) + 1


def hist_merge(into: dict, other: dict) -> dict:
    for key, count in other.items():
        key = int(key)
        into[key] = into.get(key, 0) + count
    return into


def hist_count(hist: dict) -> int:
    return sum(hist.values())


def hist_percentile(hist: dict, q: float) -> float | None:
    """The q-quantile (0..1) in milliseconds, or None for an empty histogram."""
    total = hist_count(hist)
    if not total:
        return None
    rank = q * total
    seen = 0
    for key in sorted(int(k) for k in hist):
        seen += hist[key] if key in hist else hist[str(key)]
        if seen >= rank:
            return math.exp((key + 0.5) / _SCALE) / 1000.0 if key else 0.001
    return math.exp((max(int(k) for k in hist) + 0.5) / _SCALE) / 1000.0


# -- /proc ---------------------------------------------------------------------
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'
    return data[data.rindex(")") + 2 :].split()


def proc_children(pid: int) -> list[int]:
    """All descendants of ``pid`` (scan of /proc)."""
    parents: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = _stat_fields(int(name))
        if fields is None:
            continue
        parents.setdefault(int(fields[1]), []).append(int(name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def proc_tree(pid: int) -> list[int]:
    return [pid, *proc_children(pid)]


def cpu_seconds(pids: list[int]) -> float:
    """user+system CPU seconds consumed so far by ``pids`` (dead ones count 0)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _CLK_TCK


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * _PAGE
        except OSError:
            pass
    return total


class CpuMeter:
    """CPU% of a fixed set of processes between start() and stop()."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = list(pids)

    def start(self) -> None:
        self._c0, self._t0 = cpu_seconds(self.pids), time.monotonic()

    def stop(self) -> float:
        dt = time.monotonic() - self._t0
        return 100.0 * (cpu_seconds(self.pids) - self._c0) / dt if dt > 0 else 0.0


def machine_cpu_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return sum(parts) - idle, sum(parts)


# -- child processes -----------------------------------------------------------
class Child:
    """A child process with its output collected line by line; stopped by PID."""

    def __init__(self, name: str, argv: list[str], env: dict | None = None, cwd: str | None = None,
                 stdin: bool = False, log=None) -> None:
        self.name = name
        self.argv = argv
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._log = log
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            cwd=cwd,
            start_new_session=True,  # our Ctrl-C does not hit it; we stop it by PID
        )
        self.pid = self.proc.pid
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            if self._log is not None:
                self._log.write(f"[{self.name}] {line}\n")
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, line: str) -> None:
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass

    def wait_for(self, pattern: str, timeout: float, start: int = 0) -> tuple[re.Match, int]:
        """First line at index >= start matching ``pattern``; (match, index)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            i = start
            while True:
                while i < len(self.lines):
                    match = rx.search(self.lines[i])
                    if match:
                        return match, i
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.name}: no line matching {pattern!r} within {timeout:g}s; last output:\n"
                                       + "\n".join(self.lines[-15:]))
                if self.proc.poll() is not None:
                    self._cond.wait(0.2)  # let the pump finish reading
                    if i >= len(self.lines):
                        raise RuntimeError(f"{self.name} exited ({self.proc.returncode}) before printing {pattern!r}; last output:\n"
                                           + "\n".join(self.lines[-15:]))
                    continue
                self._cond.wait(min(left, 0.2))

    def result(self, timeout: float, start: int = 0) -> dict:
        """The JSON after the next 'RESULT ' line."""
        match, _ = self.wait_for(r"^RESULT (.*)$", timeout, start)
        return json.loads(match.group(1))

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
        """Signal this PID (and, if it outlives that, SIGKILL it and its descendants, by PID)."""
        if self.proc.poll() is not None:
            return
        descendants = proc_children(self.pid)
        try:
            self.proc.send_signal(sig)
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        for pid in descendants:
            if _stat_fields(pid) is not None:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the fan-out message ---------------------------------------------------------
_PAD = "x" * 48


def event_payload(step: int, seq: int, w0: float, w1: float) -> dict:
    """What every publisher sends (as JSON on zmq, as EVENT args[0] on WAMP)."""
    return {"s": step, "n": seq, "t": time.monotonic(), "w0": w0, "w1": w1, "pad": _PAD}


def paced(rate: float, duration: float, emit, tick=None) -> int:
    """Call ``emit(seq)`` ``rate`` times a second for ``duration`` seconds (catching up
    after late wakeups, never more than rate*duration calls); return the count."""
    total = int(rate * duration)
    start = time.monotonic()
    sent = 0
    while sent < total:
        now = time.monotonic()
        if now - start > duration + 5.0:
            break  # hopelessly behind: stop, the step reports what it got
        due = min(total, int((now - start) * rate) + 1)
        while sent < due:
            emit(sent)
            sent += 1
        next_due = start + sent / rate
        delay = next_due - time.monotonic()
        if delay > 0:
            time.sleep(min(delay, 0.05))
    return sent
