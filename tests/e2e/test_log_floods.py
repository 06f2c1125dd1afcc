"""Log floods that bypassed the client log limits, and a frozen reactor made visible (issue 21: item 6 and "see a
freeze when it happens"), against real bridges.

Each flood is measured in bytes of log the bridge wrote while it ran (its stdout, up to a line logged after it):
before the fixes a line or two per request (1,846 warnings for 2,000 timed-out CALLs; 27 KB per upgrade with a 14 KB
Origin; a traceback per request for a NUL in the path), now a few lines and a count.  In memory:
tests/unit/test_clientlog.py, tests/unit/upstream/test_forwarder.py, tests/unit/transport/test_site.py,
tests/unit/service/test_{logs,reactor_lag}.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import time

import pytest

from harness import ROOT, start_bridge
from minws import ERROR, HandshakeRefused, WSClient
from probes import get, metric, start_delayrep
from waiting import wait_for

CALLS = 2000


def run(coro, timeout=120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def log_bytes(lines: list[str]) -> int:
    return sum(len(line.encode("utf-8", "surrogateescape")) + 1 for line in lines)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


@pytest.fixture(scope="module")
def bridge():
    """A bridge in front of two REPs that answer 50 ms and 500 ms later, many requests at once."""
    rep, rep_address = start_delayrep(0.05)
    slower, slower_address = start_delayrep(0.5)
    proc, url = start_bridge(
        "--anonymous", "--allow", rep_address, "--allow", slower_address,
        "--max-calls-per-second", "100000", "--max-calls-in-flight", "5000", "--max-messages-per-second", "100000",
    )
    yield {"url": url, "proc": proc, "rep": rep_address, "slower": slower_address, "port": port_of(url)}
    for p in (proc, rep, slower):
        p.stop()


def flood_log(proc, since: int, marker: str) -> list[str]:
    """The lines logged from ``since`` up to the first line matching ``marker`` (logged after the flood)."""
    proc.wait_for(marker, start=since)
    lines = proc.lines[since:]
    end = next(i for i, line in enumerate(lines) if re.search(marker, line))
    return lines[:end]


@pytest.mark.parametrize("ended_by", ["timeout", "cancel"])
def test_late_replies_and_timeouts_write_a_few_lines(bridge, ended_by):
    """2,000 CALLs with a 1 ms timeout to a 50 ms REP (or CALL, then CANCEL 0.2 s later, to a 0.5 s REP): each call
    ends early and its reply comes late.  Before: a warning per timeout and per late reply (1,846 in 2.9 s, ~200 KB); now the first of each and a
    count per interval, every one counted in zmqwamp_dropped_total{reason="reply_late"}."""
    url, proc = bridge["url"], bridge["proc"]
    late_before = metric(url, "zmqwamp_dropped_total", reason="reply_late")
    mark = len(proc.lines)

    counts = []

    def settled() -> bool:
        """The count of late replies has not grown for 1 s."""
        counts.append(metric(url, "zmqwamp_dropped_total", reason="reply_late") - late_before)
        time.sleep(0.25)
        return len(counts) > 4 and counts[-1] == counts[-5] > 0

    async def scenario():
        ws = await WSClient.connect(url)
        session = (await ws.hello())[1]
        for _ in range(CALLS // 400):  # pipelined in waves of 400 (the DEALER queues 1,000 at most)
            requests = set()
            for _ in range(400):
                request = ws.next_id()
                requests.add(request)
                if ended_by == "timeout":
                    ws.send_json([48, request, {"timeout": 1}, bridge["rep"], ["x"]])
                else:
                    ws.send_json([48, request, {}, bridge["slower"], ["x"]])
            if ended_by == "cancel":
                await asyncio.sleep(0.2)  # passed on to the REP (a CALL cancelled before that is never sent)
                for request in requests:
                    ws.send_json([49, request, {}])
            errors = set()
            while len(errors) < len(requests):
                msg = await ws.recv_json(timeout=30)
                assert msg[0] == ERROR and msg[4] == "wamp.error.canceled", msg
                errors.add(msg[2])
            assert errors == requests
        await asyncio.to_thread(wait_for, settled, 30, "the late replies to stop coming")
        await ws.goodbye()
        await ws.close()
        return session

    session = run(scenario())
    lines = flood_log(proc, mark, rf"session {session} closed")
    late = metric(url, "zmqwamp_dropped_total", reason="reply_late") - late_before
    print(f"\n{ended_by}: {len(lines)} lines, {log_bytes(lines)} bytes of log for {CALLS} calls, {late:.0f} late replies")
    assert late >= CALLS / 2  # (a call that ends before its request left is never sent)
    assert log_bytes(lines) < 3000, lines  # before: ~1,850 lines, ~200 KB


def upgrade(port: int, origin: str, host: str) -> int:
    lines = ("Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
             "Sec-WebSocket-Version: 13", "Sec-WebSocket-Protocol: wamp.2.json", f"Origin: {origin}")
    return get(port, "/ws", host=host, extra=lines)[0]


_marks = iter(range(2, 250))


def end_mark(port: int) -> None:
    """A 404 from an address of its own (a fresh access-log budget): its access log line marks the end of a flood."""
    get(port, "/flood-over", source=f"127.0.9.{next(_marks)}")


def test_refused_upgrades_with_a_huge_origin_write_a_few_short_lines(bridge):
    """100 upgrades with a 14 KB Origin that autobahn refuses (no host part: it quoted it twice, 2.7 MiB of log) and
    100 that the Origin check refuses: the reason is clipped and the lines limited per client address."""
    port, proc = bridge["port"], bridge["proc"]
    host = f"127.0.0.1:{port}"
    mark = len(proc.lines)
    statuses = [upgrade(port, "zz" + "b" * 14_000, host) for _ in range(100)]
    statuses += [upgrade(port, "http://" + "a" * 14_000 + ".example", host) for _ in range(100)]
    assert set(statuses[:100]) == {400} and set(statuses[100:]) == {403}
    end_mark(port)  # a 404: its access log line marks the end
    lines = flood_log(proc, mark, r'"GET /flood-over HTTP/1\.1" 404')
    print(f"\norigin: {len(lines)} lines, {log_bytes(lines)} bytes of log for 200 refused upgrades")
    assert log_bytes(lines) < 5000, lines[:5]  # before: 2.7 MiB for the first 100
    assert max(map(len, lines)) < 400
    assert metric(bridge["url"], "zmqwamp_log_suppressed_total") > 0


def test_a_nul_in_the_path_is_a_400_without_a_traceback(bridge):
    """GET /js/.%00./x answered 500 and logged a traceback per request (~1.4 KB); now 400 and a line per client
    and second at most, for the access log's lines of these refusals too."""
    port, proc = bridge["port"], bridge["proc"]
    mark = len(proc.lines)
    paths = ("/js/.%00./x", "/%00", "/js/%2e%00")
    statuses = {get(port, path, source="127.0.0.4")[0] for path in paths for _ in range(50)}  # a budget of its own
    assert statuses == {400}
    end_mark(port)
    lines = flood_log(proc, mark, r'"GET /flood-over HTTP/1\.1" 404')
    access = [line for line in lines if '"GET /' in line]
    others = [line for line in lines if '"GET /' not in line]
    assert any("HTTP request from tcp4:127.0.0.4" in line and "a NUL byte in the path" in line for line in others)
    print(f"\nNUL: {len(others)} lines, {log_bytes(others)} bytes besides the access log for 150 requests")
    # the access log's lines of refused requests go through the client log too: a burst, then a count
    assert 0 < len(access) < 150 and not any("Traceback" in line for line in lines)
    assert log_bytes(access) < 5000, access
    assert log_bytes(others) < 3000, others
    assert metric(bridge["url"], "zmqwamp_limit_exceeded_total", limit="http_path") >= 150


def test_an_exception_in_a_hook_is_a_500_and_logged_once(tmp_path):
    """The class behind the NUL path: any exception under the HTTP layer (here a websocket_allowed hook with a bug)
    was a traceback per request (autobahn: two warnings with it, per upgrade); now one, then a count."""
    (tmp_path / "broken_hook.py").write_text(
        "from zmqwamp import Bridge\n\n"
        "class BrokenHook(Bridge):\n"
        "    def websocket_allowed(self, request):\n"
        "        return request.headers['x-needed'] == 'yes'  # KeyError without it\n"
    )
    proc, url = start_bridge("--anonymous", "--bridge-class", "broken_hook.BrokenHook",
                             env={"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])})
    try:
        port = port_of(url)
        mark = len(proc.lines)
        statuses = {upgrade(port, "http://x.example", f"127.0.0.1:{port}") for _ in range(100)}
        assert statuses == {500}
        end_mark(port)
        lines = flood_log(proc, mark, r'"GET /flood-over HTTP/1\.1" 404')
        print(f"\nhook: {len(lines)} lines, {log_bytes(lines)} bytes of log for 100 upgrades")
        assert sum("Traceback" in line for line in lines) == 1, lines
        assert log_bytes(lines) < 5000
        assert metric(url, "zmqwamp_internal_errors_total", where="websocket_allowed") == 100
    finally:
        proc.stop()


def test_json_log_keeps_a_line_with_a_lone_surrogate(tmp_path):
    """--log-format json dropped every event whose fields held a lone surrogate: text the output (UTF-8) cannot
    encode, as a client's JSON "\\ud800" gives, or a hook that decodes a client's bytes with surrogateescape (here a
    header in Latin-1).  The line is there, escaped; every line is one JSON object."""
    (tmp_path / "naming_hook.py").write_text(
        "from twisted.logger import Logger\n"
        "from zmqwamp import Bridge\n\n"
        "log = Logger()\n\n"
        "class NamingHook(Bridge):\n"
        "    def websocket_allowed(self, request):\n"
        "        raw = request.headers.get('x-client-name', '').encode('latin-1')\n"
        "        log.info('client name {name!r}', name=raw.decode('utf-8', 'surrogateescape'))\n"
        "        return super().websocket_allowed(request)\n"
    )
    proc, url = start_bridge("--anonymous", "--log-format", "json", "--bridge-class", "naming_hook.NamingHook",
                             env={"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])})
    try:
        mark = len(proc.lines)
        port = port_of(url)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                         "Sec-WebSocket-Protocol: wamp.2.json\r\n".encode() + b"X-Client-Name: caf\xe9\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 101 ")
        proc.wait_for(r"client name 'caf\\\\udce9'", start=mark, timeout=10)
    finally:
        proc.stop()
    records = [json.loads(line) for line in proc.lines if line.strip()]  # every line is one JSON object
    [named] = [r for r in records if r["message"].startswith("client name")]
    assert named["name"] == "caf\udce9"


# -- see a freeze when it happens --------------------------------------------------------------------


def test_a_stalled_reactor_shows_in_the_metrics_and_the_log():
    """A hook that blocks the reactor for 1.5 s (tests/stall_bridge.py): zmqwamp_reactor_lag_max_seconds says so
    afterwards, the histogram counts it over 1 s, and one warning names it (reactor_lag_warning 1 s)."""
    proc, url = start_bridge("--anonymous", "--allow", "tcp://127.0.0.1:*", "--bridge-class", "stall_bridge.StallBridge",
                             "--reactor-lag-warning", "1",
                             env={"PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])})
    try:
        time.sleep(0.5)
        assert metric(url, "zmqwamp_reactor_lag_max_seconds") < 0.5
        assert metric(url, "zmqwamp_reactor_lag_seconds_count") > 0

        async def scenario():
            ws = await WSClient.connect(url)
            await ws.hello()
            reply = await ws.call("tcp://127.0.0.1:8", ["x"])
            await ws.close()
            return reply

        reply = run(scenario())
        assert reply[0] == ERROR and reply[4] == "wamp.error.not_authorized"
        assert metric(url, "zmqwamp_reactor_lag_max_seconds") >= 1.3
        total = metric(url, "zmqwamp_reactor_lag_seconds_count")
        assert total - metric(url, "zmqwamp_reactor_lag_seconds_bucket", le="1.0") >= 1
        proc.wait_for(r"the reactor was blocked for 1\.[3-9]\d?s: nothing else was served", timeout=10)
    finally:
        proc.stop()


def test_no_refusal_is_silent(bridge):
    """The per-address log budget still logs a refusal of a new client address (here: 127.0.0.3)."""
    proc = bridge["proc"]
    mark = len(proc.lines)
    with pytest.raises(HandshakeRefused):
        run(WSClient.connect(bridge["url"], protocols=("wamp.2.nothing",), source="127.0.0.3"))
    proc.wait_for(r"WebSocket upgrade from tcp4:127\.0\.0\.3:\d+ refused: no supported WAMP subprotocol", start=mark)
