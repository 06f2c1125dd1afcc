"""CPU over a measuring window, per group of processes and for the whole machine, and who was the bottleneck."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from common import CpuMeter, machine_cpu_busy

BUSY = 85.0  # % of one core: a process at or above this is the bottleneck


def _read_meters(meters: dict, start: bool) -> dict:
    out = {}
    for name, ms in meters.items():
        vals = []
        for m in ms:
            if start:
                m.start()
            else:
                vals.append(m.stop())
        if not start:
            out[name] = {"total": round(sum(vals), 1), "max": round(max(vals, default=0.0), 1)}
    return out


def measure_window(t0: float, t1: float, groups: dict[str, list[int]], hook: Callable[[float], object] | None = None) -> dict:
    """CPU% of each group ('total' and its busiest process, 'max') between the monotonic times t0 and t1,
    plus 'machine' and 'other' (the machine's busy CPU outside the groups). ``hook`` is called with the
    window's length as it opens (--profile starts py-spy there)."""
    meters = {name: [CpuMeter([pid]) for pid in pids] for name, pids in groups.items()}
    sleep_until(t0)
    if hook is not None:
        hook(t1 - t0)
    _read_meters(meters, True)
    m0 = machine_cpu_busy()
    sleep_until(t1)
    cpu = _read_meters(meters, False)
    m1 = machine_cpu_busy()
    cpu["machine"] = {"total": round(100.0 * os.cpu_count() * (m1[0] - m0[0]) / max(1, m1[1] - m0[1]), 1)}
    ours = sum(v["total"] for k, v in cpu.items() if k != "machine")
    cpu["other"] = {"total": round(max(0.0, cpu["machine"]["total"] - ours), 1)}  # publisher, bench, other users
    return cpu


def sleep_until(t: float) -> None:
    while True:
        left = t - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.5))


def bound(cpu: dict, lg_key: str = "lg") -> str:
    """Who was at BUSY or more of a core in a window ('server', 'LG', 'REP'), or 'cores' for a >= 90% busy machine."""
    tags = []
    if cpu.get("server", {}).get("max", 0) >= BUSY:
        tags.append("server")
    if cpu.get(lg_key, {}).get("max", 0) >= BUSY:
        tags.append("LG")
    if cpu.get("rep", {}).get("max", 0) >= BUSY:
        tags.append("REP")
    if cpu.get("machine", {}).get("total", 0) >= 0.9 * 100 * os.cpu_count():
        tags.append("cores")
    return "+".join(tags) or "-"


def settle(pids: Callable[[], list[int]], timeout: float = 30.0) -> None:
    """Wait until the server is (nearly) idle."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = CpuMeter(pids())
        m.start()
        time.sleep(0.5)
        if m.stop() < 10.0:
            return
