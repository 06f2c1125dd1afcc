"""zmqwamp.metrics: what the registry exports besides the counters the parts update (issue 25: the metrics the
dashboard and alerts read): process_*, the build, gauges read at scrape time, the configured limits.
Against a real Prometheus: tests/deploy/test_monitoring.py.  (What each counter counts: with the module that counts it.)"""

from __future__ import annotations

import sys

import pytest
from prometheus_client import generate_latest

import zmqwamp
from zmqwamp.metrics import BridgeMetrics
from zmqwamp.service.config import LIMITS, BridgeConfig, limits
from zmqwamp.service.tap import LIMIT_OPTIONS


def value(metrics: BridgeMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prometheus_client reads /proc")
def test_process_metrics_are_on_the_bridges_registry():
    """CPU, memory and file descriptors of the process (prometheus_client's ProcessCollector), for the dashboard."""
    metrics = BridgeMetrics()
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_max_fds"):
        assert (value(metrics, name) or 0) > 0, name


def test_the_build_says_its_version():
    """zmqwamp_build_info{version} is 1, with the version zmqwamp.__version__ says."""
    assert value(BridgeMetrics(), "zmqwamp_build_info", version=zmqwamp.__version__) == 1


def test_state_gauges_are_read_when_scraped():
    """Connections by kind, calls in flight, subscriptions and draining: 0 until watched, then whatever the sources
    say at each scrape (nothing sets them as things happen)."""
    metrics = BridgeMetrics()
    assert b"zmqwamp_calls_in_flight 0.0" in generate_latest(metrics.registry)
    state = {"connections": (5, 3), "calls": 2, "subscriptions": 7, "draining": False}
    metrics.watch_state(
        connections=lambda: state["connections"],
        calls_in_flight=lambda: state["calls"],
        subscriptions=lambda: state["subscriptions"],
        draining=lambda: state["draining"],
    )
    assert value(metrics, "zmqwamp_connections_open", kind="websocket") == 3
    assert value(metrics, "zmqwamp_connections_open", kind="http") == 2
    assert value(metrics, "zmqwamp_calls_in_flight") == 2
    assert value(metrics, "zmqwamp_subscriptions_open") == 7
    assert value(metrics, "zmqwamp_draining") == 0
    state.update(connections=(1, 0), calls=0, subscriptions=1, draining=True)
    assert value(metrics, "zmqwamp_connections_open", kind="http") == 1
    assert value(metrics, "zmqwamp_calls_in_flight") == 0 and value(metrics, "zmqwamp_draining") == 1


def test_limits_are_exported_as_configured_and_follow_a_reload():
    """zmqwamp_limit{limit} for every configured limit, read at each scrape (a reload's max_history_bytes shows)."""
    config = BridgeConfig(max_sessions=77, max_zmq_sockets=99)
    metrics = BridgeMetrics()
    metrics.watch_limits(lambda: limits(config))
    assert value(metrics, "zmqwamp_limit", limit="max_sessions") == 77
    assert value(metrics, "zmqwamp_limit", limit="max_zmq_sockets") == 99
    assert value(metrics, "zmqwamp_limit", limit="call_timeout") == 10.0
    config.max_history_bytes = 1234
    assert value(metrics, "zmqwamp_limit", limit="max_history_bytes") == 1234


def test_every_numeric_limit_option_is_exported():
    """LIMITS holds every numeric option of the limits' --help section (slow_consumer is a policy, not a number)."""
    options = {name.replace("-", "_") for name, _ in LIMIT_OPTIONS} - {"slow_consumer"}
    assert options <= set(LIMITS)
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in limits(BridgeConfig()).values())


def test_each_bridge_has_a_registry_of_its_own():
    """Two BridgeMetrics (two bridges in one process, or two tests) count apart."""
    one, two = BridgeMetrics(), BridgeMetrics()
    one.dropped.labels("publish").inc(3)
    assert one.registry.get_sample_value("zmqwamp_dropped_total", {"reason": "publish"}) == 3
    assert two.registry.get_sample_value("zmqwamp_dropped_total", {"reason": "publish"}) is None


def test_history_gauges_are_read_from_their_source_at_each_scrape():
    """watch_history: zmqwamp_history_messages and _bytes per alias are what the source says when scraped, with no
    update on the hub's hot path; an alias gone from the source is gone from the metrics."""
    rings = {"ticks": (3, 300), "prices": (1, 50)}
    metrics = BridgeMetrics()
    metrics.watch_history(lambda: [(name, count, size) for name, (count, size) in rings.items()])
    sample = metrics.registry.get_sample_value
    assert sample("zmqwamp_history_messages", {"endpoint": "ticks"}) == 3
    assert sample("zmqwamp_history_bytes", {"endpoint": "prices"}) == 50
    rings["ticks"] = (4, 420)
    del rings["prices"]
    assert sample("zmqwamp_history_bytes", {"endpoint": "ticks"}) == 420
    assert sample("zmqwamp_history_messages", {"endpoint": "prices"}) is None
