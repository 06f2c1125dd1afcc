"""The shipped proxy configs, run for real: two bridges behind examples/deploy/haproxy.cfg and nginx.conf.

For each proxy, one scenario (about 30 s) with Debian's haproxy / nginx, TLS at the proxy (a
self-signed certificate made here), two real bridges and 20 clients of the project's own js-client
(Node; SUB + a REQ every 300 ms each, each from its own loopback address), then the checks:

* every client of a SIGKILLed bridge is back and resubscribed within 2 s of the kill;
* a rolling restart (SIGTERM, drain, start again, one bridge after the other) leaves no client
  disconnected for longer than 3 s, and the proxy answers no 502s (counted in its log);
* sessions are spread over both bridges; /metrics and /status are not reachable through the proxy;
* the bridges see each client's own address (PROXY protocol from haproxy, X-Forwarded-For from nginx).

Only the addresses, ports and certificate/log paths of the shipped files are substituted (each
substitution must match exactly once, so a changed file fails here rather than being tested half).
Everything listens on 127.0.0.1 and is stopped by PID.  `make test-deploy` installs haproxy and nginx
with apt when root; without them (or without Node and js-client's node_modules) these tests skip and
say why.  The figures measured are printed (`pytest -s`) and recorded in README.md, "Deployment".
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness import ROOT, Process, make_cert, start_bridge, start_pub, start_rep
from waiting import wait_for

DEPLOY = ROOT / "examples" / "deploy"
CLIENTS = 20
FIRST_HOST = 10  # client i connects from 127.0.0.(10 + i)
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
NODE = shutil.which("node")

pytestmark = pytest.mark.timeout(240)


def _missing(proxy: str) -> str | None:
    binary = HAPROXY if proxy == "haproxy" else NGINX
    if not Path(binary).exists():
        return f"{proxy} is not installed: `make test-deploy` installs it with apt-get when run as root (scripts/ensure-proxies.sh)"
    if NODE is None:
        return "node is not installed (the clients are the project's js-client on Node)"
    if not (ROOT / "js-client" / "node_modules" / "ws").exists():
        return "js-client/node_modules is missing: `make test-deploy` installs it (npm ci)"
    return None


# -- configs --------------------------------------------------------------------------------------


def substitute(text: str, replacements: list[tuple[str, str]]) -> str:
    """Replace each literal exactly once; a shipped file that no longer has it fails the test."""
    for old, new in replacements:
        assert text.count(old) == 1, f"the shipped config should contain {old!r} exactly once"
        text = text.replace(old, new)
    return text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the parts ----------------------------------------------------------------------------------


@dataclass
class Bridge:
    name: str
    port: int
    args: list[str]
    proc: Process | None = None
    logs: list[str] = field(default_factory=list)  # lines of every process this bridge has been

    def start(self) -> None:
        listen = f"{self.listen_kind}:{self.port}:interface=127.0.0.1"
        self.proc, _ = start_bridge(*self.args, listen=listen)
        # serving (its reactor runs, so its signal handlers are in place), not only bound
        wait_for(lambda: self.healthy(listen), 20, f"{self.name} to serve /healthz")

    @staticmethod
    def healthy(listen: str) -> bool:
        from zmqwamp.service.healthcheck import _connect

        try:
            with _connect(listen, 5) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                return sock.recv(100).startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    listen_kind: str = "tcp"

    def retire(self) -> None:
        if self.proc is not None:
            self.logs += self.proc.lines
            self.proc = None

    @property
    def lines(self) -> list[str]:
        return self.logs + (self.proc.lines if self.proc else [])

    def sessions_open(self) -> int:
        """The sessions this bridge has open, as it says itself (/healthz details, asked as a local client).

        Not counted from its log lines: on a busy machine they were read late, and the spread came out (10, 0)."""
        from zmqwamp.service.healthcheck import _connect

        listen = f"{self.listen_kind}:{self.port}:interface=127.0.0.1"
        with _connect(listen, 5) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            response = b""
            while chunk := sock.recv(65536):
                response += chunk
        return json.loads(response.partition(b"\r\n\r\n")[2])["sessions"]


class Clients:
    """The Node process running the js-client contexts; its JSON lines, parsed."""

    def __init__(self, url: str, rep: str, pub: str) -> None:
        config = {"url": url, "count": CLIENTS, "rep": rep, "pub": pub, "filter": "hugo", "reqIntervalMs": 300,
                  "firstHost": FIRST_HOST}
        self.proc = Process([NODE, str(ROOT / "tests" / "deploy" / "clients.mjs"), json.dumps(config)],
                            env={"NODE_EXTRA_CA_CERTS": str(url and self.ca)})

    ca = ""

    def records(self) -> list[dict]:
        out = []
        for line in list(self.proc.lines):
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def subscribed_since(self, since_ms: float) -> set[int]:
        return {r["c"] for r in self.records() if r["ev"] == "subscribed" and r["t"] >= since_ms}

    def stop(self) -> dict:
        self.proc.proc.send_signal(signal.SIGTERM)
        self.proc.wait_for(r'"ev":"summary"', timeout=20)
        summary = [r for r in self.records() if r["ev"] == "summary"][-1]
        self.proc.stop()
        return summary


def outages(records: list[dict], since_ms: float, until_ms: float) -> dict[int, float]:
    """Per client, the longest time (s) from a close in [since, until] to its next resubscription."""
    worst: dict[int, float] = {}
    by_client: dict[int, list[dict]] = {}
    for r in records:
        if "c" in r:
            by_client.setdefault(r["c"], []).append(r)
    for c, rs in by_client.items():
        for i, r in enumerate(rs):
            if r["ev"] == "close" and since_ms <= r["t"] <= until_ms:
                back = next((x["t"] for x in rs[i + 1:] if x["ev"] == "subscribed"), None)
                gap = float("inf") if back is None else (back - r["t"]) / 1000
                worst[c] = max(worst.get(c, 0.0), gap)
    return worst


def https_status(port: int, path: str, ca: Path) -> int | None:
    context = ssl.create_default_context(cafile=str(ca))
    try:
        with urllib.request.urlopen(f"https://localhost:{port}{path}", timeout=5, context=context) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, ConnectionError, ssl.SSLError):
        return None  # not listening yet, or the connection was dropped


def upgrade_status(port: int, ca: Path, origin: str) -> int:
    """The status of a WebSocket upgrade through the proxy (TLS) from a page of ``origin``, as a browser sends it."""
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as sock:
        sock.sendall((f"GET /ws HTTP/1.1\r\nHost: localhost:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                      f"Sec-WebSocket-Protocol: wamp.2.json\r\nOrigin: {origin}\r\n\r\n").encode())
        return int(sock.recv(100).split(b" ", 2)[1])


class Proxy:
    """haproxy or nginx with the shipped config; ``errors()`` counts 5xx answers in its log."""

    def __init__(self, kind: str, tmp: Path, front: int, ports: list[int], cert: dict[str, Path]) -> None:
        self.kind = kind
        self.tmp = tmp
        if kind == "haproxy":
            self.stats = free_port()
            text = substitute((DEPLOY / "haproxy.cfg").read_text(), [
                ("bind :443 ssl crt /etc/haproxy/certs/site.pem", f"bind 127.0.0.1:{front} ssl crt {cert.pem}"),
                ("server bridge1 10.0.1.11:8080", f"server bridge1 127.0.0.1:{ports[0]}"),
                ("server bridge2 10.0.1.12:8080", f"server bridge2 127.0.0.1:{ports[1]}"),
                ("bind 127.0.0.1:8404", f"bind 127.0.0.1:{self.stats}"),
            ])
            path = tmp / "haproxy.cfg"
            path.write_text(text)
            check = subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True, timeout=60)
            assert check.returncode == 0, check.stdout + check.stderr
            assert "[WARNING]" not in check.stdout + check.stderr, check.stdout + check.stderr
            self.proc = Process([HAPROXY, "-db", "-f", str(path)])
        else:
            self.access = tmp / "access.log"
            text = substitute((DEPLOY / "nginx.conf").read_text(), [
                ("listen 443 ssl;", f"listen 127.0.0.1:{front} ssl;"),
                ("server 10.0.1.11:8080 max_fails=0;", f"server 127.0.0.1:{ports[0]} max_fails=0;"),
                ("server 10.0.1.12:8080 max_fails=0;", f"server 127.0.0.1:{ports[1]} max_fails=0;"),
                ("/etc/nginx/certs/site.crt", str(cert.cert)),
                ("/etc/nginx/certs/site.key", str(cert.key)),
                ("/var/log/nginx/zmqwamp-access.log", str(self.access)),
            ])
            path = tmp / "nginx.conf"
            path.write_text(text)
            argv = [NGINX, "-c", str(path), "-p", str(tmp), "-e", "stderr", "-g", f"pid {tmp / 'nginx.pid'}; daemon off;"]
            check = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=60)
            assert check.returncode == 0, check.stdout + check.stderr
            assert "[warn]" not in check.stderr, check.stderr
            self.proc = Process(argv)

    def server_up(self, name: str) -> bool:
        """haproxy's own view (its stats page): is this server UP?  nginx has no such state."""
        if self.kind != "haproxy":
            return True
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.stats}/stats;csv", timeout=5) as r:
                rows = r.read().decode().splitlines()
        except (urllib.error.URLError, ConnectionError):
            return False
        header = rows[0].lstrip("# ").split(",")
        for row in rows[1:]:
            cells = dict(zip(header, row.split(","), strict=False))
            if cells.get("pxname") == "zmqwamp" and cells.get("svname") == name:
                return cells.get("status") == "UP"
        return False

    def statuses(self) -> list[int]:
        """HTTP statuses of the proxy's log lines (haproxy: stdout; nginx: its access log)."""
        if self.kind == "haproxy":
            lines = self.proc.lines
            pattern = re.compile(r"\s-?\d+/-?\d+/-?\d+/-?\d+/\+?-?\d+ (\d{3}) ")
        else:
            lines = self.access.read_text().splitlines() if self.access.exists() else []
            pattern = re.compile(r'" (\d{3}) ')
        return [int(m.group(1)) for m in map(pattern.search, lines) if m]

    def stop(self) -> None:
        self.proc.stop()


# -- the scenario -------------------------------------------------------------------------------


@dataclass
class Outcome:
    proxy: str
    kill_recovery: dict[int, float]  # client -> seconds from the SIGKILL to resubscribed
    killed_clients: int
    rolling_outages: dict[int, float]  # client -> longest seconds out during the rolling restart
    statuses: list[int]
    spread: tuple[int, int]
    metrics_status: dict[str, int | None]  # the operator's pages through the proxy: path -> status
    health_status: int
    peers: set[str]
    summary: dict
    drain_exit_codes: list[int]
    origins: dict[str, int]  # scheme of the page's Origin -> status of a WebSocket upgrade through the proxy


@pytest.fixture(scope="module", params=["haproxy", "nginx"])
def outcome(request, tmp_path_factory) -> Outcome:
    proxy_kind = request.param
    reason = _missing(proxy_kind)
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp(proxy_kind)
    cert = make_cert(tmp)
    rep, rep_addr = start_rep()
    pub, pub_addr = start_pub(interval=0.05, topics="hugo,otto")
    ports = [free_port(), free_port()]
    front = free_port()
    common = ["--anonymous", "--allow", rep_addr, "--allow", pub_addr, "--drain-time", "5"]
    if proxy_kind == "nginx":  # X-Forwarded-For, believed from nginx only (haproxy: PROXY protocol)
        common += ["--trusted-proxy", "127.0.0.1/32"]
    bridges = [Bridge(f"bridge{i + 1}", port, common) for i, port in enumerate(ports)]
    for b in bridges:
        b.listen_kind = "haproxy:tcp" if proxy_kind == "haproxy" else "tcp"
        b.start()
    proxy = Proxy(proxy_kind, tmp, front, ports, cert)
    clients = None
    try:
        wait_for(lambda: https_status(front, "/healthz", cert.cert) == 200 if proxy.proc.proc.poll() is None else
             pytest.fail(proxy.proc.output), 20, "the proxy to serve /healthz")
        wait_for(lambda: all(proxy.server_up(b.name) for b in bridges), 20, "the proxy to see both bridges up")
        Clients.ca = str(cert.cert)
        clients = Clients(f"wss://localhost:{front}/ws", rep_addr, pub_addr)
        wait_for(lambda: len(clients.subscribed_since(0)) == CLIENTS, 30, "every client to subscribe")
        wait_for(lambda: len({r["c"] for r in clients.records() if r["ev"] == "event"}) == CLIENTS, 10,
             "every client to receive an EVENT")
        def counted() -> tuple[int, int] | None:
            """The sessions of each bridge once they add up to every client (the bridges' own counts)."""
            spread = (bridges[0].sessions_open(), bridges[1].sessions_open())
            return spread if sum(spread) == CLIENTS else None

        spread = wait_for(counted, 20, "the bridges to count every client's session")
        metrics_status = {path: https_status(front, path, cert.cert) for path in ("/metrics", "/status", "/status.json")}
        health_status = https_status(front, "/healthz", cert.cert)
        origins = {scheme: upgrade_status(front, cert.cert, f"{scheme}://localhost:{front}") for scheme in ("https", "http")}

        # 1. SIGKILL the bridge with more sessions; its clients must come back on the other one.
        victim = max(bridges, key=lambda b: b.sessions_open())
        killed_clients = victim.sessions_open()
        killed_at = time.time() * 1000
        victim.proc.stop(signal.SIGKILL)
        victim.retire()
        wait_for(lambda: len(outages(clients.records(), killed_at, killed_at + 10_000)) >= killed_clients
             and all(v != float("inf") for v in outages(clients.records(), killed_at, killed_at + 10_000).values()),
             15, "the killed bridge's clients to resubscribe")
        kill_recovery = {}
        records = clients.records()
        for c in outages(records, killed_at, killed_at + 10_000):
            back = min(r["t"] for r in records if r.get("c") == c and r["ev"] == "subscribed" and r["t"] > killed_at)
            kill_recovery[c] = (back - killed_at) / 1000
        victim.start()
        wait_for(lambda: proxy.server_up(victim.name), 20, f"the proxy to see {victim.name} up again")

        # 2. Rolling restart: each bridge in turn drains (SIGTERM), exits, starts again; the next one
        #    only once the proxy has the restarted one back in service.
        rolling_from = time.time() * 1000
        drain_exit_codes = []
        for b in bridges:
            drain_exit_codes.append(b.proc.stop(signal.SIGTERM, timeout=20))
            b.retire()
            b.start()
            wait_for(lambda: proxy.server_up(b.name), 20, f"the proxy to see {b.name} up again")  # noqa: B023
        rolling_until = time.time() * 1000
        wait_for(lambda: all(v != float("inf") for v in outages(clients.records(), rolling_from, rolling_until).values()),
             15, "every client to resubscribe after the rolling restart")
        rolling = outages(clients.records(), rolling_from, rolling_until)
        summary = clients.stop()
        clients = None
        peers = set()
        for b in bridges:
            for line in b.lines:
                m = re.search(r"session \S+ open: .*peer=(\S+)", line)
                if m:
                    peers.add(m.group(1))
        return Outcome(
            proxy=proxy_kind, kill_recovery=kill_recovery, killed_clients=killed_clients, rolling_outages=rolling,
            statuses=proxy.statuses(), spread=spread, metrics_status=metrics_status, health_status=health_status,
            peers=peers, summary=summary, drain_exit_codes=drain_exit_codes, origins=origins,
        )
    finally:
        if clients is not None:
            clients.proc.stop()
        proxy.stop()
        for b in bridges:
            if b.proc is not None:
                b.proc.stop()
        rep.stop()
        pub.stop()


def report(o: Outcome) -> str:
    worst_kill = max(o.kill_recovery.values(), default=0)
    worst_roll = max(o.rolling_outages.values(), default=0)
    codes = {c: o.statuses.count(c) for c in sorted(set(o.statuses))}
    return (
        f"{o.proxy}: SIGKILL: {len(o.kill_recovery)}/{o.killed_clients} clients back in {worst_kill:.2f}s at worst; "
        f"rolling restart: {len(o.rolling_outages)} clients moved, longest outage {worst_roll:.2f}s; "
        f"proxy statuses {codes}; spread {o.spread}; requests ok {o.summary['ok']}, failed {o.summary['failed']}"
    )


def test_sigkill_clients_back_and_resubscribed_within_2s(outcome):
    print("\n" + report(outcome))
    assert outcome.killed_clients > 0
    assert len(outcome.kill_recovery) >= outcome.killed_clients, outcome.kill_recovery
    assert max(outcome.kill_recovery.values()) <= 2.0, report(outcome)


def test_rolling_restart_no_client_out_over_3s_and_no_502(outcome):
    assert outcome.drain_exit_codes == [0, 0]
    assert outcome.rolling_outages, "the rolling restart moved no client"
    assert max(outcome.rolling_outages.values()) <= 3.0, report(outcome)
    assert outcome.statuses.count(502) == 0, report(outcome)
    assert outcome.statuses.count(101) >= CLIENTS, report(outcome)  # the log is really read


def test_sessions_spread_over_both_bridges(outcome):
    assert min(outcome.spread) > 0 and sum(outcome.spread) == CLIENTS, outcome.spread


def test_same_origin_through_the_tls_proxy(outcome):
    """The proxy terminates TLS and says so (X-Forwarded-Proto): a page on https://localhost:<port> is same-origin
    with wss://localhost:<port>/ws; one on http:// is not (issue 21, item 12)."""
    assert outcome.origins == {"https": 101, "http": 403}, outcome.origins


def test_metrics_not_reachable_through_the_proxy(outcome):
    """/healthz is answered through the proxy; /metrics and the status page (/status, /status.json) are not."""
    assert outcome.health_status == 200
    assert all(status in (403, 404) for status in outcome.metrics_status.values()), outcome.metrics_status


def test_bridges_see_the_clients_addresses(outcome):
    hosts = {re.search(r"(\d+\.\d+\.\d+\.\d+)", p).group(1) for p in outcome.peers}
    expected = {f"127.0.0.{FIRST_HOST + i}" for i in range(CLIENTS)}
    assert hosts == expected, sorted(hosts)
