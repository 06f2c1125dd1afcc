"""``--log-format json``: one JSON object per line, from twistd's first line on, for bridges and the supervisor.
The record of one event: tests/unit/service/test_logs.py."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from datetime import datetime

from harness import BIN, Process, start_bridge
from wampclient import close, connect

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def records(lines: list[str]) -> list[dict]:
    """Every line parsed with json.loads: a line that is not one JSON object fails the test."""
    out = []
    for line in lines:
        assert "\x1e" not in line, f"RFC 7464 record separator in {line!r}"
        record = json.loads(line)
        assert isinstance(record, dict), line
        for key in ("time", "level", "namespace", "message"):
            assert key in record, (key, line)
        assert ISO_UTC.match(record["time"]), record["time"]
        datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
        assert record["level"] in ("debug", "info", "warn", "error", "critical"), record
        out.append(record)
    return out


def test_bridge_writes_one_json_object_per_line(services):
    """A real bridge: twistd's start lines, session lines with their fields, the stop lines, all JSON."""
    proc, url = start_bridge("--anonymous", "--log-format", "json", "--allow", services["rep"])
    try:

        async def scenario():
            s = await connect(url)
            assert await s.call(services["rep"], "hi") == "got this hi"
            await close(s)

        asyncio.run(asyncio.wait_for(scenario(), 60))
        proc.wait_for("session .* closed")
    finally:
        assert proc.stop() == 0
    got = records(proc.lines)
    messages = [r["message"] for r in got]
    assert any(m.startswith("twistd ") and "starting up" in m for m in messages), messages[:3]
    opened = [r for r in got if r["namespace"] == "zmqwamp.wamp.session" and " open: " in r["message"]]
    assert opened and opened[0]["authid"] == "anonymous" and opened[0]["level"] == "info"
    assert isinstance(opened[0]["peer"], str) and "127.0.0.1" in opened[0]["peer"]  # an address object, as text
    assert not any(k.startswith("log_") for r in got for k in r), "Twisted internals leaked into the records"
    assert any("Server Shut Down" in m for m in messages)


def test_supervisor_and_workers_write_json_too(services):
    """--workers 2 --log-format json: the supervisor's own lines are JSON as well as the workers'."""
    proc = Process([str(BIN / "twistd"), "-n", "--pidfile=", "zmqwamp", "--workers", "2", "--log-format", "json",
                    "--listen", "tcp:0:interface=127.0.0.1", "--anonymous", "--allow", services["rep"]])
    try:
        proc.wait_for(r"workers share 127\.0\.0\.1")
        proc.wait_for(r"worker 1 started")
        proc.wait_for(r"starting on")
    finally:
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(30) == 0
        proc.stop()
    got = records(proc.lines)
    assert any(r["namespace"] == "zmqwamp.service.workers" and "workers share" in r["message"] for r in got)
    assert any("twistd " in r["message"] and "starting up" in r["message"] for r in got)
