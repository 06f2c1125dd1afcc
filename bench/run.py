"""zmqwamp bench (issue 7): zmqwamp vs Crossbar + forwarder (anchor) vs a bare
autobahn WAMP server (limit) vs raw pyzmq, side by side in one invocation.

    .venv/bin/python bench/run.py [--quick] [--profile]      (or: make bench)

Prints a table (absolute figures, ratios to the anchor and the limit, PASS/FAIL
per target of issue 7) and writes bench/results/latest.json (+ latest.txt).
Everything listens on and talks to 127.0.0.1 only; every process it starts is
stopped by its PID; the whole run is bounded by --max-minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pstats
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    BENCH,
    REALM,
    RESULTS,
    ROOT,
    BenchTimeout,
    Child,
    CpuMeter,
    free_port,
    hist_merge,
    hist_percentile,
    machine_cpu_busy,
    proc_tree,
    rss_bytes,
    say,
)
from crossbar_install import CROSSBAR_VERSION, ensure_crossbar, ensure_pyspy  # noqa: E402
from report import build_report, num, rnd, times  # noqa: E402

PY = sys.executable  # the project's venv python: autobahn, pyzmq, twisted
BIN = Path(PY).parent
BUSY = 85.0  # % of one core: a process at or above this is the bottleneck
# zmqwamp's admission limits protect a production bridge from one abusive peer;
# every bench client comes from 127.0.0.1, so they are raised (only if this
# build has them).  Flow control (outgoing buffer, slow-consumer policy) stays
# at its defaults: that is the product as shipped.
ZMQWAMP_LOAD_OPTIONS = [
    ("--max-sessions", "20000"),
    ("--max-sessions-per-peer", "20000"),
    ("--max-calls-per-second", "10000000"),
    ("--max-calls-in-flight", "4096"),
]


SECTIONS = ("idle", "rpc", "serializers", "fanout", "workers")


# -- settings ------------------------------------------------------------------
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


# -- the targets -----------------------------------------------------------------
class Target:
    """A WAMP server under test plus what publishes to it."""

    def __init__(self, name: str, server: Child, url: str, procedure: str, topic: str, publisher: Child) -> None:
        self.name = name
        self.server = server
        self.url = url
        self.procedure = procedure
        self.topic = topic
        self.publisher = publisher  # answers "STEP ..." with "DONE <step> <n>"
        self._pub_cursor = 0

    def pids(self) -> list[int]:
        return proc_tree(self.server.pid)

    def publish_step(self, step: int, rate: float, duration: float, w0: float, w1: float) -> None:
        self._pub_cursor = len(self.publisher.lines)
        self.publisher.send(f"STEP {step} {rate} {duration} {w0} {w1}")

    def wait_published(self, step: int, timeout: float) -> int:
        match, _ = self.publisher.wait_for(rf"^DONE {step} (\d+)$", timeout, self._pub_cursor)
        return int(match.group(1))


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.cfg = settings(args.quick)
        self.children: list[Child] = []
        self.targets: dict[str, Target] = {}
        self.results: dict = {"rpc": [], "raw_zmq": [], "fanout": [], "idle": [], "serializers": [], "workers": None,
                              "profile": None, "notes": []}
        self.step_id = 0
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.log = open(RESULTS / "bench.log", "w", buffering=1)
        self.tmp = Path(tempfile.mkdtemp(prefix="zmqwamp-bench-"))

    def note(self, text: str) -> None:
        say(f"  note: {text}")
        self.results["notes"].append(text)

    def start(self, name: str, argv: list[str], **kw) -> Child:
        child = Child(name, argv, log=self.log, **kw)
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        for child in reversed(self.children):
            try:
                child.stop(timeout=15)
            except Exception as e:  # keep stopping the others
                self.log.write(f"stopping {child.name} (pid {child.pid}): {e}\n")
        self.children.clear()

    # -- setup -------------------------------------------------------------------
    def start_zmq_services(self) -> None:
        rep = self.start("rep", [PY, str(ROOT / "examples/echo_rep.py"), "tcp://127.0.0.1:*"])
        self.rep = rep
        self.rep_addr = rep.wait_for(r"bound to (\S+)", 20)[0].group(1)

    def start_timed_pub(self, name: str) -> tuple[Child, str]:
        pub = self.start(name, [PY, str(BENCH / "timed_pub.py"), "tcp://127.0.0.1:*"], stdin=True)
        return pub, pub.wait_for(r"bound to (\S+)", 20)[0].group(1)

    def zmqwamp_help(self, bin_dir: Path = BIN) -> str:
        helps = self.__dict__.setdefault("_zmqwamp_help", {})
        if bin_dir not in helps:
            helps[bin_dir] = subprocess.run([str(bin_dir / "twistd"), "zmqwamp", "--help"], capture_output=True, text=True,
                                            timeout=60, cwd=str(self.tmp)).stdout
        return helps[bin_dir]

    def zmqwamp_load_options(self, bin_dir: Path = BIN) -> list[str]:
        out = []
        for option, value in ZMQWAMP_LOAD_OPTIONS:
            if f"{option}=" in self.zmqwamp_help(bin_dir):
                out += [option, value]
        return out

    def start_zmqwamp(self, name: str = "zmqwamp", extra: list[str] = (), twistd_opts: list[str] = (),
                      port: int = 0, probe_timeout: float = 60, bin_dir: Path = BIN) -> Target:
        """Run a zmqwamp bridge; ``bin_dir``: the venv bin of another checkout (``--baseline``)."""
        pub, pub_addr = self.start_timed_pub(f"pub-{name}")
        extra = [*self.zmqwamp_load_options(bin_dir), *extra]
        listen = f"tcp:{port}:interface=127.0.0.1:backlog=1024"
        argv = [str(bin_dir / "twistd"), "-n", "--pidfile=", *twistd_opts, "zmqwamp", "--listen", listen,
                "--anonymous", "--allow", "tcp://127.0.0.1:*", *extra]
        server = self.start(name, argv, cwd=str(self.tmp))
        if port == 0:
            port = int(server.wait_for(r"starting on (\d+)", 30)[0].group(1))
        target = Target(name, server, f"ws://127.0.0.1:{port}/ws", self.rep_addr, pub_addr, pub)
        self.probe(target, probe_timeout)
        return target

    def start_limit(self) -> Target:
        server = self.start("limit", [PY, str(BENCH / "limit_server.py"), "--port", "0"], stdin=True)
        port = int(server.wait_for(r"^LISTENING (\d+)", 30)[0].group(1))
        target = Target("limit", server, f"ws://127.0.0.1:{port}/ws", "bench.echo", "bench.events", server)
        self.probe(target, 30)
        return target

    def start_crossbar(self) -> Target:
        exe = ensure_crossbar()
        pub, pub_addr = self.start_timed_pub("pub-crossbar")
        port = free_port()
        cbdir = self.tmp / "crossbar-node"
        (cbdir).mkdir(parents=True, exist_ok=True)
        permissions = [{"uri": "", "match": "prefix",
                        "allow": {"call": True, "register": True, "publish": True, "subscribe": True},
                        "disclose": {"caller": False, "publisher": False}, "cache": True}]
        config = {
            "$schema": "https://raw.githubusercontent.com/crossbario/crossbar/master/crossbar.json",
            "version": 2,
            "controller": {},
            "workers": [{
                "type": "router",
                "options": {"pythonpath": [str(BENCH)]},
                "realms": [{"name": REALM, "roles": [
                    {"name": "anonymous", "permissions": permissions},
                    {"name": "forwarder", "permissions": permissions},
                ]}],
                "transports": [{
                    "type": "web",
                    "endpoint": {"type": "tcp", "port": port, "interface": "127.0.0.1", "backlog": 1024},
                    "paths": {"ws": {"type": "websocket", "serializers": ["json", "msgpack", "cbor"],
                                     "auth": {"anonymous": {"type": "static", "role": "anonymous"}}}},
                }],
                "components": [{
                    "type": "class", "classname": "crossbar_forwarder.Forwarder", "realm": REALM, "role": "forwarder",
                    "extra": {"rep": self.rep_addr, "pub": pub_addr, "procedure": self.rep_addr,
                              "topic": pub_addr, "timeout": 10.0},
                }],
            }],
        }
        (cbdir / "config.json").write_text(json.dumps(config, indent=2))
        server = self.start("crossbar", [str(exe), "start", "--cbdir", str(cbdir)], cwd=str(self.tmp))
        server.wait_for(r"FORWARDER READY", 120)
        target = Target("crossbar", server, f"ws://127.0.0.1:{port}/ws", self.rep_addr, pub_addr, pub)
        self.probe(target, 60)
        return target

    def loadgen(self, name: str, target: Target, mode: str, stdin: bool = True, serializer: str = "json", **opts) -> Child:
        argv = [PY, str(BENCH / "loadgen.py"), mode, "--url", target.url, "--realm", REALM,
                "--procedure", target.procedure, "--topic", target.topic, "--serializer", serializer,
                "--max-seconds", str(opts.pop("max_seconds", 600))]
        if mode != "probe":
            argv += ["--client", self.args.client]
            if self.args.autobahn_frames:
                argv.append("--autobahn-frames")
        for key, value in opts.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        return self.start(name, argv, stdin=stdin)

    def probe(self, target: Target, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            lg = self.loadgen(f"probe-{target.name}", target, "probe", stdin=False, max_seconds=20)
            try:
                result = lg.result(25)
                if result.get("reply") in ("got this hello", ["got this hello"]):
                    return
                last = repr(result)
            except Exception as e:
                last = str(e)
            finally:
                self.finish(lg)
            time.sleep(1.0)
        last = last.split("; last output:")[0].strip()
        raise RuntimeError(f"{target.name} does not answer at {target.url} within {timeout:g}s ({last[-300:]})")

    def finish(self, child: Child) -> None:
        child.stop(timeout=10)
        if child in self.children:
            self.children.remove(child)

    # -- measuring -------------------------------------------------------------
    def meters(self, groups: dict[str, list[int]]) -> dict:
        return {name: [CpuMeter([pid]) for pid in pids] for name, pids in groups.items()}

    @staticmethod
    def read_meters(meters: dict, start: bool) -> dict:
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

    def measure_window(self, t0: float, t1: float, groups: dict[str, list[int]]) -> dict:
        meters = self.meters(groups)
        self.sleep_until(t0)
        hook = getattr(self, "_window_hook", None)
        if hook is not None:
            hook(t1 - t0)
        self.read_meters(meters, True)
        m0 = machine_cpu_busy()
        self.sleep_until(t1)
        cpu = self.read_meters(meters, False)
        m1 = machine_cpu_busy()
        cpu["machine"] = {"total": round(100.0 * os.cpu_count() * (m1[0] - m0[0]) / max(1, m1[1] - m0[1]), 1)}
        ours = sum(v["total"] for k, v in cpu.items() if k != "machine")
        cpu["other"] = {"total": round(max(0.0, cpu["machine"]["total"] - ours), 1)}  # publisher, bench, other users
        return cpu

    @staticmethod
    def sleep_until(t: float) -> None:
        while True:
            left = t - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.5))

    @staticmethod
    def bound(cpu: dict, lg_key: str = "lg") -> str:
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

    # -- RPC ----------------------------------------------------------------------
    def run_rpc(self, target: Target, inflight: int, sessions: int, serializer: str = "json") -> dict:
        cfg = self.cfg
        nproc = 1 if sessions == 1 else max(1, min(self.args.lg_procs, sessions))
        lgs = []
        for i in range(nproc):
            s = sessions // nproc + (1 if i < sessions % nproc else 0)
            k = inflight // nproc + (1 if i < inflight % nproc else 0)
            lgs.append(self.loadgen(f"lg-rpc-{target.name}-{i}", target, "rpc", serializer=serializer,
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
                                               "rep": [self.rep.pid]})
            parts = [lg.result(40) for lg in lgs]
        finally:
            for lg in lgs:
                self.finish(lg)
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
            "lg_procs": nproc, "cpu": cpu, "bound": self.bound(cpu),
            "server_us_per_call": round(1e4 * cpu["server"]["total"] * dur / ok, 1) if ok else None,
        }
        if errors:
            self.note(f"{target.name} rpc {inflight}/{sessions} {serializer}: {errors} errors, e.g. {row['first_error']}")
        return row

    def run_raw(self, inflight: int) -> dict:
        cfg = self.cfg
        t0 = time.monotonic() + 1.0 + cfg["rpc_warmup"]  # 1 s to start the process
        t1 = t0 + cfg["rpc_duration"]
        child = self.start(f"raw-zmq-{inflight}", [PY, str(BENCH / "raw_zmq.py"), self.rep_addr, "--inflight", str(inflight),
                                                   "--t0", str(t0), "--t1", str(t1)])
        try:
            cpu = self.measure_window(t0, t1, {"lg": [child.pid], "rep": [self.rep.pid]})
            part = child.result(30)
        finally:
            self.finish(child)
        hist = part["hist"]
        return {"target": "raw zmq", "inflight": inflight, "sessions": 0, "serializer": "-",
                "calls_s": round(part["ok"] / cfg["rpc_duration"], 1), "p50_ms": rnd(hist_percentile(hist, 0.5)),
                "p99_ms": rnd(hist_percentile(hist, 0.99)), "errors": part["errors"], "lg_procs": 1, "cpu": cpu,
                "bound": self.bound(cpu)}

    # -- fan-out ----------------------------------------------------------------
    def run_fanout(self, target: Target, subscribers: int, rates: list[float]) -> list[dict]:
        cfg = self.cfg
        nproc = max(1, min(self.args.lg_procs, subscribers))
        lgs = [self.loadgen(f"lg-sub-{target.name}-{i}", target, "sub",
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
                    "lg_procs": nproc, "cpu": cpu, "bound": self.bound(cpu),
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
                self.finish(lg)
        return rows

    # -- idle sessions ---------------------------------------------------------
    def settle(self, target: Target, timeout: float = 30.0) -> None:
        """Wait until the server is (nearly) idle."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = CpuMeter(target.pids())
            m.start()
            time.sleep(0.5)
            if m.stop() < 10.0:
                return

    def run_idle(self, target: Target, sessions: int) -> dict:
        per_proc = 2500
        nproc = max(1, -(-sessions // per_proc))
        self.settle(target)
        base = rss_bytes(target.pids())
        started = time.monotonic()
        lgs = [self.loadgen(f"lg-idle-{target.name}-{i}", target, "idle",
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
            self.settle(target)
            held = rss_bytes(target.pids())
        finally:
            for lg in lgs:
                lg.send("QUIT")
            for lg in lgs:
                self.finish(lg)
        row = {"target": target.name, "sessions": sessions, "joined": joined, "failed": failed,
               "rss_base_mb": round(base / 2**20, 1), "rss_mb": round(held / 2**20, 1),
               "kb_per_session": round((held - base) / 1024 / joined, 1) if joined else None,
               "connect_s": round(connect_s, 1), "errors": errors[:3]}
        say(f"    {target.name:9} {joined}/{sessions} sessions held in {connect_s:.1f}s: RSS {row['rss_base_mb']} -> "
            f"{row['rss_mb']} MB = {num(row['kb_per_session'])} KB/session")
        return row

    # -- workers / profile -------------------------------------------------------
    def workers_available(self) -> bool:
        return "--workers=" in self.zmqwamp_help()

    def run_workers(self, single: dict) -> None:
        if not self.workers_available():
            say("  workers: not available in this build")
            self.results["workers"] = {"available": False}
            return
        port = free_port()
        self.results["workers"] = {"available": True, "w1": single, "w2": None, "ratio": None}
        try:
            target = self.start_zmqwamp("zmqwamp-w2", extra=["--workers", "2"], port=port,
                                        probe_timeout=12 if self.args.quick else 30)
        except (BenchTimeout, KeyboardInterrupt):
            raise
        except Exception as e:
            self.results["workers"]["error"] = f"--workers 2 did not answer: {str(e).strip().splitlines()[0][:200]}"
            say(f"  workers: {self.results['workers']['error']}")
            for child in [c for c in self.children if c.name in ("zmqwamp-w2", "pub-zmqwamp-w2")]:
                self.finish(child)
            return
        try:
            row = self.run_rpc(target, 64, 16)
            row["target"] = "zmqwamp --workers 2"
            ratio = row["calls_s"] / single["calls_s"] if single["calls_s"] else None
            self.results["workers"].update({"w2": row, "ratio": rnd(ratio, 2)})
            say(f"    workers 2: {row['calls_s']:.0f} calls/s vs 1 worker {single['calls_s']:.0f} calls/s = {times(ratio)} "
                f"[{row['bound']}; LG CPU max {row['cpu']['lg']['max']:.0f}%]")
        finally:
            self.stop_target(target)

    def stop_target(self, target: Target) -> None:
        for child in (target.server, target.publisher):
            self.finish(child)

    def run_profile(self) -> None:
        """Where a zmqwamp process spends its CPU under RPC (--profile-rpc, 64/16) and under fan-out.

        py-spy (sampling, on-CPU only, the process is not paused) on a plain
        zmqwamp; then cProfile (``twistd --profile``) for exact call counts."""
        dur = self.cfg["profile_duration"]
        saved = dict(self.cfg)
        self.cfg["rpc_duration"] = dur
        self.cfg["step"] = dur
        prof: dict = {"duration_s": dur, "rpc_load": "/".join(map(str, self.args.profile_rpc))}
        self.results["profile"] = prof
        try:
            pyspy = ensure_pyspy()
            if pyspy is None:
                self.note("profile: py-spy not available; cProfile only")
            else:
                target = self.start_zmqwamp("zmqwamp-spy")
                try:
                    for phase, run in (("rpc", lambda: self.run_rpc(target, *self.args.profile_rpc)),
                                       ("fanout", lambda: self.run_fanout(target, 100, [300]))):
                        out = RESULTS / f"profile-pyspy-{phase}.txt"
                        self._window_hook = lambda seconds, out=out: self.start(
                            f"py-spy-{phase}", [str(pyspy), "record", "--pid", str(target.server.pid), "--duration",
                                                str(max(1, int(seconds))), "--rate", "250", "--nonblocking", "--format", "raw",
                                                "--output", str(out)])
                        row = run()
                        self._window_hook = None
                        rows = row if isinstance(row, list) else [row]
                        for child in [c for c in self.children if c.name == f"py-spy-{phase}"]:
                            child.proc.wait(30)
                            self.finish(child)
                        prof[f"pyspy_{phase}"] = summarize_pyspy(out)
                        prof[f"pyspy_{phase}"]["load"] = (f"{rows[0]['calls_s']:.0f} calls/s" if phase == "rpc"
                                                          else f"{rows[0]['delivered_s']:.0f} deliveries/s")
                finally:
                    self._window_hook = None
                    self.stop_target(target)
            pst = RESULTS / "profile-zmqwamp.pstats"
            if pst.exists():
                pst.unlink()
            target = self.start_zmqwamp("zmqwamp-cprof", twistd_opts=["--profile", str(pst), "--profiler", "cprofile", "--savestats"])
            try:
                rpc = self.run_rpc(target, *self.args.profile_rpc)
                fan = self.run_fanout(target, 100, [300])
                calls = rpc["calls_s"] * dur  # in-window only: approximate per-call normalisation
            finally:
                target.server.stop(timeout=60)  # SIGTERM: twistd writes the profile on exit
                self.stop_target(target)
            if pst.exists():
                prof["cprofile"] = summarize_cprofile(pst, RESULTS / "profile-zmqwamp.txt")
                prof["cprofile"]["load"] = {"rpc_calls_s_under_cprofile": rpc["calls_s"],
                                            "fanout_deliveries": sum(r["received"] for r in fan), "rpc_calls_in_window": round(calls)}
            else:
                self.note("profile: twistd wrote no cProfile file")
        finally:
            self.cfg.update(saved)

    # -- the run -------------------------------------------------------------------
    def section(self, title: str, fn) -> None:
        """Run one scenario; a failure is noted and the bench goes on with the next."""
        say(title)
        started = time.monotonic()
        try:
            fn()
        except (BenchTimeout, KeyboardInterrupt):
            raise
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            self.note(f"{title.rstrip(' .')}: aborted: {type(e).__name__}: {first[:300]}")
            import traceback

            traceback.print_exc(file=self.log)
        finally:
            self.results.setdefault("section_s", {})[title.split(" (")[0].rstrip(" .")] = round(time.monotonic() - started, 1)

    def run(self) -> None:
        cfg = self.cfg
        args = self.args
        t_begin = time.monotonic()
        say(f"zmqwamp bench ({'quick' if args.quick else 'full'}): {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"load generator = {args.client} autobahn-python asyncio client, up to {args.lg_procs} processes per scenario")
        self.start_zmq_services()
        self.results["meta"]["zmqwamp_options"] = self.zmqwamp_load_options()
        say("starting targets ...")
        starters = {"zmqwamp": self.start_zmqwamp, "crossbar": self.start_crossbar, "limit": self.start_limit}
        if args.baseline:
            starters["baseline"] = lambda: self.start_zmqwamp("baseline", bin_dir=args.baseline / ".venv" / "bin")
        for name in args.targets:
            try:
                self.targets[name] = starters[name]()
            except (BenchTimeout, KeyboardInterrupt):
                raise
            except Exception as e:
                self.note(f"{name} did not start: {type(e).__name__}: {str(e).strip().splitlines()[0][:300]}")
        for t in self.targets.values():
            say(f"  {t.name:9} {t.url}  procedure={t.procedure} topic={t.topic} pids={t.pids()}")

        def idle():
            # first: each server is fresh, so RSS growth is the sessions' own
            for name, t in self.targets.items():
                n = cfg["idle"][name]
                row = self.run_idle(t, n)
                if name == "crossbar" and row["joined"] < n and n > 1000:
                    self.note(f"crossbar held {row['joined']}/{n} idle sessions; measuring it at 1,000")
                    row = self.run_idle(t, 1000)
                self.results["idle"].append(row)
            for t in self.targets.values():
                self.settle(t)

        def best_rpc(inflight: int, sessions: int, serializer: str = "json") -> dict[str, dict]:
            """Best of cfg['repeats'] runs per target (by calls/s), the targets interleaved:
            other load on the machine only ever slows a run down."""
            runs: dict[str, list[dict]] = {name: [] for name in self.targets}
            for _ in range(cfg["repeats"]):
                for name, t in self.targets.items():
                    runs[name].append(self.run_rpc(t, inflight, sessions, serializer))
            best = {}
            for name, rows in runs.items():
                best[name] = max(rows, key=lambda r: r["calls_s"])
                best[name]["runs_calls_s"] = [r["calls_s"] for r in rows]
            return best

        def rpc():
            for inflight, sessions in cfg["rpc_configs"]:
                for name, row in best_rpc(inflight, sessions).items():
                    self.results["rpc"].append(row)
                    say(f"    {name:9} {inflight:3} in flight / {sessions:2} sessions: {row['calls_s']:8.0f} calls/s "
                        f"p50 {num(row['p50_ms'])} p99 {num(row['p99_ms'])} ms  server CPU {row['cpu']['server']['total']:.0f}% "
                        f"LG CPU max {row['cpu']['lg']['max']:.0f}% x{row['lg_procs']} other {row['cpu']['other']['total']:.0f}% "
                        f"[{row['bound']}] runs {row['runs_calls_s']}")
            for inflight in cfg["raw_inflight"]:
                row = self.run_raw(inflight)
                self.results["raw_zmq"].append(row)
                say(f"    raw zmq   {inflight:3} in flight: {row['calls_s']:8.0f} calls/s p50 {num(row['p50_ms'])} p99 {num(row['p99_ms'])} ms")

        def serializers():
            inflight, sessions = cfg["ser_config"]
            for serializer in cfg["serializers"]:
                same = {r["target"]: r for r in self.results["rpc"] if r["inflight"] == inflight
                        and r["sessions"] == sessions and r["serializer"] == serializer}
                rows = same if len(same) == len(self.targets) else best_rpc(inflight, sessions, serializer)
                for name, row in rows.items():
                    self.results["serializers"].append(dict(row))
                    say(f"    {name:9} {serializer:8}: {row['calls_s']:8.0f} calls/s p99 {num(row['p99_ms'])} ms [{row['bound']}]")

        def fanout():
            for subscribers, rates in cfg["fanout"]:
                for name, t in self.targets.items():
                    try:
                        self.results["fanout"].extend(self.run_fanout(t, subscribers, rates))
                    finally:
                        self.settle(t)

        def workers():
            single = next((r for r in self.results["rpc"] if r["target"] == "zmqwamp" and r["inflight"] == 64
                           and r["sessions"] == 16), None)
            if "zmqwamp" not in self.targets or single is None:
                say("  workers: not measured (no zmqwamp RPC 64/16 baseline)")
                return
            self.run_workers(single)

        wanted = args.sections
        for key, title, fn in (("idle", "idle sessions (RSS per session) ...", idle), ("rpc", "RPC ...", rpc),
                               ("serializers", "serializers (RPC) ...", serializers), ("fanout", "fan-out ...", fanout),
                               ("workers", "workers ...", workers)):
            if key in wanted:
                self.section(title, fn)
        if args.profile and "zmqwamp" in self.targets:
            self.section(f"profile (py-spy, then cProfile, of a separate zmqwamp under RPC {args.profile_rpc[0]}/{args.profile_rpc[1]}, "
                         "then fan-out 100 subs @ 300/s) ...",
                         self.run_profile)
        self.results["elapsed_s"] = round(time.monotonic() - t_begin, 1)


# -- profiles ----------------------------------------------------------------------
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
    for (fn, ln, func), (cc, nc, tt, ct, callers) in sorted(stats.stats.items(), key=lambda kv: -kv[1][2]):
        if "poll" in func and "epoll" in func:
            continue
        top.append({"function": f"{_short(fn)}:{ln}({func})", "calls": nc, "tottime_s": round(tt, 3),
                    "pct_busy": round(100 * tt / busy, 1), "cumtime_s": round(ct, 3)})
        if len(top) == 20:
            break
    return {"file": str(pst.relative_to(ROOT)), "text": str(text_path.relative_to(ROOT)),
            "busy_s": round(busy, 2), "epoll_wait_s": round(idle, 2), "top_tottime": top}


def main() -> int:
    parser = argparse.ArgumentParser(description="zmqwamp bench: zmqwamp vs Crossbar+forwarder vs limit vs raw zmq")
    parser.add_argument("--quick", action="store_true", help="short smoke run (< 2 minutes)")
    parser.add_argument("--profile", action="store_true", help="also profile zmqwamp's hot path (cProfile)")
    parser.add_argument("--baseline", type=Path, default=None, metavar="CHECKOUT",
                        help="also run the zmqwamp of another checkout (with its own .venv, e.g. a git worktree of the "
                             "previous main) as target 'baseline', interleaved with this one; the report adds 'vs baseline'")
    parser.add_argument("--targets", default="zmqwamp,crossbar,limit",
                        help="comma-separated subset of zmqwamp,crossbar,limit")
    parser.add_argument("--lg-procs", type=int, default=2, help="load generator processes for multi-session scenarios")
    parser.add_argument("--client", default="lean", choices=["lean", "session"],
                        help="load generator client: lean (autobahn WebSocket + serializers, default) or session (ApplicationSession)")
    parser.add_argument("--out", default=str(RESULTS / "latest.json"))
    parser.add_argument("--max-minutes", type=float, default=None, help="hard bound on the run [quick 5, full 25]")
    parser.add_argument("--profile-rpc", default="64/16", metavar="IN/SESS", help="the RPC load profiled by --profile")
    parser.add_argument("--autobahn-frames", action="store_true",
                        help="lean client: read every frame with autobahn's parser (by default only until WELCOME)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)} (to iterate on one scenario)")
    parser.add_argument("--rpc", default=None, metavar="IN/SESS,...",
                        help="RPC configurations instead of the default ones, e.g. 16/1,64/16")
    args = parser.parse_args()
    args.sections = [s for s in args.sections.split(",") if s]
    try:
        args.profile_rpc = tuple(int(x) for x in args.profile_rpc.split("/"))
    except ValueError:
        parser.error("--profile-rpc wants IN/SESS, such as 64/16")
    bad = set(args.sections) - set(SECTIONS)
    if bad:
        parser.error(f"unknown sections: {bad}")
    args.targets = [t for t in args.targets.split(",") if t]
    bad = set(args.targets) - {"zmqwamp", "crossbar", "limit"}
    if bad:
        parser.error(f"unknown targets: {bad}")
    if args.baseline is not None:
        if not (args.baseline / ".venv" / "bin" / "twistd").exists():
            parser.error(f"--baseline {args.baseline}: no .venv/bin/twistd there (run 'make install' in that checkout)")
        args.targets.insert(args.targets.index("zmqwamp") + 1 if "zmqwamp" in args.targets else 0, "baseline")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]

    bench = Bench(args)
    if args.rpc:
        try:
            bench.cfg["rpc_configs"] = [tuple(int(x) for x in c.split("/")) for c in args.rpc.split(",") if c]
        except ValueError:
            parser.error("--rpc wants IN/SESS pairs such as 16/1,64/16")
    limit_s = 60 * (args.max_minutes or (5 if args.quick else 25))
    if "crossbar" in args.targets:
        ensure_crossbar()  # outside the time bound: a first install takes a few minutes

    def on_alarm(signum, frame):
        raise BenchTimeout(f"--max-minutes reached ({limit_s / 60:g} min)")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    signal.alarm(int(limit_s))
    crossbar_version = CROSSBAR_VERSION
    bench.results["meta"] = {
        "cores": os.cpu_count(), "python": platform.python_version(), "crossbar": crossbar_version, "quick": args.quick,
        "when": time.strftime("%Y-%m-%d %H:%M:%S"), "nofile": nofile, "lg_procs": args.lg_procs, "client": args.client,
        "settings": {k: v for k, v in bench.cfg.items()},
        "autobahn_frames": args.autobahn_frames,
        "load_generator": "bench/loadgen.py: autobahn-python asyncio client (lean: autobahn WebSocket + serializers, "
                          "frames after WELCOME read by its own parser unless --autobahn-frames; session: ApplicationSession); "
                          "RPC over >1 session and fan-out use --lg-procs processes, idle sessions 2,500 per process",
    }
    status = 0
    try:
        bench.run()
    except (BenchTimeout, KeyboardInterrupt, Exception) as e:
        status = 1
        bench.note(f"run aborted: {type(e).__name__}: {e}")
        import traceback

        traceback.print_exc(file=bench.log)
    finally:
        signal.alarm(0)
        bench.stop_all()
    text, targets = build_report(bench.results, args.quick)
    bench.results["targets"] = targets
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(bench.results, indent=1, default=str))
    out.with_suffix(".txt").write_text(text + "\n")
    print()
    print(text)
    print(f"\nwrote {out} and {out.with_suffix('.txt')} (child output: {RESULTS / 'bench.log'})")
    return status


if __name__ == "__main__":
    sys.exit(main())
