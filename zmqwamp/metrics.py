"""Prometheus metrics, one registry per bridge so tests can run several."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
