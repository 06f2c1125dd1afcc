"""``--log-format json``: one JSON object per line, from twistd's first line on, for bridges and the supervisor."""

from __future__ import annotations

import asyncio
import io
import json
import re
import signal
from datetime import datetime

from twisted.logger import Logger, LogLevel, LogPublisher
from twisted.python.failure import Failure

from zmqwamp.logs import JSONLinesObserver, event_as_record

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
    opened = [r for r in got if r["namespace"] == "zmqwamp.session" and " open: " in r["message"]]
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
    assert any(r["namespace"] == "zmqwamp.workers" and "workers share" in r["message"] for r in got)
    assert any("twistd " in r["message"] and "starting up" in r["message"] for r in got)


def _publish(*events: dict) -> list[dict]:
    out = io.StringIO()
    publisher = LogPublisher(JSONLinesObserver(out))
    for event in events:
        publisher(event)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_fields_are_made_json_safe():
    """Objects, bytes, sets and clashing names become JSON; a failure adds its traceback."""
    out = io.StringIO()
    log = Logger(namespace="zmqwamp.test", observer=LogPublisher(JSONLinesObserver(out)))
    log.info("peer {peer} sent {data!r}", peer=object(), data=b"\xff\x00", tags={"a"}, message="clash", time=3)
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        log.failure("it broke", Failure())
    first, second = [json.loads(line) for line in out.getvalue().splitlines()]
    assert first["message"].startswith("peer <object object at ")
    assert first["data"] == "\\xff\x00" and first["tags"] == ["a"]
    assert first["field_message"] == "clash" and first["field_time"] == 3
    assert first["level"] == "info" and first["namespace"] == "zmqwamp.test"
    assert second["level"] == "critical" and "ZeroDivisionError" in second["traceback"]


def test_unserializable_fields_keep_the_line():
    """A field json cannot encode at all (a dict with tuple keys) still gives one valid line with the message."""
    [record] = _publish({"log_format": "odd {x}", "log_level": LogLevel.warn, "log_namespace": "t", "log_time": 0.0,
                         "x": {(1, 2): "tuple key"}})
    assert record["message"].startswith("odd ") and record["time"] == "1970-01-01T00:00:00.000Z"
    assert "log_error" in record


def test_record_of_a_legacy_event():
    """twisted.python.log events (stdout/stderr redirected by twistd) keep their text in "message"."""
    record = event_as_record({"message": ("hello from print",), "isError": 0, "system": "-", "time": 1.0,
                              "log_legacy": True, "log_format": "{log_text}", "log_text": "hello from print",
                              "log_level": LogLevel.info, "log_namespace": "stdout", "log_time": 1.0})
    assert record["message"] == "hello from print" and record["namespace"] == "stdout"
    assert "isError" not in record and "system" not in record
