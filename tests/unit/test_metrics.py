"""zmqwamp.metrics: the bridge's Prometheus metrics (what each counts: with the module that counts it)."""

from __future__ import annotations

from zmqwamp.metrics import BridgeMetrics


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
