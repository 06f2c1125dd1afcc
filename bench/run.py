"""zmqwamp bench (issue 7): zmqwamp vs Crossbar + forwarder (anchor) vs a bare
autobahn WAMP server (limit) vs raw pyzmq, side by side in one invocation.

    .venv/bin/python bench/run.py [--quick] [--profile]      (or: make bench)

Prints a table (absolute figures, ratios to the anchor and the limit, PASS/FAIL
per target of issue 7) and writes bench/results/latest.json (+ latest.txt).
Everything listens on and talks to 127.0.0.1 only; every process it starts is
stopped by its PID; the whole run is bounded by --max-minutes.

This file is the command line and the wiring: targets.py starts and stops the
processes, scenarios.py measures (with measure.py), profiling.py does --profile,
report.py writes the report, crossbar_install.py installs Crossbar and py-spy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, BenchTimeout, say  # noqa: E402
from crossbar_install import CROSSBAR_VERSION, ensure_crossbar  # noqa: E402
from profiling import run_profile  # noqa: E402
from report import build_report  # noqa: E402
from scenarios import SECTIONS, Scenarios, settings  # noqa: E402
from targets import ZMQWAMP_LOAD_OPTIONS, Processes  # noqa: E402


def parse_args() -> argparse.Namespace:
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
    parser.add_argument("--history", type=int, default=0, metavar="N",
                        help="also run target 'history': a zmqwamp whose fan-out topic is an alias with a history "
                             "of N messages (issue 17), in the fan-out section only; the report sets it beside zmqwamp")
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
    if args.history:
        if args.history < 0 or "zmqwamp" not in args.targets:
            parser.error("--history N wants N > 0 and the target zmqwamp (to compare with)")
        args.targets.insert(args.targets.index("zmqwamp") + 1, "history")
    if args.rpc:
        try:
            args.rpc = [tuple(int(x) for x in c.split("/")) for c in args.rpc.split(",") if c]
        except ValueError:
            parser.error("--rpc wants IN/SESS pairs such as 16/1,64/16")
    return args


def raise_nofile() -> int:
    """Raise RLIMIT_NOFILE (the children inherit it: 10,000 idle sessions); return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def section(sc: Scenarios, log, title: str, fn) -> None:
    """Run one scenario; a failure is noted and the bench goes on with the next."""
    say(title)
    started = time.monotonic()
    try:
        fn()
    except (BenchTimeout, KeyboardInterrupt):
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        sc.note(f"{title.rstrip(' .')}: aborted: {type(e).__name__}: {first[:300]}")
        traceback.print_exc(file=log)
    finally:
        sc.results.setdefault("section_s", {})[title.split(" (")[0].rstrip(" .")] = round(time.monotonic() - started, 1)


def run(args: argparse.Namespace, procs: Processes, sc: Scenarios) -> None:
    """Start the REP and the targets, then run the chosen sections (and --profile) over them."""
    t_begin = time.monotonic()
    say(f"zmqwamp bench ({'quick' if args.quick else 'full'}): {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load generator = {args.client} autobahn-python asyncio client, up to {args.lg_procs} processes per scenario")
    procs.start_zmq_services()
    say("starting targets ...")
    starters = {"zmqwamp": procs.start_zmqwamp, "crossbar": procs.start_crossbar, "limit": procs.start_limit}
    if args.baseline:
        starters["baseline"] = lambda: procs.start_zmqwamp("baseline", bin_dir=args.baseline / ".venv" / "bin")
    if args.history:
        starters["history"] = lambda: procs.start_zmqwamp("history", history=args.history)
    for name in args.targets:
        try:
            sc.targets[name] = starters[name]()
        except (BenchTimeout, KeyboardInterrupt):
            raise
        except Exception as e:
            sc.note(f"{name} did not start: {type(e).__name__}: {str(e).strip().splitlines()[0][:300]}")
    for t in sc.targets.values():
        say(f"  {t.name:9} {t.url}  procedure={t.procedure} topic={t.topic} pids={t.pids()}")
    for key, title in SECTIONS.items():
        if key in args.sections:
            section(sc, procs.log, title, getattr(sc, key))
    if args.profile and "zmqwamp" in sc.targets:
        section(sc, procs.log, f"profile (py-spy, then cProfile, of a separate zmqwamp under RPC {args.profile_rpc[0]}/{args.profile_rpc[1]}, "
                "then fan-out 100 subs @ 300/s) ...",
                lambda: run_profile(sc, args.profile_rpc))
    sc.results["elapsed_s"] = round(time.monotonic() - t_begin, 1)


def main() -> int:
    args = parse_args()
    nofile = raise_nofile()
    cfg = settings(args.quick)
    if args.rpc:
        cfg["rpc_configs"] = args.rpc
    RESULTS.mkdir(parents=True, exist_ok=True)
    log = open(RESULTS / "bench.log", "w", buffering=1)
    procs = Processes(log, Path(tempfile.mkdtemp(prefix="zmqwamp-bench-")), args.client, args.autobahn_frames)
    results: dict = {"rpc": [], "raw_zmq": [], "fanout": [], "idle": [], "serializers": [], "workers": None,
                     "profile": None, "notes": []}
    sc = Scenarios(procs, cfg, results, args.lg_procs, args.quick)
    limit_s = 60 * (args.max_minutes or (5 if args.quick else 25))
    if "crossbar" in args.targets:
        ensure_crossbar()  # outside the time bound: a first install takes a few minutes

    def on_alarm(signum, frame):
        raise BenchTimeout(f"--max-minutes reached ({limit_s / 60:g} min)")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    signal.alarm(int(limit_s))
    results["meta"] = {
        "cores": os.cpu_count(), "python": platform.python_version(), "crossbar": CROSSBAR_VERSION, "quick": args.quick,
        "when": time.strftime("%Y-%m-%d %H:%M:%S"), "nofile": nofile, "lg_procs": args.lg_procs, "client": args.client,
        "settings": {**cfg, "history": args.history},
        "autobahn_frames": args.autobahn_frames,
        "load_generator": "bench/loadgen.py: autobahn-python asyncio client (lean: autobahn WebSocket + serializers, "
                          "frames after WELCOME read by its own parser unless --autobahn-frames; session: ApplicationSession); "
                          "RPC over >1 session and fan-out use --lg-procs processes, idle sessions 2,500 per process",
        "zmqwamp_options": list(ZMQWAMP_LOAD_OPTIONS),
    }
    status = 0
    try:
        run(args, procs, sc)
    except (BenchTimeout, KeyboardInterrupt, Exception) as e:
        status = 1
        sc.note(f"run aborted: {type(e).__name__}: {e}")
        traceback.print_exc(file=log)
    finally:
        signal.alarm(0)
        procs.stop_all()
    text, targets = build_report(results, args.quick)
    results["targets"] = targets
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))
    out.with_suffix(".txt").write_text(text + "\n")
    print()
    print(text)
    print(f"\nwrote {out} and {out.with_suffix('.txt')} (child output: {RESULTS / 'bench.log'})")
    return status


if __name__ == "__main__":
    sys.exit(main())
