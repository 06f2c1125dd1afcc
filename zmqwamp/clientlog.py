"""Log lines a client causes: short values, and a bounded rate.

A client chooses much of what the bridge logs about it (URIs, topics, authids,
the reason in its ABORT, the text of a protocol error), and how often: one
session wrote 28.6 MiB/s of log with unacknowledged PUBLISHes to a 1 MB topic.
So:

* :func:`clip` bounds each client-chosen value (120 characters, then ``…``)
  and escapes control characters, so a value cannot forge a second line;
* :class:`ClientLog` lets through at most ``rate`` lines per second per client
  (a burst of :data:`BURST`) and ``total_rate`` per second for all clients
  together.  The rest are counted in ``zmqwamp_log_suppressed_total``; the next
  line logged for that client says how many of its lines were not, and so does
  a line when the client goes.

Only lines about to be logged pass through here: nothing on the hot path.
"""

from __future__ import annotations

import reprlib
import time
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from zmqwamp.limits import TokenBucket
from zmqwamp.metrics import BridgeMetrics

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
    ``owner`` None: only the total rate applies (lines about a connection that
    has no session yet).  Fields must already be :func:`clip`-ed.
    """

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

    def emit(self, owner: Any, method: Callable[..., None], format: str, **fields: Any) -> bool:
        """Log the line, or count it as suppressed; True if it was logged."""
        budget = None
        if owner is not None:
            budget = owner.log_budget
            if budget is None:
                budget = owner.log_budget = LogBudget(TokenBucket(self.rate, BURST, clock=self._clock))
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
