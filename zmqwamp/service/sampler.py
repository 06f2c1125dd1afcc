"""What ``/status`` shows: a sample of the bridge every few seconds, the last minutes of them kept in a ring.

A timer takes the samples, not the requests: one every :data:`INTERVAL` seconds, the last :data:`KEEP` of them
kept (10 minutes; a fresh page shows them at once), each a few numbers read from what the bridge counts anyway
(:class:`~zmqwamp.service.lifecycle.Status`, the metrics registry's counters, the reactor-lag gauge) and the
process's CPU time and RSS.  A sample costs what collecting those counters costs, whoever watches or not
(measured: 0.2 ms with 5 endpoints, 1.5 ms with 50, 6.4 ms with 256, the most zmqwamp_calls_total labels, each
with three outcomes: at most 0.3% of the reactor's time).

``/status.json`` (:meth:`StatusSampler.snapshot`) is made when asked, at most once per sample, and then served as
the same bytes until the next sample: a client polling faster, or many at once, cost only the bytes they read.
Making it walks the subscriptions once (per endpoint counts) and lists at most :data:`MAX_ENDPOINT_ROWS`
endpoints (measured with a full ring: 1.3 ms and 18 KiB with 5 endpoints, 2.5 ms and 76 KiB with 256).

Endpoint states come from the calls of the last :data:`STATE_WINDOW` seconds, as the shipped alerts judge a
backend (examples/deploy/prometheus/alerts.yml): ``failing`` (calls timed out or were refused as unavailable and
none succeeded: a REP down or not bound), ``degraded`` (some of each), ``ok``, ``idle`` (a REQ connection open, no
calls); a SUB connection is ``receiving`` or ``quiet`` (ZeroMQ does not tell a PUB that is down from one with
nothing to say), and ``closed`` is no connection.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.metrics import MetricWrapperBase
from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from zmqwamp.metrics import VERSION, BridgeMetrics
from zmqwamp.service.lifecycle import Status

INTERVAL = 2.0  # seconds between two samples
KEEP = 300  # samples kept: 10 minutes
MAX_ENDPOINT_ROWS = 200  # endpoints listed (aliases first, then the busiest); the rest are counted
STATE_WINDOW = 60.0  # seconds of calls an endpoint's state is judged on
BACKEND_FAILURES = frozenset({"timeout", "unavailable"})  # call outcomes that say the backend did not answer

try:
    _PAGE = os.sysconf("SC_PAGE_SIZE")
except (AttributeError, ValueError, OSError):
    _PAGE = 4096


def rss_bytes() -> float | None:
    """The process's resident memory now (Linux's /proc/self/statm; None elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


def cpu_seconds() -> float:
    """User and system CPU time of the process so far (every thread: the reactor's and libzmq's)."""
    times = os.times()
    return times.user + times.system


@dataclass(frozen=True, slots=True)
class Sample:
    """One look at the bridge: what the charts of /status show (counters are totals; rates come from two)."""

    time: float  # the reactor's clock (unix seconds)
    sessions: int
    connections: int
    calls_in_flight: int
    subscriptions: int
    zmq_sockets: int
    reactor_lag_max: float
    rss: float | None
    cpu_seconds: float
    calls: float
    calls_failed: float
    events_in: float
    event_frames_out: float
    dropped: float


# the counters of a Sample, shown per second: name in the JSON's series -> the Sample's field
RATES = {
    "calls_per_second": "calls",
    "calls_failed_per_second": "calls_failed",
    "events_in_per_second": "events_in",
    "event_frames_out_per_second": "event_frames_out",
    "drops_per_second": "dropped",
    "cpu": "cpu_seconds",
}
GAUGES = ("sessions", "connections", "calls_in_flight", "subscriptions", "zmq_sockets", "reactor_lag_max", "rss")


@dataclass(frozen=True, slots=True)
class Breakdown:
    """The labelled counters of one sample (kept for the latest two only: the tables' totals and rates)."""

    calls: dict[tuple[str, str], float]  # (endpoint, outcome) -> calls
    dropped: dict[str, float]  # reason -> messages
    limits_hit: dict[str, float]  # limit -> refusals
    logins: dict[str, float]  # "method outcome" -> attempts
    denied: dict[str, float]  # action -> refusals
    published: dict[str, int]  # open SUB address -> the last publication id there
    zmq_sockets: dict[str, float]  # kind -> open
    bytes_out: float
    outgoing_buffered: float
    websockets: int


def totals(metric: MetricWrapperBase, *labels: str) -> dict[Any, float]:
    """A metric's values summed by ``labels`` (one label: keyed by its value; several: by a tuple of them)."""
    out: dict[Any, float] = {}
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            values = tuple(sample.labels[label] for label in labels)
            key = values[0] if len(values) == 1 else values
            out[key] = out.get(key, 0.0) + sample.value
    return out


def total(metric: MetricWrapperBase) -> float:
    """A metric's values summed (a counter's total over its labels, a gauge's value)."""
    return sum(
        sample.value for family in metric.collect() for sample in family.samples if not sample.name.endswith("_created")
    )


def _per_second(new: float | None, old: float | None, seconds: float) -> float | None:
    if new is None or old is None or seconds <= 0 or new < old:
        return None
    return (new - old) / seconds


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class StatusSampler(Service):
    """Takes a :class:`Sample` every ``interval`` seconds on ``clock``, keeps the last ``keep``, and makes
    ``/status.json`` from them (:meth:`snapshot`)."""

    def __init__(
        self,
        status: Status,
        metrics: BridgeMetrics,
        clock: IReactorTime,
        limits: Callable[[], Mapping[str, float]] = dict,
        interval: float = INTERVAL,
        keep: int = KEEP,
        process: tuple[Callable[[], float], Callable[[], float | None]] = (cpu_seconds, rss_bytes),
    ) -> None:
        self.status = status
        self.metrics = metrics
        self.clock = clock
        self.limits = limits
        self.interval = interval
        self.samples: deque[Sample] = deque(maxlen=keep)
        self._cpu, self._rss = process
        self._latest: Breakdown | None = None
        self._previous: Breakdown | None = None
        # endpoint name -> [last time a call succeeded, last time one failed (BACKEND_FAILURES)]: bounded by the
        # endpoint labels of zmqwamp_calls_total (Router.max_endpoint_labels, the aliases, "other")
        self._health: dict[str, list[float]] = {}
        self._started = clock.seconds()
        self._json: bytes | None = None
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        self._started = self.clock.seconds()
        self._loop = LoopingCall(self.sample)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    # -- sampling (the timer) -------------------------------------------------------------------------

    def sample(self) -> Sample:
        """Take a sample now; the next snapshot shows it."""
        m, status = self.metrics, self.status
        now = self.clock.seconds()
        calls = totals(m.calls, "endpoint", "outcome")
        zmq_sockets = totals(m.zmq_sockets, "kind")
        connections, websockets = status.connections()
        sample = Sample(
            time=now,
            sessions=status.sessions(),
            connections=connections,
            calls_in_flight=status.calls_in_flight(),
            subscriptions=status.subscriptions(),
            zmq_sockets=int(sum(zmq_sockets.values())),
            reactor_lag_max=total(m.reactor_lag_max),
            rss=self._rss(),
            cpu_seconds=self._cpu(),
            calls=sum(calls.values()),
            calls_failed=sum(n for (_, outcome), n in calls.items() if outcome != "ok"),
            events_in=total(m.events_in),
            event_frames_out=total(m.events_out),
            dropped=total(m.dropped),
        )
        breakdown = Breakdown(
            calls=calls,
            dropped=totals(m.dropped, "reason"),
            limits_hit=totals(m.limit_exceeded, "limit"),
            logins={f"{method} {outcome}": n for (method, outcome), n in totals(m.logins, "method", "outcome").items()},
            denied=totals(m.denied, "action"),
            published={address: status.last_publication(address) for address in status.sub_addresses()},
            zmq_sockets=zmq_sockets,
            bytes_out=total(m.bytes_out),
            outgoing_buffered=total(m.outgoing_buffered),
            websockets=websockets,
        )
        self._judge(breakdown, now)
        self.samples.append(sample)
        self._previous, self._latest = self._latest, breakdown
        self._json = None
        return sample

    def _judge(self, breakdown: Breakdown, now: float) -> None:
        """Note which endpoints had calls succeed or fail since the last sample."""
        before = self._latest.calls if self._latest is not None else {}
        for (endpoint, outcome), n in breakdown.calls.items():
            if n > before.get((endpoint, outcome), 0.0):
                if outcome == "ok":
                    self._health.setdefault(endpoint, [-1e18, -1e18])[0] = now
                elif outcome in BACKEND_FAILURES:
                    self._health.setdefault(endpoint, [-1e18, -1e18])[1] = now

    # -- /status.json (when asked) ----------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """``/status.json``: made at most once per sample (the same bytes until the next one)."""
        if not self.samples:
            self.sample()  # before the service started (or in a test): once
        if self._json is None:
            self._json = json.dumps(self.document(), separators=(",", ":")).encode()
        return self._json

    def document(self) -> dict[str, Any]:
        latest = self.samples[-1]
        previous = self.samples[-2] if len(self.samples) > 1 else None
        now, was = self._latest, self._previous
        assert now is not None
        seconds = latest.time - previous.time if previous is not None else 0.0

        def rate(new: float | None, old: float | None) -> float | None:
            return _round(_per_second(new, old, seconds))

        current: dict[str, Any] = {name: _round(getattr(latest, name)) for name in GAUGES}
        for name, field in RATES.items():
            current[name] = rate(getattr(latest, field), getattr(previous, field) if previous else None)
        current.update(
            websockets=now.websockets,
            zmq_sockets_by_kind=now.zmq_sockets,
            outgoing_buffered=now.outgoing_buffered,
            bytes_out_per_second=rate(now.bytes_out, was.bytes_out if was else None),
        )
        return {
            "bridge": {
                "version": VERSION,
                "pid": os.getpid(),
                "time": latest.time,
                "started": self._started,
                "draining": self.status.stopping,
                "interval": self.interval,
                "keep": self.samples.maxlen,
            },
            "now": current,
            "totals": {
                "calls": latest.calls,
                "calls_failed": latest.calls_failed,
                "events_in": latest.events_in,
                "event_frames_out": latest.event_frames_out,
                "dropped": latest.dropped,
                "bytes_out": now.bytes_out,
            },
            "limits": dict(self.limits()),
            "tables": {
                name: self._table(getattr(now, name), getattr(was, name) if was else None, rate)
                for name in ("dropped", "limits_hit", "logins", "denied")
            },
            **self._endpoints(latest.time, now, was, rate),
            "series": self._series(),
        }

    @staticmethod
    def _table(
        new: dict[str, float], old: dict[str, float] | None, rate: Callable[[float | None, float | None], float | None]
    ) -> list[dict[str, Any]]:
        rows = [
            {"name": name, "total": n, "per_second": rate(n, old.get(name, 0.0) if old is not None else None)}
            for name, n in new.items()
        ]
        return sorted(rows, key=lambda row: (-row["total"], row["name"]))

    def _series(self) -> dict[str, list]:
        samples = list(self.samples)
        series: dict[str, list] = {"time": [s.time for s in samples]}
        for name in GAUGES:
            series[name] = [_round(getattr(s, name)) for s in samples]
        for name, field in RATES.items():
            values: list[float | None] = [None]
            for old, new in zip(samples, samples[1:], strict=False):
                values.append(_round(_per_second(getattr(new, field), getattr(old, field), new.time - old.time)))
            series[name] = values[: len(samples)]
        return series

    def _endpoints(
        self,
        now_time: float,
        now: Breakdown,
        was: Breakdown | None,
        rate: Callable[[float | None, float | None], float | None],
    ) -> dict[str, Any]:
        """The endpoints table: every alias, every endpoint with calls counted, a connection or a subscription."""
        status = self.status
        aliases = status.aliases()
        req_open = set(status.req_addresses())
        sub_open = set(now.published)
        subscribed = status.subscriptions_by_endpoint()
        held = {name: (messages, size) for name, messages, size in status.history_held()}
        calls: dict[str, dict[str, float]] = {}
        for (endpoint, outcome), n in now.calls.items():
            calls.setdefault(endpoint, {})[outcome] = n
        before: dict[str, float] = {}
        if was is not None:
            for (endpoint, _), n in was.calls.items():
                before[endpoint] = before.get(endpoint, 0.0) + n
        names = set(aliases) | set(calls) | set(subscribed)
        # an open connection used through an alias only is shown on the alias's row
        covered = {alias.address for alias in aliases.values()}
        names |= {address for address in req_open | sub_open if address not in covered}
        rows: list[dict[str, Any]] = []
        for name in names:
            alias = aliases.get(name)
            address: str | None = name if "://" in name else None  # "other" has none
            subscriptions = subscribers = 0
            if name in subscribed:
                address, subscriptions, subscribers = subscribed[name]
            if alias is not None:
                address = alias.address
            endpoint_calls = calls.get(name, {})
            req = address in req_open
            sub = address in sub_open
            published = None
            if address is not None and sub and was is not None:
                published = rate(now.published.get(address), was.published.get(address))
            kind = alias.kind if alias is not None and alias.kind else None
            if kind is None:
                kind = "sub" if sub or subscriptions else "req" if req or endpoint_calls else None
            history = None
            if name in held:
                history = {"messages": held[name][0], "bytes": held[name][1]}
                if alias is not None:
                    history.update(max_messages=alias.history, max_bytes=alias.history_bytes)
            rows.append(
                {
                    "name": name,
                    "alias": alias is not None,
                    "address": address,
                    "kind": kind,
                    "state": self._state(name, req, sub, published, now_time),
                    "req_connection": req,
                    "sub_connection": sub,
                    "subscriptions": subscriptions,
                    "subscribers": subscribers,
                    "history": history,
                    "calls": endpoint_calls,
                    "calls_per_second": rate(sum(endpoint_calls.values()), before.get(name, 0.0) if was else None),
                    "messages_per_second": published,
                }
            )
        rows.sort(
            key=lambda row: (
                not row["alias"],
                -((row["calls_per_second"] or 0) + (row["messages_per_second"] or 0) + row["subscribers"]),
                row["name"],
            )
        )
        return {"endpoints": rows[:MAX_ENDPOINT_ROWS], "endpoints_not_listed": max(0, len(rows) - MAX_ENDPOINT_ROWS)}

    def _state(self, name: str, req: bool, sub: bool, published: float | None, now: float) -> str:
        states = []
        last_ok, last_failed = self._health.get(name, (-1e18, -1e18))
        ok, failed = now - last_ok <= STATE_WINDOW, now - last_failed <= STATE_WINDOW
        if failed:
            states.append("degraded" if ok else "failing")
        elif ok:
            states.append("ok")
        elif req:
            states.append("idle")
        if sub:
            states.append("receiving" if published else "quiet")
        return ", ".join(states) or "closed"
