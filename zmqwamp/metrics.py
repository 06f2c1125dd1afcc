"""Prometheus metrics, one registry per bridge so tests can run several."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

try:  # zmqwamp.__version__, found the same way (imported from there, this leaf would import the public surface)
    VERSION = version("zmqwamp")
except PackageNotFoundError:
    VERSION = "0+unknown"

# (endpoint name, messages held, bytes accounted) of each history alias, read at scrape time
HistorySource = Callable[[], Iterable[tuple[str, int, int]]]
# the configured limits by name (zmqwamp.service.config.limits), read at scrape time
LimitSource = Callable[[], Mapping[str, float]]


class BridgeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.sessions_open = Gauge("zmqwamp_sessions_open", "WAMP sessions established", registry=r)
        self.logins = Counter("zmqwamp_logins_total", "Login attempts", ["method", "outcome"], registry=r)
        self.calls = Counter(
            "zmqwamp_calls_total", "CALLs by endpoint and outcome", ["endpoint", "outcome"], registry=r
        )
        self.call_latency = Histogram("zmqwamp_call_latency_seconds", "CALL to RESULT/ERROR", registry=r)
        self.events_in = Counter("zmqwamp_events_in_total", "Messages received from zmq SUB sockets", registry=r)
        self.events_out = Counter("zmqwamp_event_frames_out_total", "EVENT frames sent to subscribers", registry=r)
        self.bytes_out = Counter("zmqwamp_bytes_out_total", "WebSocket payload bytes sent", registry=r)
        self.dropped = Counter("zmqwamp_dropped_total", "Messages dropped, by reason", ["reason"], registry=r)
        self.protocol_errors = Counter(
            "zmqwamp_protocol_errors_total", "Sessions aborted for protocol violations", registry=r
        )
        self.denied = Counter("zmqwamp_denied_total", "Requests refused by policy", ["action"], registry=r)
        self.zmq_sockets = Gauge("zmqwamp_zmq_sockets_open", "zmq sockets open", ["kind"], registry=r)
        self.limit_exceeded = Counter(
            "zmqwamp_limit_exceeded_total",
            "Requests or connections refused (or closed) by a limit",
            ["limit"],
            registry=r,
        )
        self.name_lookups = Counter(
            "zmqwamp_name_lookups_total",
            "tcp host names resolved by the bridge (not libzmq), by outcome",
            ["outcome"],
            registry=r,
        )
        self.revoked = Counter(
            "zmqwamp_revoked_total",
            "Subscriptions revoked when a reload no longer allows them, sessions ended when their credential expired",
            ["what"],
            registry=r,
        )
        self.log_suppressed = Counter(
            "zmqwamp_log_suppressed_total",
            "Log lines caused by clients and not logged (over the log rate limits)",
            registry=r,
        )
        self.outgoing_buffered = Gauge(
            "zmqwamp_outgoing_buffered_bytes",
            "Bytes waiting for slow WebSocket clients (bounded per connection)",
            registry=r,
        )
        self.history_replayed = Counter(
            "zmqwamp_history_replayed_total",
            "EVENTs sent from an alias's history (get_retained, _since) before live ones",
            registry=r,
        )
        self.history_gaps = Counter(
            "zmqwamp_history_gaps_total",
            "Replays (_since, get_retained) told of a gap, by reason (history, epoch, no_history, slow_consumer)",
            ["reason"],
            registry=r,
        )
        self.history_scanned = Counter(
            "zmqwamp_history_scanned_total",
            "Held messages looked at by replays (matching or not)",
            registry=r,
        )
        self.history_replay_throttled = Counter(
            "zmqwamp_history_replay_throttled_total",
            "Times a replay waited because its client address was over max_replay_per_second",
            registry=r,
        )
        self.history_replays = Gauge(
            "zmqwamp_history_replays_running",
            "Replays started and not caught up yet (their subscribers join live delivery when they are)",
            registry=r,
        )
        self.history_too_large = Counter(
            "zmqwamp_history_too_large_total",
            "Messages not kept in an alias's history: alone over its history_bytes",
            ["endpoint"],
            registry=r,
        )

        self.internal_errors = Counter(
            "zmqwamp_internal_errors_total",
            "Unhandled exceptions in the HTTP and WebSocket layers (a bug), by where: "
            "http, connection, websocket_allowed",
            ["where"],
            registry=r,
        )
        self.reactor_lag = Histogram(
            "zmqwamp_reactor_lag_seconds",
            "How late a timer ran, measured every 0.1 s: time the reactor was busy and could not serve anyone",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
            registry=r,
        )
        self.reactor_lag_max = Gauge(
            "zmqwamp_reactor_lag_max_seconds",
            "The worst reactor lag of the last 30 to 60 seconds",
            registry=r,
        )
        # CPU, memory, file descriptors (process_*): read from /proc at each scrape (Linux; none elsewhere)
        ProcessCollector(registry=r)
        self.build = Info("zmqwamp_build", "The running bridge: its version", registry=r)
        self.build.info({"version": VERSION})
        # Read at scrape time (watch_state), so nothing on the data path updates them; 0 until watched.
        self.connections_open = Gauge(
            "zmqwamp_connections_open",
            "Connections open on the listen ports (what max_sessions counts), by kind: websocket, or http not upgraded",
            ["kind"],
            registry=r,
        )
        self.calls_in_flight = Gauge(
            "zmqwamp_calls_in_flight", "CALLs waiting for their reply (what a drain waits for)", registry=r
        )
        self.subscriptions_open = Gauge(
            "zmqwamp_subscriptions_open",
            "Subscriptions with a subscriber: one per endpoint and filter, shared by the sessions holding it",
            registry=r,
        )
        self.draining = Gauge(
            "zmqwamp_draining",
            "1 while the bridge drains (stopping: /healthz 503, no new sessions or calls), else 0",
            registry=r,
        )

    def watch_state(
        self,
        *,
        connections: Callable[[], tuple[int, int]],
        calls_in_flight: Callable[[], int],
        subscriptions: Callable[[], int],
        draining: Callable[[], bool],
    ) -> None:
        """Read these gauges from the bridge's own counts at each scrape.

        ``connections``: (connections open, of which WebSocket); the others as named.
        """
        self.connections_open.labels("websocket").set_function(lambda: connections()[1])
        self.connections_open.labels("http").set_function(lambda: connections()[0] - connections()[1])
        self.calls_in_flight.set_function(calls_in_flight)
        self.subscriptions_open.set_function(subscriptions)
        self.draining.set_function(lambda: 1.0 if draining() else 0.0)

    def watch_limits(self, source: LimitSource) -> None:
        """Report the configured limits as ``zmqwamp_limit{limit=...}``, read at each scrape (a reload that
        changes one shows): alert rules compare against them instead of constants."""
        self.registry.register(_LimitCollector(source))

    def watch_history(self, source: HistorySource) -> None:
        """Report ``source``'s rings as zmqwamp_history_messages / zmqwamp_history_bytes, read at each scrape.

        Read when scraped rather than set per message: the hub's hot path stays free of gauge updates.
        """
        self.registry.register(_HistoryCollector(source))


class _HistoryCollector(Collector):
    def __init__(self, source: HistorySource) -> None:
        self._source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        messages = GaugeMetricFamily(
            "zmqwamp_history_messages", "Messages held in an alias's history", labels=["endpoint"]
        )
        held = GaugeMetricFamily(
            "zmqwamp_history_bytes",
            "Memory held in an alias's history: frames plus per-message and per-frame overhead (history_bytes)",
            labels=["endpoint"],
        )
        for name, count, size in self._source():
            messages.add_metric([name], count)
            held.add_metric([name], size)
        yield messages
        yield held


class _LimitCollector(Collector):
    def __init__(self, source: LimitSource) -> None:
        self._source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "zmqwamp_limit",
            "The configured limits, by option name (seconds for timeouts, bytes for sizes, per second for rates)",
            labels=["limit"],
        )
        for name, value in self._source().items():
            family.add_metric([name], float(value))
        yield family
