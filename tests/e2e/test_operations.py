"""Running it in production: TLS, several listeners, --workers, drain on SIGTERM, reload on SIGHUP, logs, docs."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import ssl
import subprocess
import urllib.error
import urllib.request

import pytest
from autobahn.wamp.exception import ApplicationError

from harness import BIN, ROOT, Process, make_cert, start_bridge
from probes import healthz
from waiting import eventually
from wampclient import close, connect


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


def test_wss_and_ws_on_two_listeners(services, tmp_path):
    """One bridge serves ws:// on one port and wss:// on another; the certificate's hostname is checked."""
    key, cert, _ = make_cert(tmp_path)
    proc, ws_url = start_bridge(
        "--anonymous", "--allow", services["rep"],
        "--listen", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}",
    )
    try:
        first = proc.wait_for(r"starting on (\d+)")
        second = proc.wait_for(rf"starting on (?!{first.group(1)}\b)(\d+)")
        ports = [first.group(1), second.group(1)]
        ws_port = ws_url.split(":")[2].split("/")[0]
        [wss_port] = [p for p in ports if p != ws_port]
        context = ssl.create_default_context(cafile=str(cert))

        async def scenario():
            plain = await connect(ws_url)
            secure = await connect(f"wss://localhost:{wss_port}/ws", ssl=context)
            assert await plain.call(services["rep"], "ws") == "got this ws"
            assert await secure.call(services["rep"], "wss") == "got this wss"
            await close(plain)
            await close(secure)
            with pytest.raises(ssl.SSLCertVerificationError):
                await connect(f"wss://localhost:{wss_port}/ws", ssl=context, server_hostname="wrong.example")

        run(scenario())
    finally:
        proc.stop()


def health(url: str) -> dict:
    http = url.replace("ws://", "http://").replace("/ws", "/healthz")
    with urllib.request.urlopen(http, timeout=5) as r:
        return json.loads(r.read())


def test_two_workers_share_the_port(services):
    """--workers 2: 50 clients spread over two processes on one port, all served."""
    proc = Process([str(BIN / "twistd"), "-n", "--pidfile=", "zmqwamp", "--workers", "2", "--listen", "tcp:0:interface=127.0.0.1",
                    "--anonymous", "--allow", services["rep"]])
    try:
        port = proc.wait_for(r"workers share 127.0.0.1:(\d+)").group(1)
        proc.wait_for(r"starting on", start=0)
        url = f"ws://127.0.0.1:{port}/ws"

        async def scenario():
            sessions = []
            for _i in range(50):
                sessions.append(await connect(url))
            replies = await asyncio.gather(*(s.call(services["rep"], f"c{i}") for i, s in enumerate(sessions)))
            assert replies == [f"got this c{i}" for i in range(50)]
            seen = {}
            for _ in range(60):
                h = await asyncio.get_running_loop().run_in_executor(None, health, url)
                seen[h["pid"]] = h["sessions"]
                if len(seen) == 2:
                    break
            for s in sessions:
                await close(s)
            return seen

        seen = run(scenario())
        assert len(seen) == 2, seen
        assert sum(seen.values()) == 50 and min(seen.values()) > 0, seen
    finally:
        assert proc.stop() == 0
    assert proc.output.count("Server Shut Down") >= 3  # both workers and the supervisor


def test_sigterm_drains_calls_in_flight_then_says_goodbye(services):
    """SIGTERM: a call in flight still gets its reply, then the session gets GOODBYE system_shutdown; exit 0."""
    from harness import start_rep

    slow, slow_addr = start_rep(delay=1.0)
    proc, url = start_bridge("--anonymous", "--allow", slow_addr, "--drain-time", "5")
    try:

        async def scenario():
            s = await connect(url)
            call = asyncio.ensure_future(s.call(slow_addr, "in flight"))
            await eventually(lambda: healthz(url)["calls_in_flight"] == 1, what="the call in flight", blocking=True)
            proc.proc.send_signal(signal.SIGTERM)
            assert await call == "got this in flight"
            details = await asyncio.wait_for(s.left, 10)
            assert details.reason == "wamp.close.system_shutdown"

        run(scenario())
        assert proc.proc.wait(15) == 0
    finally:
        proc.stop()
        slow.stop()


def test_sighup_reloads_allow_rules_without_dropping_sessions(services, tmp_path):
    config = tmp_path / "z.toml"
    config.write_text(f'anonymous = true\nallow = ["{services["rep"]}"]\n')
    proc, url = start_bridge("--config", str(config))
    try:

        async def scenario():
            s = await connect(url)
            assert await s.call(services["rep"], "before") == "got this before"
            config.write_text("anonymous = true\nallow = []\n")
            mark = len(proc.lines)
            proc.proc.send_signal(signal.SIGHUP)
            await asyncio.get_running_loop().run_in_executor(None, lambda: proc.wait_for("configuration reloaded", start=mark))
            with pytest.raises(ApplicationError) as e:
                await s.call(services["rep"], "after")
            assert e.value.error == "wamp.error.not_authorized"
            config.write_text("anonymous = [broken\n")
            mark = len(proc.lines)
            proc.proc.send_signal(signal.SIGHUP)
            await asyncio.get_running_loop().run_in_executor(None, lambda: proc.wait_for("reload failed", start=mark))
            assert s.is_attached()
            await close(s)

        run(scenario())
    finally:
        proc.stop()


def test_workers_refuse_tls_listen_with_a_clear_error():
    out = subprocess.run(
        [str(BIN / "twistd"), "-n", "--pidfile=", "zmqwamp", "--workers", "2", "--listen", "ssl:8443:privateKey=k.pem"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode != 0
    assert "--workers shares plain tcp: listen endpoints only" in out.stdout + out.stderr


def test_every_flag_in_the_readme_reference_is_a_real_option():
    """The README's reference table and `twistd zmqwamp --help` agree."""
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Command-line and config reference"):]
    table = table[: table.index("\n\n", table.index("| option"))]
    flags = set(re.findall(r"`(--[a-z][a-z-]*)", table))
    assert len(flags) >= 10
    help_text = subprocess.run([str(BIN / "twistd"), "zmqwamp", "--help"], capture_output=True, text=True, timeout=60).stdout
    offered = set(re.findall(r"(--[a-z][a-z-]*)", help_text))
    assert flags <= offered, flags - offered
    documented_hidden = {"--inherit-fd", "--help", "--version"}
    assert offered - flags - documented_hidden == set(), "options missing from the README table"


def test_no_static_and_metrics_listen(services):
    """--no-static drops / and /js/; --metrics-listen moves /metrics to its own port (healthz stays on both)."""
    proc, url = start_bridge("--anonymous", "--no-static", "--metrics-listen", "tcp:0:interface=127.0.0.1")
    try:
        first = proc.wait_for(r"starting on (\d+)")
        second = proc.wait_for(rf"starting on (?!{first.group(1)}\b)(\d+)")
        main_port = url.split(":")[2].split("/")[0]
        ops_port = second.group(1) if first.group(1) == main_port else first.group(1)

        def status(port, path):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                    return r.status, r.read()
            except urllib.error.HTTPError as e:
                return e.code, b""

        assert status(main_port, "/")[0] == 404
        assert status(main_port, "/js/zmqwamp.js")[0] == 404
        assert status(main_port, "/metrics")[0] == 404
        assert status(main_port, "/healthz")[0] == 200
        code, body = status(ops_port, "/metrics")
        assert code == 200 and b"zmqwamp_sessions_open" in body
        assert status(ops_port, "/ws")[0] == 404
    finally:
        proc.stop()


def test_static_and_metrics_served_by_default(bridge):
    port = bridge["url"].split(":")[2].split("/")[0]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    for name in ("zmqwamp_sessions_open", "zmqwamp_calls_total", "zmqwamp_call_latency_seconds", "zmqwamp_zmq_sockets_open"):
        assert name in text
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
        assert b"<html" in r.read().lower()
