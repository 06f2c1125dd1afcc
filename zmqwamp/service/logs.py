"""Log output for ``--log-format``: twistd's text lines, or one JSON object per line.

Twisted's own ``jsonFileLogObserver`` writes RFC 7464 JSON text sequences (a
0x1E byte before every record) and keeps its internals (``log_level`` as an
object, ``log_logger``), so ``json.loads`` per line fails on it.  Log shippers
(journald, Docker, Loki, Elasticsearch) want plain JSON lines, so
:class:`JSONLinesObserver` writes, per event::

    {"time": "2026-12-02T10:00:00.123Z", "level": "info", "namespace": "zmqwamp.wamp.session",
     "message": "session 7 open: authid=alice ...", "session": 7, "authid": "alice", ...}

``message`` is the text the text format shows; the event's own fields follow,
made JSON-safe (anything JSON cannot hold becomes its ``str``).  A failure adds
``traceback``.  No event is dropped, and every line is UTF-8: a lone surrogate
(from a client's JSON, or bytes decoded with ``surrogateescape``), which UTF-8
cannot hold, is written as a JSON escape (``ensure_ascii``); stdout's
``surrogateescape`` (Python's default under a C or C.UTF-8 locale) would have
dropped U+D800 and written U+DCE9 as a stray byte 0xE9.  Secrets stay out as in
the text format: nothing in zmqwamp logs a password, ticket, token or signature
as a field either (tests/unit/service/test_logs.py, tests/e2e/test_logs.py).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import ILogObserver, formatEvent
from zope.interface import implementer

# Keys of the record itself; an event field with one of these names is kept under "field_<name>".
_RECORD_KEYS = ("time", "level", "namespace", "message", "traceback")
# Twisted's legacy-log keys (twisted.python.log events): already in "message"/"traceback".
_LEGACY_KEYS = frozenset(("message", "format", "isError", "failure", "why", "system", "time", "printed"))


def _safe(value: Any) -> Any:
    """``json.dumps`` default: anything JSON cannot hold is logged as its text."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    try:
        return str(value)
    except Exception:  # a __str__ that raises must not lose the log line
        return f"<unprintable {type(value).__name__}>"


def event_as_record(event: dict) -> dict:
    """The JSON record of a twisted.logger event (see the module docstring)."""
    level = event.get("log_level")
    stamp = event.get("log_time")
    when = datetime.fromtimestamp(stamp, UTC) if stamp is not None else datetime.now(UTC)
    record: dict[str, Any] = {
        "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": getattr(level, "name", "info"),
        "namespace": event.get("log_namespace", "-"),
        "message": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        try:
            record["traceback"] = failure.getTraceback()
        except Exception:
            record["traceback"] = repr(failure)
    legacy = "log_legacy" in event or "isError" in event
    for key, value in event.items():
        if key.startswith("log_") or (legacy and key in _LEGACY_KEYS):
            continue
        record[f"field_{key}" if key in _RECORD_KEYS else key] = value
    return record


@implementer(ILogObserver)
class JSONLinesObserver:
    """Writes each event as one line of JSON to ``out`` (a text file), flushed at once."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def __call__(self, event: dict) -> None:
        record = event_as_record(event)
        try:
            line = json.dumps(record, default=_safe, ensure_ascii=False)
        except (TypeError, ValueError) as e:  # e.g. a dict with non-string keys, a circular field
            record = {k: v for k, v in record.items() if k in _RECORD_KEYS}
            record["log_error"] = f"fields not serializable: {e}"
            line = json.dumps(record, default=_safe, ensure_ascii=False)
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: a JSON escape, the same value (not left to the stream,
            line = json.dumps(record, default=_safe, ensure_ascii=True)  # whose surrogateescape writes bytes, no UTF-8)
        try:
            self._out.write(line + "\n")  # encoded whole before anything is written: all or nothing
        except UnicodeEncodeError:  # a stream that is not UTF-8 (LANG=C): ASCII, the same JSON
            self._out.write(json.dumps(record, default=_safe, ensure_ascii=True) + "\n")
        self._out.flush()


def use_log_format(application: Any, log_format: str) -> None:
    """Make twistd log in ``log_format`` from its first line on (the ILogObserver component it reads).

    twistd reads that component from the application right after ``makeService``,
    before it logs its own start lines, so those come out in the same format.
    """
    if log_format == "json" and hasattr(application, "setComponent"):
        import sys

        application.setComponent(ILogObserver, JSONLinesObserver(sys.stdout))
