"""SIGTERM drains behind a proxy: the port keeps listening, /healthz and new upgrades say 503, then GOODBYE.

And signals that arrive twice (a process group's Ctrl-C, systemd's SIGTERM to every
process of a unit) stop the bridge once, quietly; a port in use is one clear line.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import urllib.error
import urllib.request

from harness import BIN, Process, start_bridge, start_rep
from minws import HandshakeRefused, WSClient
from waiting import eventually
from wampclient import connect


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


def get(url: str) -> tuple[int | None, bytes]:
    """(status, body) of a GET; status None when nothing listens."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, ConnectionError) as e:
        if isinstance(getattr(e, "reason", e), ConnectionRefusedError) or isinstance(e, ConnectionRefusedError):
            return None, b""
        raise


def test_drain_keeps_listening_with_503_then_goodbye_and_exit_0():
    """During the drain: /healthz 503 {"up": false}, a new upgrade HTTP 503, the call in flight answered; then GOODBYE, exit 0."""
    slow, slow_addr = start_rep(delay=2.0)
    proc, url = start_bridge("--anonymous", "--allow", slow_addr, "--drain-time", "8")
    port = url.split(":")[2].split("/")[0]
    health_url = f"http://127.0.0.1:{port}/healthz"
    try:
        assert get(health_url)[0] == 200

        async def scenario():
            s = await connect(url)
            call = asyncio.ensure_future(s.call(slow_addr, "in flight"))
            # the CALL is at the REP, which answers after 2 s
            await eventually(lambda: json.loads(get(health_url)[1]).get("calls_in_flight") == 1, blocking=True)
            proc.proc.send_signal(signal.SIGTERM)
            # the port still answers, with 503, while the call is in flight
            status, body = await eventually(lambda: (lambda r: r if r[0] != 200 else None)(get(health_url)), blocking=True)
            assert status == 503, (status, body)
            assert json.loads(body)["up"] is False
            try:
                late = await WSClient.connect(url)
            except HandshakeRefused as e:
                assert e.status == 503, e
            else:
                late.abort()
                raise AssertionError("a WebSocket upgrade during the drain was accepted")
            assert not call.done()
            assert await call == "got this in flight"
            details = await asyncio.wait_for(s.left, 10)
            assert details.reason == "wamp.close.system_shutdown"

        run(scenario())
        assert proc.proc.wait(15) == 0
        assert "Traceback" not in proc.output
        # and the port closed after the drain
        assert get(health_url)[0] is None
    finally:
        proc.stop()
        slow.stop()


def _bridge_argv(*args: str) -> list[str]:
    return [str(BIN / "twistd"), "-n", "--pidfile=", "zmqwamp", *args]


def test_sigterm_twice_stops_once_without_traceback():
    """A second SIGTERM during the drain (the supervisor's after systemd's) is ignored: no ReactorNotRunning, exit 0."""
    slow, slow_addr = start_rep(delay=1.5)
    proc, url = start_bridge("--anonymous", "--allow", slow_addr, "--drain-time", "5")
    try:

        async def scenario():
            s = await connect(url)
            call = asyncio.ensure_future(s.call(slow_addr, "in flight"))  # keeps the drain going ~1.5 s
            health_url = url.replace("ws://", "http://").replace("/ws", "/healthz")
            await eventually(lambda: json.loads(get(health_url)[1])["calls_in_flight"] == 1, what="the call in flight", blocking=True)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGTERM, signal.SIGINT):
                mark = len(proc.lines)
                proc.proc.send_signal(sig)
                await loop.run_in_executor(None, lambda: proc.wait_for(r"SIG(TERM|INT)", start=mark))  # noqa: B023
            assert await call == "got this in flight"
            await asyncio.wait_for(s.left, 10)

        run(scenario())
        assert proc.proc.wait(15) == 0
    finally:
        proc.stop()
        slow.stop()
    assert "ReactorNotRunning" not in proc.output, proc.output
    assert "Traceback" not in proc.output, proc.output
    assert proc.output.count("already stopping") == 2, proc.output


def test_workers_sigterm_to_the_process_group_or_the_supervisor_exits_cleanly():
    """--workers 2 with calls in flight: SIGTERM to every process (systemd's KillMode=control-group) or to the
    supervisor alone (KillMode=mixed) drains the workers and exits 0, without a ReactorNotRunning traceback."""
    slow, slow_addr = start_rep(delay=0.5)  # one REP answers the calls one after another: N sessions x 0.5 s
    try:
        for to_group in (True, False):
            argv = _bridge_argv(
                "--workers", "2", "--listen", "tcp:0:interface=127.0.0.1", "--anonymous", "--allow", slow_addr,
                "--drain-time", "15",
            )
            proc = Process(argv, new_session=True)  # its own process group, like a systemd unit's cgroup
            try:
                port = proc.wait_for(r"workers share 127.0.0.1:(\d+)").group(1)
                url = f"ws://127.0.0.1:{port}/ws"

                async def scenario():
                    sessions, pids = [], set()
                    loop = asyncio.get_running_loop()
                    for _ in range(40):  # sessions until both workers have some
                        for _attempt in range(50):
                            try:
                                sessions.append(await connect(url))  # noqa: B023
                                break
                            except (TimeoutError, OSError):
                                await asyncio.sleep(0.1)  # a retry: the workers may still be starting
                        status, body = await loop.run_in_executor(None, get, f"http://127.0.0.1:{port}/healthz")  # noqa: B023
                        pids.add(json.loads(body)["pid"])
                        if len(pids) == 2 and len(sessions) >= 4:
                            break
                    assert len(pids) == 2
                    calls = [asyncio.ensure_future(s.call(slow_addr, "x")) for s in sessions]
                    # every call is at its worker (each worker's /healthz: calls in flight == its sessions) before
                    # the signal: a CALL still on its way when the drain starts would be refused, rightly
                    seen: dict = {}

                    def all_in_flight():
                        body = json.loads(get(f"http://127.0.0.1:{port}/healthz")[1])  # noqa: B023
                        seen[body["pid"]] = body["calls_in_flight"] == body["sessions"]
                        return len(seen) == 2 and all(seen.values())

                    await eventually(all_in_flight, timeout=10.0, what="every call at its worker", blocking=True)
                    if to_group:  # noqa: B023
                        os.killpg(proc.proc.pid, signal.SIGTERM)  # noqa: B023
                    else:
                        proc.proc.send_signal(signal.SIGTERM)  # noqa: B023
                    assert await asyncio.gather(*calls) == ["got this x"] * len(calls)

                try:
                    run(scenario())
                except Exception as e:
                    raise AssertionError(f"{e!r}; the bridge said:\n{proc.output[-4000:]}") from e
                assert proc.proc.wait(30) == 0, proc.output[-3000:]
            finally:
                proc.stop()
            assert "ReactorNotRunning" not in proc.output, proc.output[-3000:]
            assert "Traceback" not in proc.output, proc.output[-3000:]
            assert proc.output.count("Server Shut Down") >= 3, proc.output[-3000:]
    finally:
        slow.stop()


def test_port_in_use_is_one_clear_line():
    """A listen port already taken: one line saying so, exit 1, no traceback."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for extra in ([], ["--workers", "2"]):
            out = Process(_bridge_argv(*extra, "--listen", f"tcp:{port}:interface=127.0.0.1", "--anonymous"))
            code = out.proc.wait(60)
            out.stop()
            text = out.output
            assert code == 1, text
            assert "Traceback" not in text, text
            assert f"cannot listen on 127.0.0.1:{port}" in text, text
            assert sum("cannot listen" in line for line in out.lines) == 1, text


def test_successful_health_checks_stay_out_of_the_access_log(bridge):
    """A proxy's /healthz every second is not logged; other requests (and a failed health check) are."""
    port = bridge["url"].split(":")[2].split("/")[0]
    mark = len(bridge["proc"].lines)
    for _ in range(3):
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    assert get(f"http://127.0.0.1:{port}/no-such-page")[0] == 404
    bridge["proc"].wait_for(r'"GET /no-such-page HTTP/1.1" 404', start=mark)
    assert not any("GET /healthz" in line for line in bridge["proc"].lines[mark:])
