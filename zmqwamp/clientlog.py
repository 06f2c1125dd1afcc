"""Log lines a client causes: short values, and a bounded rate.

A client chooses much of what the bridge logs about it (URIs, topics, authids,
the reason in its ABORT, the text of a protocol error), and how often: one
session wrote 28.6 MiB/s of log with unacknowledged PUBLISHes to a 1 MB topic.
So:

* :func:`clip` bounds each client-chosen value (120 characters, then ``…``)
  and escapes control characters, so a value cannot forge a second line;
* :class:`ClientLog` lets through at most ``rate`` lines per second per client
  (a burst of :data:`BURST`) and ``total_rate`` per second for all clients
  together.  A client is its session, or before it has one (a refused HTTP
  request or WebSocket upgrade, each on a new connection) its address: the key
  of per-peer limits (:func:`zmqwamp.peers.peer_host` of the line's ``peer``).
  The rest are counted in ``zmqwamp_log_suppressed_total``; the next line
  logged for that client says how many of its lines were not, and so does a
  line when the client goes.

Only lines about to be logged pass through here: nothing on the hot path.

Some lines are not about one session but repeat as often as clients make them
(late replies from an upstream address, call timeouts, requests that fail with
the same exception): :class:`RepeatSummary` logs the first of each kind at
once and then, per interval, one line saying how many more there were (2,000
late replies to CALLs with a 1 ms timeout wrote 1,846 warnings in 2.9 s).
:class:`ErrorLog` does that for unhandled exceptions, with the traceback in
the first line of each exception class.
"""

from __future__ import annotations

import reprlib
import time
from collections.abc import Callable, Hashable
from string import Formatter
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.reflect import qual

from zmqwamp.metrics import BridgeMetrics
from zmqwamp.peers import peer_host
from zmqwamp.tokenbucket import TokenBucket

log = Logger()

CLIP = 120  # characters of a client-chosen value in a log line
BURST = 10  # lines a client may cause at once, before its rate applies

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = CLIP
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple = 3, 8, 8, 8


def clip(value: Any, limit: int = CLIP) -> str:
    """``value`` for a log line: at most ``limit`` characters (then ``…``), control characters escaped.

    Costs O(limit) whatever the size of ``value`` (strings and bytes are cut
    before they are escaped; other objects go through :mod:`reprlib`).
    """
    if isinstance(value, (bytes, bytearray)):
        text = repr(bytes(value[:limit]))
        return text + "…" if len(value) > limit else text
    if not isinstance(value, str):
        value = _REPR.repr(value)
    text = value[:limit]
    if not text.isprintable():
        text = repr(text)[1:-1]  # \n, \x1b, \u2028 ... as escapes
    return text + "…" if len(value) > limit else text


class LogBudget:
    """One client's share of the log: its token bucket and the lines it lost meanwhile."""

    __slots__ = ("bucket", "suppressed")

    def __init__(self, bucket: TokenBucket) -> None:
        self.bucket = bucket
        self.suppressed = 0


class ClientLog:
    """Rate limits for log lines that clients cause (see the module docstring).

    ``emit(owner, log.info, format, **fields)`` logs like ``log.info(format,
    **fields)``, unless ``owner`` (an object with a ``log_budget`` attribute,
    None at first, e.g. a session) or all clients together are over their rate.
    ``owner`` None (lines about a connection that has no session yet): the
    budget of the line's ``peer`` field (a peer string), by address; without
    one, only the total rate applies.  Fields must already be :func:`clip`-ed.
    """

    MAX_PEERS = 4096  # addresses whose budgets are kept (the least recently used is forgotten)

    def __init__(
        self,
        metrics: BridgeMetrics,
        rate: float = 1.0,
        total_rate: float = 100.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self._clock = clock
        self._total = TokenBucket(total_rate, clock=clock)
        self._total_suppressed = 0
        self._metric = metrics.log_suppressed
        self._peers: dict[str, LogBudget] = {}  # per-address budgets, least recently used first

    def emit(self, owner: Any, method: Callable[..., None], format: str, **fields: Any) -> bool:
        """Log the line, or count it as suppressed; True if it was logged."""
        budget = None
        if owner is not None:
            budget = owner.log_budget
            if budget is None:
                budget = owner.log_budget = LogBudget(TokenBucket(self.rate, BURST, clock=self._clock))
        elif isinstance(fields.get("peer"), str):
            budget = self._peer_budget(peer_host(fields["peer"]))
        if budget is not None:
            if not budget.bucket.take():
                budget.suppressed += 1
                self._metric.inc()
                return False
        if not self._total.take():
            self._total_suppressed += 1  # reported by the next line logged, for all clients
            self._metric.inc()
            return False
        if self._total_suppressed:
            log.warn(
                "{n} log lines caused by clients were not logged: over max_log_lines_per_second_total",
                n=self._total_suppressed,
            )
            self._total_suppressed = 0
        if budget is not None and budget.suppressed:
            format += " ({suppressed_lines} earlier lines about this client not logged)"
            fields["suppressed_lines"] = budget.suppressed
            budget.suppressed = 0
        method(format, **fields)
        return True

    def _peer_budget(self, key: str) -> LogBudget:
        budget = self._peers.pop(key, None)
        if budget is None:
            budget = LogBudget(TokenBucket(self.rate, BURST, clock=self._clock))
            while len(self._peers) >= self.MAX_PEERS:
                del self._peers[next(iter(self._peers))]
        self._peers[key] = budget  # the most recently used last
        return budget

    def gone(self, owner: Any, peer: str) -> None:
        """``owner`` is gone: say how many of its lines were not logged since its last one, if any."""
        budget = owner.log_budget
        if budget is not None and budget.suppressed:
            n, budget.suppressed = budget.suppressed, 0
            self.emit(
                None,
                log.info,
                "{n} log lines about {peer} were not logged: over max_log_lines_per_second",
                n=n,
                peer=peer,
            )


class _Repeats:
    __slots__ = ("method", "format", "fields", "count", "since")

    def __init__(self, method: Callable[..., None], format: str, fields: dict, since: float) -> None:
        self.method = method
        self.format = format
        self.fields = fields
        self.count = 0
        self.since = since


class RepeatSummary:
    """Lines of the same kind: the first at once, then one line per ``interval`` with how many more came.

    ``emit(kind, method, format, repeated, **fields)`` logs ``format`` like
    ``method(format, **fields)`` if nothing of ``kind`` was logged within the
    current interval; otherwise it counts, and at the end of the interval
    ``repeated`` is logged (its fields: those of the first line that it names,
    plus ``n`` and ``seconds``).  A kind quiet for a whole
    interval is forgotten.  At most ``max_kinds`` kinds are tracked: lines of
    further kinds are only counted, and said in one line per interval.
    Timers run on ``clock`` (the reactor), only while some kind is tracked.
    """

    def __init__(self, clock: IReactorTime, interval: float = 10.0, max_kinds: int = 256) -> None:
        self._clock = clock
        self.interval = interval
        self.max_kinds = max_kinds
        self._kinds: dict[Hashable, _Repeats] = {}
        self._overflow = 0
        self._timer: IDelayedCall | None = None

    def emit(self, kind: Hashable, method: Callable[..., None], format: str, repeated: str, **fields: Any) -> bool:
        """Log the line, or count it for the summary; True if it was logged now."""
        entry = self._kinds.get(kind)
        if entry is not None:
            entry.count += 1
            return False
        if len(self._kinds) >= self.max_kinds:
            self._overflow += 1
            self._arm()
            return False
        named = {name.split(".")[0].split("[")[0] for _, name, _, _ in Formatter().parse(repeated) if name}
        kept = {key: value for key, value in fields.items() if key in named}
        self._kinds[kind] = _Repeats(method, repeated, kept, self._clock.seconds())
        self._arm()
        method(format, **fields)
        return True

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = self._clock.callLater(self.interval, self._report)

    def _report(self) -> None:
        self._timer = None
        now = self._clock.seconds()
        for kind, entry in list(self._kinds.items()):
            if entry.count:
                entry.method(entry.format, n=entry.count, seconds=round(now - entry.since, 1), **entry.fields)
                entry.count, entry.since = 0, now
            else:
                del self._kinds[kind]
        if self._overflow:
            log.warn(
                "{n} more log lines of {kinds}+ other kinds not logged in the last {seconds}s",
                n=self._overflow,
                kinds=self.max_kinds,
                seconds=self.interval,
            )
            self._overflow = 0
        if self._kinds:
            self._arm()

    def stop(self) -> None:
        """Cancel the timer (what was counted since the last summary is not logged)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._kinds.clear()


class ErrorLog:
    """Unhandled exceptions in the HTTP and WebSocket layers: a bug (in the bridge, a hook or a library),
    but one a client can trigger as often as it likes.

    Each is counted in ``zmqwamp_internal_errors_total{where}``; the first of an
    exception class (per ``where``) is logged with its traceback, the rest in one
    summary line per interval (:class:`RepeatSummary`).
    """

    def __init__(self, metrics: BridgeMetrics, clock: IReactorTime, interval: float = 10.0) -> None:
        self._metric = metrics.internal_errors
        self._summary = RepeatSummary(clock, interval)

    def report(self, where: str, failure: Failure, peer: str) -> None:
        self._metric.labels(where).inc()
        self._summary.emit(
            (where, failure.type),
            log.error,
            "unhandled {error_class} ({where}) for {peer}: {error}",
            "{n} more unhandled {error_class} ({where}) in the last {seconds}s",
            log_failure=failure,
            where=where,
            error_class=qual(failure.type) if isinstance(failure.type, type) else str(failure.type),
            error=clip(failure.getErrorMessage()),
            peer=peer,
        )
