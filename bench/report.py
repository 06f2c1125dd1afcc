"""The report: the tables, the "zmqwamp vs baseline" block and the Targets of issue 7, from a run's results."""

from __future__ import annotations


# -- figures -----------------------------------------------------------------------
def rnd(v, n=3):
    """``v`` rounded, None kept (a figure that could not be measured)."""
    return None if v is None else round(v, n)


def num(v, fmt="{:.2f}"):
    """``v`` formatted for a table cell, '-' for None."""
    return "-" if v is None else fmt.format(v)


def times(v):
    """A ratio as '1.23x', '-' for None."""
    return "-" if v is None else f"{v:.2f}x"


def ratio(a, b):
    """a / b, or None when either is missing or b is 0."""
    if a is None or b is None or not b:
        return None
    return a / b


class Report:
    """The text of one run's report, block by block, and the Targets of issue 7 it checks."""

    def __init__(self, results: dict, quick: bool) -> None:
        self.results = results
        self.quick = quick
        self.lines: list[str] = []
        self.targets: list[dict] = []

    def out(self, line: str) -> None:
        self.lines.append(line)

    def rpc_of(self, name, inflight, sessions, serializer="json"):
        """The RPC (or serializers) row of one target and configuration, or None."""
        for r in self.results["rpc"] + self.results["serializers"]:
            if r["target"] == name and r["inflight"] == inflight and r["sessions"] == sessions and r["serializer"] == serializer:
                return r
        return None

    def fan_of(self, name, subs, rate):
        """The fan-out row of one target and step, or None."""
        return next((r for r in self.results["fanout"] if r["target"] == name and r["subscribers"] == subs and r["rate"] == rate), None)

    def rpc_configs(self) -> list[tuple[int, int]]:
        """(in flight, sessions) of the RPC rows, in the order they ran."""
        configs = []
        for r in self.results["rpc"]:
            if (r["inflight"], r["sessions"]) not in configs:
                configs.append((r["inflight"], r["sessions"]))
        return configs

    def fanout_peaks(self) -> tuple[dict, dict]:
        """Per (target, subscribers): the most delivered/s, and the server us/delivery at the busiest step that still delivered."""
        maxdel, effdel = {}, {}
        for r in self.results["fanout"]:
            key = (r["target"], r["subscribers"])
            maxdel[key] = max(maxdel.get(key, 0.0), r["delivered_s"])
            if r["server_us_per_delivery"] and r["delivered_s"] >= 0.5 * max(r["expected_s"], 1) and r["delivered_s"] >= maxdel[key]:
                effdel[key] = r["server_us_per_delivery"]  # at the busiest step that still delivered
        return maxdel, effdel

    def header(self) -> None:
        """What was compared, how, and with which zmqwamp options."""
        results, out = self.results, self.out
        quick = self.quick
        out(f"zmqwamp bench — {'QUICK smoke run (short windows: indicative only)' if quick else 'full run'} — "
            f"{results['meta']['cores']} cores, {results['meta']['when']}")
        out("anchor = Crossbar " + results["meta"]["crossbar"] + " + forwarder component (shared DEALER, SUB->publish); "
            "limit = bare autobahn WAMP server (canned RESULT, prepared EVENTs, no zmq)")
        frames = ("autobahn's frame parser throughout" if results["meta"].get("autobahn_frames")
                  else "frames after WELCOME read by its own few-line parser") if results["meta"]["client"] == "lean" else "stock"
        out(f"LG = load generator ({results['meta']['client']} autobahn-python asyncio client, {frames}; "
            "'LG' = its processes, 'LG CPU%' = the busiest one); "
            "'bound' = who was at >=85% of a core (server, LG, REP) or 'cores' when the machine was >=90% busy; "
            "'other%' = CPU used outside the measured processes (publisher, bench, other users of the machine)")
        out("zmqwamp run with: " + (" ".join(results["meta"].get("zmqwamp_options") or []) or "(defaults)"))
        out("")

    def rpc_table(self) -> None:
        """RPC per (in flight, sessions), then raw zmq."""
        results, out = self.results, self.out
        out("RPC (json; CALL 'hello' -> echo REP 'got this hello')")
        hdr = f"{'in-flight/sess':>14} {'target':<10} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'srv CPU%':>8} {'srv us/call':>11} {'LG':>3} {'LG CPU%':>7} {'other%':>6} {'bound':<14} {'vs anchor':>9} {'vs limit':>8} {'p99 vs anch':>11}"
        out(hdr)
        out("-" * len(hdr))
        for inflight, sessions in self.rpc_configs():
            anchor = self.rpc_of("crossbar", inflight, sessions)
            limit = self.rpc_of("limit", inflight, sessions)
            for r in [x for x in results["rpc"] if (x["inflight"], x["sessions"]) == (inflight, sessions)]:
                va = ratio(r["calls_s"], anchor and anchor["calls_s"]) if r["target"] != "crossbar" else None
                vl = ratio(r["calls_s"], limit and limit["calls_s"]) if r["target"] != "limit" else None
                p99a = ratio(r["p99_ms"], anchor and anchor["p99_ms"]) if r["target"] != "crossbar" else None
                out(f"{f'{inflight}/{sessions}':>14} {r['target']:<10} {r['calls_s']:>9.0f} {num(r['p50_ms']):>8} {num(r['p99_ms']):>8} "
                    f"{r['cpu']['server']['total']:>8.0f} {num(r['server_us_per_call'], '{:.0f}'):>11} {r['lg_procs']:>3} "
                    f"{r['cpu']['lg']['max']:>7.0f} {r['cpu']['other']['total']:>6.0f} {r['bound']:<14} {times(va):>9} {times(vl):>8} {times(p99a):>11}")
        for r in results["raw_zmq"]:
            out(f"{str(r['inflight']) + '/-':>14} {'raw zmq':<10} {r['calls_s']:>9.0f} {num(r['p50_ms']):>8} {num(r['p99_ms']):>8} "
                f"{'-':>8} {'-':>11} {1:>3} {r['cpu']['lg']['max']:>7.0f} {r['cpu']['other']['total']:>6.0f} {r['bound']:<14}   (DEALER->REP, REP CPU {r['cpu']['rep']['max']:.0f}%)")
        out("")

    def serializers_table(self) -> None:
        """RPC with json, msgpack and cbor."""
        results, out = self.results, self.out
        if results["serializers"]:
            inflight, sessions = results["serializers"][0]["inflight"], results["serializers"][0]["sessions"]
            out(f"Serializers (RPC {inflight} in flight / {sessions} sessions)")
            hdr = f"{'serializer':<10} {'target':<10} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'srv us/call':>11} {'bound':<14} {'vs anchor':>9} {'vs limit':>8}"
            out(hdr)
            out("-" * len(hdr))
            for r in results["serializers"]:
                anchor = self.rpc_of("crossbar", inflight, sessions, r["serializer"])
                limit = self.rpc_of("limit", inflight, sessions, r["serializer"])
                va = ratio(r["calls_s"], anchor and anchor["calls_s"]) if r["target"] != "crossbar" else None
                vl = ratio(r["calls_s"], limit and limit["calls_s"]) if r["target"] != "limit" else None
                out(f"{r['serializer']:<10} {r['target']:<10} {r['calls_s']:>9.0f} {num(r['p50_ms']):>8} {num(r['p99_ms']):>8} "
                    f"{num(r['server_us_per_call'], '{:.0f}'):>11} {r['bound']:<14} {times(va):>9} {times(vl):>8}")
            out("")

    def fanout_table(self) -> None:
        """Fan-out per (subscribers, rate), then the peaks."""
        results, out = self.results, self.out
        out("Fan-out (one PUB -> N WebSocket subscribers; json; payload ~110 B JSON with a CLOCK_MONOTONIC timestamp)")
        hdr = f"{'subs':>5} {'rate/s':>7} {'target':<10} {'expected/s':>10} {'delivered/s':>11} {'loss%':>6} {'p50 ms':>8} {'p99 ms':>9} {'srv CPU%':>8} {'srv us/msg':>10} {'LG CPU%':>7} {'other%':>6} {'bound':<14} {'vs anchor':>9} {'vs limit':>8}"
        out(hdr)
        out("-" * len(hdr))
        seen = []
        for r in results["fanout"]:
            if (r["subscribers"], r["rate"]) not in seen:
                seen.append((r["subscribers"], r["rate"]))
        for subs, rate in seen:
            for r in [x for x in results["fanout"] if (x["subscribers"], x["rate"]) == (subs, rate)]:
                anchor, limit = self.fan_of("crossbar", subs, rate), self.fan_of("limit", subs, rate)
                va = ratio(r["delivered_s"], anchor and anchor["delivered_s"]) if r["target"] != "crossbar" else None
                vl = ratio(r["delivered_s"], limit and limit["delivered_s"]) if r["target"] != "limit" else None
                out(f"{subs:>5} {rate:>7g} {r['target']:<10} {r['expected_s']:>10.0f} {r['delivered_s']:>11.0f} {r['loss_pct']:>6.1f} "
                    f"{num(r['p50_ms']):>8} {num(r['p99_ms']):>9} {r['cpu']['server']['total']:>8.0f} {num(r['server_us_per_delivery'], '{:.1f}'):>10} "
                    f"{r['cpu']['lg']['max']:>7.0f} {r['cpu']['other']['total']:>6.0f} {r['bound']:<14} {times(va):>9} {times(vl):>8}")
        maxdel, effdel = self.fanout_peaks()
        for subs in sorted({s for _, s in maxdel}):
            parts = [f"{name} {maxdel[(name, subs)]:.0f}/s" for name in ("zmqwamp", "crossbar", "limit") if (name, subs) in maxdel]
            out(f"  max delivered/s to {subs} subscribers: " + ", ".join(parts))
            parts = [f"{name} {effdel[(name, subs)]:.1f} us = {1e6 / effdel[(name, subs)]:.0f}/s per core" for name in ("zmqwamp", "crossbar", "limit")
                     if (name, subs) in effdel]
            if parts:
                out("  server CPU per delivery at that step (capacity if the server had a whole core): " + ", ".join(parts))
        out("")

    def baseline_table(self) -> None:
        """zmqwamp vs baseline (--baseline), when the run had one."""
        results, out = self.results, self.out
        if any(r["target"] == "baseline" for r in results["rpc"] + results["fanout"]):
            out("zmqwamp vs baseline (--baseline: another checkout's zmqwamp, run interleaved in this same run; "
                "throughput ratio > 1 and CPU/p99 ratio < 1 favour this checkout)")
            hdr = f"{'scenario':<24} {'this':>10} {'baseline':>10} {'ratio':>7} {'srv us this':>11} {'baseline':>9} {'ratio':>7} {'p99 ratio':>9}"
            out(hdr)
            out("-" * len(hdr))
            for r in results["rpc"] + results["serializers"]:
                if r["target"] != "zmqwamp":
                    continue
                b = self.rpc_of("baseline", r["inflight"], r["sessions"], r["serializer"])
                if b is None:
                    continue
                out(f"{'RPC ' + str(r['inflight']) + '/' + str(r['sessions']) + ' ' + r['serializer']:<24} {r['calls_s']:>10.0f} "
                    f"{b['calls_s']:>10.0f} {times(ratio(r['calls_s'], b['calls_s'])):>7} {num(r['server_us_per_call'], '{:.0f}'):>11} "
                    f"{num(b['server_us_per_call'], '{:.0f}'):>9} {times(ratio(r['server_us_per_call'], b['server_us_per_call'])):>7} "
                    f"{times(ratio(r['p99_ms'], b['p99_ms'])):>9}")
            for r in results["fanout"]:
                if r["target"] != "zmqwamp":
                    continue
                b = self.fan_of("baseline", r["subscribers"], r["rate"])
                if b is None:
                    continue
                out(f"{'fan-out ' + str(r['subscribers']) + ' @ ' + format(r['rate'], 'g') + '/s':<24} {r['delivered_s']:>10.0f} "
                    f"{b['delivered_s']:>10.0f} {times(ratio(r['delivered_s'], b['delivered_s'])):>7} "
                    f"{num(r['server_us_per_delivery'], '{:.1f}'):>11} {num(b['server_us_per_delivery'], '{:.1f}'):>9} "
                    f"{times(ratio(r['server_us_per_delivery'], b['server_us_per_delivery'])):>7} {times(ratio(r['p99_ms'], b['p99_ms'])):>9}")
            out("")

    def history_table(self) -> None:
        """Fan-out without and with a history (--history N), side by side: the issue 17 target is within 10 %."""
        results, out = self.results, self.out
        rows = [(r, self.fan_of("history", r["subscribers"], r["rate"])) for r in results["fanout"] if r["target"] == "zmqwamp"]
        rows = [(r, h) for r, h in rows if h is not None]
        if not rows:
            return
        n = results.get("meta", {}).get("settings", {}).get("history", "N")
        out(f"Fan-out without / with history (--history {n}: the topic is an alias keeping the last {n} messages; "
            "two bridges, run interleaved in this same run; CPU ratio < 1.10 is the target)")
        hdr = (f"{'scenario':<24} {'without/s':>10} {'with/s':>10} {'ratio':>7} {'srv us without':>14} {'with':>7} "
               f"{'CPU ratio':>9} {'p99 ratio':>9} {'bound (without, with)':<24}")
        out(hdr)
        out("-" * len(hdr))
        cpu_ratios = []
        for r, h in rows:
            cpu = ratio(h["server_us_per_delivery"], r["server_us_per_delivery"])
            if cpu is not None:
                cpu_ratios.append(cpu)
            out(f"{'fan-out ' + str(r['subscribers']) + ' @ ' + format(r['rate'], 'g') + '/s':<24} {r['delivered_s']:>10.0f} "
                f"{h['delivered_s']:>10.0f} {times(ratio(h['delivered_s'], r['delivered_s'])):>7} "
                f"{num(r['server_us_per_delivery'], '{:.2f}'):>14} {num(h['server_us_per_delivery'], '{:.2f}'):>7} "
                f"{times(cpu):>9} {times(ratio(h['p99_ms'], r['p99_ms'])):>9} {r['bound'] + ', ' + h['bound']:<24}")
        if cpu_ratios:
            cpu_ratios.sort()
            median = cpu_ratios[len(cpu_ratios) // 2]
            verdict = "PASS" if median <= 1.10 else "FAIL"
            results["history_check"] = {"median_cpu_ratio": median, "worst_cpu_ratio": cpu_ratios[-1], "pass": median <= 1.10}
            out(f"  server CPU per delivery with history / without: median {median:.2f}x, worst {cpu_ratios[-1]:.2f}x "
                f"over {len(cpu_ratios)} steps -> within 10 %: {verdict}")
        out("")

    def idle_table(self) -> None:
        """Idle sessions: RSS per session."""
        results, out = self.results, self.out
        out("Idle sessions (server RSS growth / sessions held; each server fresh)")
        hdr = f"{'target':<10} {'sessions':>8} {'held':>6} {'connect s':>9} {'RSS base MB':>11} {'RSS MB':>8} {'KB/session':>10} {'vs anchor':>9} {'vs limit':>8}"
        out(hdr)
        out("-" * len(hdr))
        idle = {r["target"]: r for r in results["idle"]}
        for r in results["idle"]:
            a, lim = idle.get("crossbar"), idle.get("limit")
            va = ratio(r["kb_per_session"], a and a["kb_per_session"]) if r["target"] != "crossbar" else None
            vl = ratio(r["kb_per_session"], lim and lim["kb_per_session"]) if r["target"] != "limit" else None
            out(f"{r['target']:<10} {r['sessions']:>8} {r['joined']:>6} {r['connect_s']:>9.1f} {r['rss_base_mb']:>11.1f} {r['rss_mb']:>8.1f} "
                f"{num(r['kb_per_session'], '{:.1f}'):>10} {times(va):>9} {times(vl):>8}")
        out("")

    def workers_line(self) -> None:
        """--workers 2 against one process."""
        results, out = self.results, self.out
        w = results.get("workers")
        if w is None:
            out("workers: not measured in this run")
        elif w.get("w2") is None:
            out(f"workers: not measured: {w.get('error', 'no result')}")
        else:
            out(f"workers: --workers 2 {w['w2']['calls_s']:.0f} calls/s vs 1 worker {w['w1']['calls_s']:.0f} calls/s "
                f"(RPC 64/16) = {times(w['ratio'])}; bound with 2 workers: {w['w2']['bound']} "
                f"(LG CPU max {w['w2']['cpu']['lg']['max']:.0f}%, REP CPU {w['w2']['cpu']['rep']['total']:.0f}%, "
                f"machine {w['w2']['cpu']['machine']['total']:.0f}% of {100 * results['meta']['cores']}%)")
            out(f"  server CPU per call: 1 worker {num(w['w1']['server_us_per_call'], '{:.0f}')} us, 2 workers "
                f"{num(w['w2']['server_us_per_call'], '{:.0f}')} us (both processes together); this machine has "
                f"{results['meta']['cores']} cores for the workers, the REP and the LG together")
        out("")

    def check_targets(self) -> None:
        """The Targets of issue 7 on this run's figures (PASS, FAIL or n/a)."""
        results, targets = self.results, self.targets
        maxdel, effdel = self.fanout_peaks()
        idle = {r["target"]: r for r in results["idle"]}
        w = results.get("workers")

        def target(name, value, want, op, detail=""):
            if value is None:
                status = "n/a"
            else:
                status = "PASS" if (value >= want if op == ">=" else value <= want) else "FAIL"
            targets.append({"target": name, "measured": rnd(value, 3), "want": f"{op} {want}", "status": status, "detail": detail})

        for inflight, sessions in self.rpc_configs():
            z, a, lim = self.rpc_of("zmqwamp", inflight, sessions), self.rpc_of("crossbar", inflight, sessions), self.rpc_of("limit", inflight, sessions)
            if not z:
                continue
            if inflight in (16, 64):
                target(f"RPC {inflight}/{sessions} calls/s vs anchor", ratio(z["calls_s"], a and a["calls_s"]), 2.0, ">=",
                       f"bound: zmqwamp {z['bound']}, anchor {a['bound'] if a else '-'}; per server CPU: "
                       f"{times(ratio(a and a['server_us_per_call'], z['server_us_per_call']))}")
                target(f"RPC {inflight}/{sessions} p99 vs anchor", ratio(z["p99_ms"], a and a["p99_ms"]), 0.5, "<=")
            detail = (f"bound: zmqwamp {z['bound']}, limit {lim['bound'] if lim else '-'}; per server CPU: "
                      f"{times(ratio(lim and lim['server_us_per_call'], z['server_us_per_call']))}")
            raw1 = next((r for r in results.get("raw_zmq") or [] if r["inflight"] == 1), None)
            if inflight == 1 and lim and raw1:
                # One call at a time is a chain of round trips: the limit's plus a bare zmq one is
                # what a bridge that cost nothing of its own would take.
                ceiling = 1 / (1 / lim["calls_s"] + 1 / raw1["calls_s"])
                detail += (f"; the limit's round trip plus a bare zmq one: {ceiling:.0f} calls/s = "
                           f"{times(ratio(ceiling, lim['calls_s']))} the limit, the most any bridge with a zmq hop gets here "
                           f"(zmqwamp at {times(ratio(z['calls_s'], ceiling))} of that)")
            target(f"RPC {inflight}/{sessions} calls/s vs limit", ratio(z["calls_s"], lim and lim["calls_s"]), 0.7, ">=", detail)
        big = max((s for _, s in maxdel), default=None)
        if big is not None:
            z = maxdel.get(("zmqwamp", big))
            ez = effdel.get(("zmqwamp", big))
            target(f"fan-out {big} subs max delivered/s vs anchor", ratio(z, maxdel.get(("crossbar", big))), 3.0, ">=",
                   f"per server CPU: {times(ratio(effdel.get(('crossbar', big)), ez))}")
            target(f"fan-out {big} subs max delivered/s vs limit", ratio(z, maxdel.get(("limit", big))), 0.8, ">=",
                   f"per server CPU: {times(ratio(effdel.get(('limit', big)), ez))}")
        z, a = idle.get("zmqwamp"), idle.get("crossbar")
        if z:
            target(f"idle: {z['sessions']} sessions held", z["joined"] / z["sessions"], 1.0, ">=", f"{z['joined']}/{z['sessions']}")
            target("idle: RSS/session vs anchor", ratio(z["kb_per_session"], a and a["kb_per_session"]), 0.5, "<=",
                   f"anchor measured at {a['joined'] if a else '-'} sessions")
        if w and w.get("w2"):
            target("--workers 2 vs 1 (RPC 64/16)", w["ratio"], 1.6, ">=",
                   f"bound with 2 workers: {w['w2']['bound']}" + (" (the LG/cores are the bottleneck)" if ("LG" in w["w2"]["bound"] or "cores" in w["w2"]["bound"]) else ""))
        else:
            why = "workers: not measured in this run" if w is None else (w.get("error") or "not measured")
            targets.append({"target": "--workers 2 vs 1", "measured": None, "want": ">= 1.6", "status": "n/a", "detail": why})

    def targets_table(self) -> None:
        """The Targets block."""
        out, targets = self.out, self.targets
        out("Targets (issue 7)")
        hdr = f"{'target':<44} {'measured':>9} {'want':>7}  {'':<5} detail"
        out(hdr)
        out("-" * 100)
        for t in targets:
            meas = "-" if t["measured"] is None else (f"{t['measured']:.2f}x" if "held" not in t["target"] else f"{t['measured'] * 100:.0f}%")
            want = t["want"] + ("x" if "held" not in t["target"] else "")
            if "held" in t["target"]:
                want = ">= 100%"
            out(f"{t['target']:<44} {meas:>9} {want:>7}  {t['status']:<5} {t['detail']}")
        passed = sum(t["status"] == "PASS" for t in targets)
        failed = sum(t["status"] == "FAIL" for t in targets)
        out(f"targets: {passed} PASS, {failed} FAIL, {len(targets) - passed - failed} n/a")

    def profiles(self) -> None:
        """py-spy and cProfile summaries (--profile)."""
        results, out = self.results, self.out
        p = results.get("profile")
        if p:
            for phase in ("rpc", "fanout"):
                sp = p.get(f"pyspy_{phase}")
                if not sp or "error" in sp:
                    continue
                out("")
                out(f"Profile: py-spy, zmqwamp under {'RPC ' + p.get('rpc_load', '64/16') if phase == 'rpc' else 'fan-out 100 subs @ 300/s'} "
                    f"({sp.get('load', '')}; {sp['samples']} on-CPU samples; stacks: {sp['file']})")
                out("  self time by area: " + ", ".join(f"{k} {v}%" for k, v in list(sp["areas_self_pct"].items())[:10]))
                out("  inclusive (share of on-CPU samples with the frame on the stack):")
                for t in sp["inclusive"][:14]:
                    out(f"    {t['pct']:>5}%  {t['frame']}")
                out("  top self:")
                for t in sp["top_self"][:8]:
                    out(f"    {t['pct']:>5}%  {t['frame']}")
            cp = p.get("cprofile")
            if cp:
                out("")
                out(f"Profile: cProfile (twistd --profile), RPC {p.get('rpc_load', '64/16')} then fan-out; {cp['busy_s']}s busy "
                    f"(+{cp['epoll_wait_s']}s waiting in epoll); text: {cp['text']}")
                out(f"  {'%busy':>6} {'self s':>7} {'calls':>9}  function")
                for t in cp["top_tottime"][:12]:
                    out(f"  {t['pct_busy']:>6} {t['tottime_s']:>7} {t['calls']:>9}  {t['function']}")

    def notes(self) -> None:
        """What went wrong or was adjusted during the run."""
        results, out = self.results, self.out
        if results["notes"]:
            out("")
            out("Notes:")
            for n in results["notes"]:
                out(f"  - {n}")


def build_report(results: dict, quick: bool) -> tuple[str, list[dict]]:
    """The report's text and the Targets (list of dicts, as in the JSON)."""
    report = Report(results, quick)
    for block in (report.header, report.rpc_table, report.serializers_table, report.fanout_table, report.history_table, report.baseline_table,
                  report.idle_table, report.workers_line, report.check_targets, report.targets_table, report.profiles,
                  report.notes):
        block()
    return "\n".join(report.lines), report.targets
