"""The scenarios: idle sessions, RPC (and raw zmq beside it), serializers, fan-out and --workers.

Each measurement starts its load generators through Processes, measures a window
(measure.py) and returns a row; the section methods run them over every target,
interleaved, and put the rows into the run's results."""

from __future__ import annotations

import json
import time

from common import BENCH, BenchTimeout, free_port, hist_merge, hist_percentile, rss_bytes, say
from measure import bound, measure_window, settle
from report import num, rnd, times
from targets import PY, Processes, Target

# --sections: each is the Scenarios method of that name, announced by its title (the title up to
# " (" also names the section's time in results["section_s"]); they run in this order.
SECTIONS = {"idle": "idle sessions (RSS per session) ...", "rpc": "RPC ...", "serializers": "serializers (RPC) ...",
            "fanout": "fan-out ...", "workers": "workers ..."}


def settings(quick: bool) -> dict:
    if quick:
        return {
            "rpc_configs": [(1, 1), (64, 16)],
            "rpc_warmup": 0.5, "rpc_duration": 1.5,
            "raw_inflight": [64],
            "ser_config": (64, 16), "serializers": ["json", "msgpack", "cbor"],
            "fanout": [(100, [100, 500]), (1000, [40])],
            "step": 2.0, "step_warm": 0.5, "drain_max": 3.0,
            "idle": {"zmqwamp": 1000, "baseline": 1000, "crossbar": 1000, "limit": 1000},
            "idle_connect_timeout": 60.0,
            "profile_duration": 3.0,
            "repeats": 1,
        }
    return {
        "rpc_configs": [(1, 1), (16, 1), (16, 16), (64, 1), (64, 16)],
        "rpc_warmup": 1.0, "rpc_duration": 3.0,
        "raw_inflight": [1, 16, 64],
        "ser_config": (16, 16), "serializers": ["json", "msgpack", "cbor"],
        "fanout": [(100, [100, 300, 1000]), (1000, [10, 30, 100, 300])],
        "step": 5.0, "step_warm": 1.0, "drain_max": 5.0,
        "idle": {"zmqwamp": 10000, "baseline": 10000, "crossbar": 10000, "limit": 10000},
        "idle_connect_timeout": 150.0,
        "profile_duration": 8.0,
        "repeats": 2,
    }


class Scenarios:
    """The measurements of one run: ``cfg`` from settings(), rows into ``results``, over ``targets`` (set once started)."""

    def __init__(self, procs: Processes, cfg: dict, results: dict, lg_procs: int, quick: bool) -> None:
        self.procs = procs
        self.cfg = cfg
        self.results = results
        self.lg_procs = lg_procs
        self.quick = quick
        self.targets: dict[str, Target] = {}
        self.step_id = 0
        self.window_hook = None  # called with a window's length as it opens (--profile starts py-spy there)

    # targets measured in the fan-out section only (--history: the same bridge, its topic an alias with history)
    FANOUT_ONLY = ("history",)

    def main_targets(self) -> dict[str, Target]:
        """The targets of every section but fan-out."""
        return {name: t for name, t in self.targets.items() if name not in self.FANOUT_ONLY}

    def note(self, text: str) -> None:
        say(f"  note: {text}")
        self.results["notes"].append(text)

    def measure_window(self, t0: float, t1: float, groups: dict[str, list[int]]) -> dict:
        return measure_window(t0, t1, groups, self.window_hook)

    # -- RPC ----------------------------------------------------------------------
    def run_rpc(self, target: Target, inflight: int, sessions: int, serializer: str = "json") -> dict:
        """``inflight`` calls kept in flight over ``sessions`` sessions for one window: calls/s, p50/p99, CPU."""
        cfg = self.cfg
        nproc = 1 if sessions == 1 else max(1, min(self.lg_procs, sessions))
        lgs = []
        for i in range(nproc):
            s = sessions // nproc + (1 if i < sessions % nproc else 0)
            k = inflight // nproc + (1 if i < inflight % nproc else 0)
            lgs.append(self.procs.loadgen(f"lg-rpc-{target.name}-{i}", target, "rpc", serializer=serializer,
                                          sessions=s, inflight=k, max_seconds=120))
        try:
            for lg in lgs:
                lg.wait_for(r"^(READY|FAILED)", 60)
                if any(line.startswith("FAILED") for line in lg.lines):
                    raise RuntimeError(f"{lg.name}: {lg.lines[-1]}")
            t_go = time.monotonic() + 0.2
            t0, t1 = t_go + cfg["rpc_warmup"], t_go + cfg["rpc_warmup"] + cfg["rpc_duration"]
            for lg in lgs:
                lg.send(f"GO {t0} {t1}")
            cpu = self.measure_window(t0, t1, {"server": target.pids(), "lg": [lg.pid for lg in lgs],
                                               "rep": [self.procs.rep.pid]})
            parts = [lg.result(40) for lg in lgs]
        finally:
            for lg in lgs:
                self.procs.finish(lg)
        hist: dict = {}
        for p in parts:
            hist_merge(hist, p["hist"])
        ok = sum(p["ok"] for p in parts)
        errors = sum(p["errors"] for p in parts)
        dur = t1 - t0
        row = {
            "target": target.name, "inflight": inflight, "sessions": sessions, "serializer": serializer,
            "calls_s": round(ok / dur, 1), "p50_ms": rnd(hist_percentile(hist, 0.5)), "p99_ms": rnd(hist_percentile(hist, 0.99)),
            "errors": errors, "first_error": next((p["first_error"][0] for p in parts if p["first_error"]), None),
            "lg_procs": nproc, "cpu": cpu, "bound": bound(cpu),
            "server_us_per_call": round(1e4 * cpu["server"]["total"] * dur / ok, 1) if ok else None,
        }
        if errors:
            self.note(f"{target.name} rpc {inflight}/{sessions} {serializer}: {errors} errors, e.g. {row['first_error']}")
        return row

    def run_raw(self, inflight: int) -> dict:
        """pyzmq DEALER -> the echo REP, no WAMP: the floor of the zmq hop."""
        cfg = self.cfg
        t0 = time.monotonic() + 1.0 + cfg["rpc_warmup"]  # 1 s to start the process
        t1 = t0 + cfg["rpc_duration"]
        child = self.procs.start(f"raw-zmq-{inflight}", [PY, str(BENCH / "raw_zmq.py"), self.procs.rep_addr,
                                                         "--inflight", str(inflight), "--t0", str(t0), "--t1", str(t1)])
        try:
            cpu = self.measure_window(t0, t1, {"lg": [child.pid], "rep": [self.procs.rep.pid]})
            part = child.result(30)
        finally:
            self.procs.finish(child)
        hist = part["hist"]
        return {"target": "raw zmq", "inflight": inflight, "sessions": 0, "serializer": "-",
                "calls_s": round(part["ok"] / cfg["rpc_duration"], 1), "p50_ms": rnd(hist_percentile(hist, 0.5)),
                "p99_ms": rnd(hist_percentile(hist, 0.99)), "errors": part["errors"], "lg_procs": 1, "cpu": cpu,
                "bound": bound(cpu)}

    # -- fan-out ----------------------------------------------------------------
    def run_fanout(self, target: Target, subscribers: int, rates: list[float]) -> list[dict]:
        """One PUB to ``subscribers`` sessions, one step per rate (each drained, bounded): a row per step."""
        cfg = self.cfg
        nproc = max(1, min(self.lg_procs, subscribers))
        lgs = [self.procs.loadgen(f"lg-sub-{target.name}-{i}", target, "sub",
                                  sessions=subscribers // nproc + (1 if i < subscribers % nproc else 0), max_seconds=600)
               for i in range(nproc)]
        cursors = {lg.name: 0 for lg in lgs}

        def report(step: int) -> list[dict]:
            out = []
            for lg in lgs:
                lg.send(f"REPORT {step}")
            for lg in lgs:
                match, idx = lg.wait_for(r"^RESULT (.*)$", 30, cursors[lg.name])
                cursors[lg.name] = idx + 1
                out.append(json.loads(match.group(1)))
            return out

        rows = []
        try:
            for lg in lgs:
                lg.wait_for(r"^(READY|FAILED)", 120)
                if any(line.startswith("FAILED") for line in lg.lines):
                    raise RuntimeError(f"{lg.name}: {lg.lines[-1]}")
            time.sleep(0.5)  # zmq subscriptions propagate
            for rate in rates:
                self.step_id += 1
                step = self.step_id
                t_start = time.monotonic() + 0.1
                w0, w1 = t_start + cfg["step_warm"], t_start + cfg["step"]
                target.publish_step(step, rate, cfg["step"], w0, w1)
                cpu = self.measure_window(w0, w1, {"server": target.pids(), "lg": [lg.pid for lg in lgs]})
                published = target.wait_published(step, cfg["step"] + 15)
                # drain: until no subscriber receives more (bounded)
                deadline = time.monotonic() + cfg["drain_max"]
                last = -1
                while True:
                    parts = report(step)
                    total = sum(p["total"] for p in parts)
                    if total == last or total >= published * subscribers or time.monotonic() > deadline:
                        break
                    last = total
                    time.sleep(0.4)
                hist: dict = {}
                for p in parts:
                    hist_merge(hist, p["hist"])
                window = sum(p["window"] for p in parts)
                expected = rate * subscribers
                row = {
                    "target": target.name, "subscribers": subscribers, "rate": rate, "published": published,
                    "expected_s": expected, "delivered_s": round(window / (w1 - w0), 1),
                    "received": total, "loss_pct": round(100.0 * (1 - total / max(1, published * subscribers)), 2),
                    "p50_ms": rnd(hist_percentile(hist, 0.5)), "p99_ms": rnd(hist_percentile(hist, 0.99)),
                    "lg_procs": nproc, "cpu": cpu, "bound": bound(cpu),
                    "server_us_per_delivery": round(1e4 * cpu["server"]["total"] * (w1 - w0) / window, 2) if window else None,
                }
                rows.append(row)
                say(f"    {target.name:9} {subscribers:5} subs @ {rate:6g}/s: delivered {row['delivered_s']:9.0f}/s "
                    f"(expected {expected:g}) loss {row['loss_pct']:5.1f}% p50 {num(row['p50_ms'])} p99 {num(row['p99_ms'])} ms "
                    f"server CPU {cpu['server']['total']:.0f}% LG CPU {cpu['lg']['max']:.0f}% [{row['bound']}]")
        finally:
            for lg in lgs:
                lg.send("QUIT")
            for lg in lgs:
                self.procs.finish(lg)
        return rows

    # -- idle sessions ---------------------------------------------------------
    def run_idle(self, target: Target, sessions: int) -> dict:
        """Hold ``sessions`` joined sessions: the server's RSS growth per session."""
        per_proc = 2500
        nproc = max(1, -(-sessions // per_proc))
        settle(target.pids)
        base = rss_bytes(target.pids())
        started = time.monotonic()
        lgs = [self.procs.loadgen(f"lg-idle-{target.name}-{i}", target, "idle",
                                  sessions=sessions // nproc + (1 if i < sessions % nproc else 0),
                                  connect_concurrency=50, max_seconds=self.cfg["idle_connect_timeout"] + 120)
               for i in range(nproc)]
        joined = failed = 0
        errors = []
        try:
            for lg in lgs:
                left = max(1.0, started + self.cfg["idle_connect_timeout"] - time.monotonic())
                try:
                    match, _ = lg.wait_for(r"^READY joined=(\d+) failed=(\d+) first_error=(.*)$", left)
                    joined += int(match.group(1))
                    failed += int(match.group(2))
                    if int(match.group(2)):
                        errors.append(match.group(3))
                except (TimeoutError, RuntimeError) as e:
                    errors.append(str(e).splitlines()[0])
            connect_s = time.monotonic() - started
            settle(target.pids)
            held = rss_bytes(target.pids())
        finally:
            for lg in lgs:
                lg.send("QUIT")
            for lg in lgs:
                self.procs.finish(lg)
        row = {"target": target.name, "sessions": sessions, "joined": joined, "failed": failed,
               "rss_base_mb": round(base / 2**20, 1), "rss_mb": round(held / 2**20, 1),
               "kb_per_session": round((held - base) / 1024 / joined, 1) if joined else None,
               "connect_s": round(connect_s, 1), "errors": errors[:3]}
        say(f"    {target.name:9} {joined}/{sessions} sessions held in {connect_s:.1f}s: RSS {row['rss_base_mb']} -> "
            f"{row['rss_mb']} MB = {num(row['kb_per_session'])} KB/session")
        return row

    # -- workers -----------------------------------------------------------------
    def run_workers(self, single: dict) -> None:
        """RPC 64/16 on a zmqwamp with --workers 2, against ``single``, the one-process row."""
        port = free_port()
        # 'available' is always true now (every build has --workers); kept so the JSON keeps its keys
        self.results["workers"] = {"available": True, "w1": single, "w2": None, "ratio": None}
        try:
            target = self.procs.start_zmqwamp("zmqwamp-w2", extra=["--workers", "2"], port=port,
                                              probe_timeout=12 if self.quick else 30)
        except (BenchTimeout, KeyboardInterrupt):
            raise
        except Exception as e:
            self.results["workers"]["error"] = f"--workers 2 did not answer: {str(e).strip().splitlines()[0][:200]}"
            say(f"  workers: {self.results['workers']['error']}")
            for child in [c for c in self.procs.children if c.name in ("zmqwamp-w2", "pub-zmqwamp-w2")]:
                self.procs.finish(child)
            return
        try:
            row = self.run_rpc(target, 64, 16)
            row["target"] = "zmqwamp --workers 2"
            ratio = row["calls_s"] / single["calls_s"] if single["calls_s"] else None
            self.results["workers"].update({"w2": row, "ratio": rnd(ratio, 2)})
            say(f"    workers 2: {row['calls_s']:.0f} calls/s vs 1 worker {single['calls_s']:.0f} calls/s = {times(ratio)} "
                f"[{row['bound']}; LG CPU max {row['cpu']['lg']['max']:.0f}%]")
        finally:
            self.procs.stop_target(target)

    # -- the sections: each over every target ---------------------------------------
    def idle(self) -> None:
        """Idle sessions on every target."""
        cfg = self.cfg
        # first: each server is fresh, so RSS growth is the sessions' own
        for name, t in self.main_targets().items():
            n = cfg["idle"][name]
            row = self.run_idle(t, n)
            if name == "crossbar" and row["joined"] < n and n > 1000:
                self.note(f"crossbar held {row['joined']}/{n} idle sessions; measuring it at 1,000")
                row = self.run_idle(t, 1000)
            self.results["idle"].append(row)
        for t in self.targets.values():
            settle(t.pids)

    def best_rpc(self, inflight: int, sessions: int, serializer: str = "json") -> dict[str, dict]:
        """Best of cfg['repeats'] runs per target (by calls/s), the targets interleaved:
        other load on the machine only ever slows a run down."""
        runs: dict[str, list[dict]] = {name: [] for name in self.main_targets()}
        for _ in range(self.cfg["repeats"]):
            for name, t in self.main_targets().items():
                runs[name].append(self.run_rpc(t, inflight, sessions, serializer))
        best = {}
        for name, rows in runs.items():
            best[name] = max(rows, key=lambda r: r["calls_s"])
            best[name]["runs_calls_s"] = [r["calls_s"] for r in rows]
        return best

    def rpc(self) -> None:
        """Every RPC configuration on every target, then raw zmq."""
        cfg = self.cfg
        for inflight, sessions in cfg["rpc_configs"]:
            for name, row in self.best_rpc(inflight, sessions).items():
                self.results["rpc"].append(row)
                say(f"    {name:9} {inflight:3} in flight / {sessions:2} sessions: {row['calls_s']:8.0f} calls/s "
                    f"p50 {num(row['p50_ms'])} p99 {num(row['p99_ms'])} ms  server CPU {row['cpu']['server']['total']:.0f}% "
                    f"LG CPU max {row['cpu']['lg']['max']:.0f}% x{row['lg_procs']} other {row['cpu']['other']['total']:.0f}% "
                    f"[{row['bound']}] runs {row['runs_calls_s']}")
        for inflight in cfg["raw_inflight"]:
            row = self.run_raw(inflight)
            self.results["raw_zmq"].append(row)
            say(f"    raw zmq   {inflight:3} in flight: {row['calls_s']:8.0f} calls/s p50 {num(row['p50_ms'])} p99 {num(row['p99_ms'])} ms")

    def serializers(self) -> None:
        """RPC at cfg['ser_config'] with each serializer (json reuses the RPC section's rows when it has them)."""
        cfg = self.cfg
        inflight, sessions = cfg["ser_config"]
        for serializer in cfg["serializers"]:
            same = {r["target"]: r for r in self.results["rpc"] if r["inflight"] == inflight
                    and r["sessions"] == sessions and r["serializer"] == serializer}
            rows = same if len(same) == len(self.main_targets()) else self.best_rpc(inflight, sessions, serializer)
            for name, row in rows.items():
                self.results["serializers"].append(dict(row))
                say(f"    {name:9} {serializer:8}: {row['calls_s']:8.0f} calls/s p99 {num(row['p99_ms'])} ms [{row['bound']}]")

    def fanout(self) -> None:
        """Every fan-out size and its rates on every target, each target settled before the next."""
        cfg = self.cfg
        for subscribers, rates in cfg["fanout"]:
            for _name, t in self.targets.items():
                try:
                    self.results["fanout"].extend(self.run_fanout(t, subscribers, rates))
                finally:
                    settle(t.pids)

    def workers(self) -> None:
        """--workers 2 against zmqwamp's RPC 64/16 row (needs the RPC section with 64/16)."""
        single = next((r for r in self.results["rpc"] if r["target"] == "zmqwamp" and r["inflight"] == 64
                       and r["sessions"] == 16), None)
        if "zmqwamp" not in self.targets or single is None:
            say("  workers: not measured (no zmqwamp RPC 64/16 baseline)")
            return
        self.run_workers(single)
