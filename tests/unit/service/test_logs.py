"""``--log-format json``: the record of one event (JSON-safe fields, legacy events, unserializable values).
Real bridges and the supervisor writing it: tests/e2e/test_logs.py."""

from __future__ import annotations

import io
import json

import pytest
from twisted.logger import Logger, LogLevel, LogPublisher
from twisted.python.failure import Failure

from zmqwamp.service.logs import JSONLinesObserver, event_as_record


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


@pytest.mark.parametrize("errors", ["strict", "surrogateescape"])  # surrogateescape: stdout under a C.UTF-8 locale
def test_a_lone_surrogate_does_not_lose_the_line(errors):
    """Issue 21 item 6: a field holding "\\ud800" (valid in a client's JSON, not in UTF-8) made the write raise, and
    twisted.logger dropped the event; "\\udce9" (bytes decoded with surrogateescape) went out as a stray byte 0xE9,
    no longer UTF-8.  Now both are JSON escapes, the same values, and every line is UTF-8."""
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8", errors=errors, write_through=True)
    log = Logger(namespace="zmqwamp.test", observer=LogPublisher(JSONLinesObserver(out)))
    log.info("login for {authid!r} refused", authid="\ud800zürich")
    log.info("client name {name!r}", name=b"caf\xe9".decode("utf-8", "surrogateescape"))
    log.info("the next line, from zürich")
    first, second, third = [json.loads(line) for line in raw.getvalue().decode("utf-8").splitlines()]  # strict UTF-8
    assert first["authid"] == "\ud800zürich" and "refused" in first["message"]
    assert second["name"] == "caf\udce9"
    assert third["message"] == "the next line, from zürich"
    assert "zürich".encode() in raw.getvalue().splitlines()[2]  # ordinary lines keep their UTF-8
