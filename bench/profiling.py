"""--profile: where a zmqwamp process spends its CPU under RPC and under fan-out (py-spy, then
cProfile), and the summaries of both that go into the JSON and the report."""

from __future__ import annotations

import pstats
from pathlib import Path

from common import RESULTS, ROOT
from crossbar_install import ensure_pyspy
from scenarios import Scenarios


def run_profile(sc: Scenarios, profile_rpc: tuple[int, int]) -> None:
    """Where a zmqwamp process spends its CPU under RPC (--profile-rpc, 64/16) and under fan-out.

    py-spy (sampling, on-CPU only, the process is not paused) on a plain
    zmqwamp; then cProfile (``twistd --profile``) for exact call counts."""
    dur = sc.cfg["profile_duration"]
    saved = dict(sc.cfg)
    sc.cfg["rpc_duration"] = dur
    sc.cfg["step"] = dur
    prof: dict = {"duration_s": dur, "rpc_load": "/".join(map(str, profile_rpc))}
    sc.results["profile"] = prof
    try:
        pyspy = ensure_pyspy()
        if pyspy is None:
            sc.note("profile: py-spy not available; cProfile only")
        else:
            target = sc.procs.start_zmqwamp("zmqwamp-spy")
            try:
                for phase, run in (("rpc", lambda: sc.run_rpc(target, *profile_rpc)),
                                   ("fanout", lambda: sc.run_fanout(target, 100, [300]))):
                    out = RESULTS / f"profile-pyspy-{phase}.txt"
                    sc.window_hook = lambda seconds, out=out: sc.procs.start(
                        f"py-spy-{phase}", [str(pyspy), "record", "--pid", str(target.server.pid), "--duration",  # noqa: B023
                                            str(max(1, int(seconds))), "--rate", "250", "--nonblocking", "--format", "raw",
                                            "--output", str(out)])
                    row = run()
                    sc.window_hook = None
                    rows = row if isinstance(row, list) else [row]
                    for child in [c for c in sc.procs.children if c.name == f"py-spy-{phase}"]:
                        child.proc.wait(30)
                        sc.procs.finish(child)
                    prof[f"pyspy_{phase}"] = summarize_pyspy(out)
                    prof[f"pyspy_{phase}"]["load"] = (f"{rows[0]['calls_s']:.0f} calls/s" if phase == "rpc"
                                                      else f"{rows[0]['delivered_s']:.0f} deliveries/s")
            finally:
                sc.window_hook = None
                sc.procs.stop_target(target)
        pst = RESULTS / "profile-zmqwamp.pstats"
        if pst.exists():
            pst.unlink()
        target = sc.procs.start_zmqwamp("zmqwamp-cprof", twistd_opts=["--profile", str(pst), "--profiler", "cprofile", "--savestats"])
        try:
            rpc = sc.run_rpc(target, *profile_rpc)
            fan = sc.run_fanout(target, 100, [300])
            calls = rpc["calls_s"] * dur  # in-window only: approximate per-call normalisation
        finally:
            target.server.stop(timeout=60)  # SIGTERM: twistd writes the profile on exit
            sc.procs.stop_target(target)
        if pst.exists():
            prof["cprofile"] = summarize_cprofile(pst, RESULTS / "profile-zmqwamp.txt")
            prof["cprofile"]["load"] = {"rpc_calls_s_under_cprofile": rpc["calls_s"],
                                        "fanout_deliveries": sum(r["received"] for r in fan), "rpc_calls_in_window": round(calls)}
        else:
            sc.note("profile: twistd wrote no cProfile file")
    finally:
        sc.cfg.update(saved)


# -- summaries -------------------------------------------------------------------
def _short(filename: str) -> str:
    for marker in ("site-packages/", "/work/main/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def _area(filename: str) -> str:
    f = _short(filename)
    if f.startswith("zmqwamp/"):
        return f
    for pkg in ("autobahn/websocket", "autobahn/wamp", "autobahn", "twisted/internet", "twisted/logger", "twisted/web",
                "twisted", "txzmq", "zmq", "prometheus_client", "json", "txaio"):
        if f.startswith(pkg) or f"/{pkg}/" in f:
            return pkg
    if filename.startswith("~") or filename == "<built-in>":
        return "builtins (C calls)"
    return "other"


def _frame_area(frame: str) -> str:
    """'func (path/to/file.py:123)' -> an area name."""
    inner = frame[frame.rfind("(") + 1 : -1] if frame.endswith(")") else frame
    return _area(inner.rsplit(":", 1)[0])


def summarize_pyspy(path: Path) -> dict:
    """Self and inclusive shares from py-spy's raw (collapsed) output."""
    if not path.exists():
        return {"error": f"{path.name} not written"}
    self_t: dict[str, int] = {}
    incl: dict[str, int] = {}
    areas: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        leaf = frames[-1]
        self_t[leaf] = self_t.get(leaf, 0) + n
        areas[_frame_area(leaf)] = areas.get(_frame_area(leaf), 0) + n
        for f in set(frames):
            incl[f] = incl.get(f, 0) + n
    if not total:
        return {"error": "no samples"}

    def pct(n):
        return round(100.0 * n / total, 1)

    interesting = [f for f in incl if "zmqwamp/" in f or "hltype" in f or "hlval" in f or "prometheus_client" in f
                   or "sendData" in f or "sendPreparedMessage" in f or "serialize" in f or "unserialize" in f
                   or "decode_frame" in f or "parse (autobahn/wamp/message.py" in f]
    return {
        "file": str(path.relative_to(ROOT)), "samples": total,
        "areas_self_pct": {k: pct(v) for k, v in sorted(areas.items(), key=lambda kv: -kv[1])},
        "top_self": [{"frame": _strip_frame(f), "pct": pct(n)} for f, n in sorted(self_t.items(), key=lambda kv: -kv[1])[:15]],
        "inclusive": [{"frame": _strip_frame(f), "pct": pct(incl[f])} for f in sorted(interesting, key=lambda f: -incl[f])[:25]],
    }


def _strip_frame(frame: str) -> str:
    for marker in ("site-packages/", "/work/main/"):
        frame = frame.replace(marker, "")
    return frame[:110]


def summarize_cprofile(pst: Path, text_path: Path) -> dict:
    with open(text_path, "w") as f:
        stats = pstats.Stats(str(pst), stream=f)
        stats.strip_dirs().sort_stats("tottime").print_stats(50)
        stats.sort_stats("cumulative").print_stats(80)
    stats = pstats.Stats(str(pst))
    idle = sum(tt for (fn, ln, func), (cc, nc, tt, ct, callers) in stats.stats.items() if "poll" in func and "epoll" in func)
    busy = stats.total_tt - idle  # cProfile measures wall time: take out the reactor's wait in epoll
    top = []
    for (fn, ln, func), (_cc, nc, tt, ct, _callers) in sorted(stats.stats.items(), key=lambda kv: -kv[1][2]):
        if "poll" in func and "epoll" in func:
            continue
        top.append({"function": f"{_short(fn)}:{ln}({func})", "calls": nc, "tottime_s": round(tt, 3),
                    "pct_busy": round(100 * tt / busy, 1), "cumtime_s": round(ct, 3)})
        if len(top) == 20:
            break
    return {"file": str(pst.relative_to(ROOT)), "text": str(text_path.relative_to(ROOT)),
            "busy_s": round(busy, 2), "epoll_wait_s": round(idle, 2), "top_tottime": top}
