"""The processes of a run, each started here and stopped by its PID: the echo REP, the publishers,
the targets (zmqwamp, the --baseline checkout's zmqwamp, Crossbar + forwarder, the limit server)
and the load generators, plus the probe that a target answers a call before it is measured."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from common import BENCH, REALM, ROOT, Child, free_port, proc_tree
from crossbar_install import ensure_crossbar

PY = sys.executable  # the project's venv python: autobahn, pyzmq, twisted
BIN = Path(PY).parent
# zmqwamp's admission limits protect a production bridge from one abusive peer;
# every bench client comes from 127.0.0.1, so they are raised, on every zmqwamp
# the bench runs (the --baseline one too).  Flow control (outgoing buffer,
# slow-consumer policy) stays at its defaults: that is the product as shipped.
ZMQWAMP_LOAD_OPTIONS = [
    "--max-sessions", "20000",
    "--max-sessions-per-peer", "20000",
    "--max-calls-per-second", "10000000",
    "--max-calls-in-flight", "4096",
    # issue 21's bound on every WAMP message of a session (default 1,000/s) ends an RPC 16/1 session at once
    "--max-messages-per-second", "10000000",
]


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


class Processes:
    """Every child of a run (output to ``log``, bridges run in ``tmp``); stop_all() stops them by PID, newest first.

    ``client`` and ``autobahn_frames`` are the load generator's --client and --autobahn-frames."""

    def __init__(self, log, tmp: Path, client: str, autobahn_frames: bool) -> None:
        self.log = log
        self.tmp = tmp
        self.client = client
        self.autobahn_frames = autobahn_frames
        self.children: list[Child] = []

    def start(self, name: str, argv: list[str], **kw) -> Child:
        child = Child(name, argv, log=self.log, **kw)
        self.children.append(child)
        return child

    def finish(self, child: Child) -> None:
        child.stop(timeout=10)
        if child in self.children:
            self.children.remove(child)

    def stop_target(self, target: Target) -> None:
        for child in (target.server, target.publisher):
            self.finish(child)

    def stop_all(self) -> None:
        for child in reversed(self.children):
            try:
                child.stop(timeout=15)
            except Exception as e:  # keep stopping the others
                self.log.write(f"stopping {child.name} (pid {child.pid}): {e}\n")
        self.children.clear()

    # -- services ------------------------------------------------------------------
    def start_zmq_services(self) -> None:
        """The echo REP every target forwards calls to."""
        rep = self.start("rep", [PY, str(ROOT / "examples/echo_rep.py"), "tcp://127.0.0.1:*"])
        self.rep = rep
        self.rep_addr = rep.wait_for(r"bound to (\S+)", 20)[0].group(1)

    def start_timed_pub(self, name: str) -> tuple[Child, str]:
        pub = self.start(name, [PY, str(BENCH / "timed_pub.py"), "tcp://127.0.0.1:*"], stdin=True)
        return pub, pub.wait_for(r"bound to (\S+)", 20)[0].group(1)

    # -- targets -------------------------------------------------------------------
    def start_zmqwamp(self, name: str = "zmqwamp", extra: list[str] = (), twistd_opts: list[str] = (),
                      port: int = 0, probe_timeout: float = 60, bin_dir: Path = BIN, history: int = 0) -> Target:
        """Run a zmqwamp bridge; ``bin_dir``: the venv bin of another checkout (``--baseline``).

        ``history``: the topic is an alias of the PUB with a history of that many messages (``--history``).
        """
        pub, pub_addr = self.start_timed_pub(f"pub-{name}")
        extra = [*ZMQWAMP_LOAD_OPTIONS, *extra]
        topic = pub_addr
        if history:
            config = self.tmp / f"{name}.toml"
            held = max(4 * 1024 * 1024, history * 1024)  # bounded by the count: ~110 B messages
            config.write_text(f"max_history_bytes = {max(64 * 1024 * 1024, held)}\n"
                              f'[endpoints.bench-history]\naddress = "{pub_addr}"\nkind = "sub"\n'
                              f"history = {history}\nhistory_bytes = {held}\n")
            extra = [*extra, "--config", str(config)]
            topic = "bench-history"
        listen = f"tcp:{port}:interface=127.0.0.1:backlog=1024"
        argv = [str(bin_dir / "twistd"), "-n", "--pidfile=", *twistd_opts, "zmqwamp", "--listen", listen,
                "--anonymous", "--allow", "tcp://127.0.0.1:*", *extra]
        server = self.start(name, argv, cwd=str(self.tmp))
        if port == 0:
            port = int(server.wait_for(r"starting on (\d+)", 30)[0].group(1))
        target = Target(name, server, f"ws://127.0.0.1:{port}/ws", self.rep_addr, topic, pub)
        self.probe(target, probe_timeout)
        return target

    def start_limit(self) -> Target:
        """limit_server.py: canned RESULTs and its own timer as the publisher."""
        server = self.start("limit", [PY, str(BENCH / "limit_server.py"), "--port", "0"], stdin=True)
        port = int(server.wait_for(r"^LISTENING (\d+)", 30)[0].group(1))
        target = Target("limit", server, f"ws://127.0.0.1:{port}/ws", "bench.echo", "bench.events", server)
        self.probe(target, 30)
        return target

    def start_crossbar(self) -> Target:
        """Crossbar with crossbar_forwarder.py in its router worker (the anchor)."""
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

    # -- load generators -------------------------------------------------------------
    def loadgen(self, name: str, target: Target, mode: str, stdin: bool = True, serializer: str = "json", **opts) -> Child:
        """A loadgen.py process (probe, rpc, sub, idle); ``opts`` become its --options."""
        argv = [PY, str(BENCH / "loadgen.py"), mode, "--url", target.url, "--realm", REALM,
                "--procedure", target.procedure, "--topic", target.topic, "--serializer", serializer,
                "--max-seconds", str(opts.pop("max_seconds", 600))]
        if mode != "probe":
            argv += ["--client", self.client]
            if self.autobahn_frames:
                argv.append("--autobahn-frames")
        for key, value in opts.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        return self.start(name, argv, stdin=stdin)

    def probe(self, target: Target, timeout: float) -> None:
        """Wait until ``target`` answers one call with the stock client; RuntimeError after ``timeout``."""
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
