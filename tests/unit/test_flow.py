"""The bounded outgoing buffer (zmqwamp.flow) as plain calls: no sockets, no reactor."""

from __future__ import annotations

import pytest
from twisted.logger import LogLevel

from zmqwamp.flow import CLOSE, DROP_NEWEST, DROP_OLDEST, OutgoingBuffer
from zmqwamp.metrics import BridgeMetrics


class Wire:
    """Records writes; can pause the buffer when it has taken ``room`` bytes, like Twisted's transport."""

    def __init__(self):
        self.written: list[str] = []
        self.closed: list[str] = []
        self.metrics = BridgeMetrics()
        self.buf = OutgoingBuffer(100, self.closed.append, self.metrics, "peer")

    def send(self, name: str, size: int, policy=None):
        self.buf.send(lambda: self.written.append(name), size, policy)

    def dropped(self) -> float:
        return self.metrics.registry.get_sample_value("zmqwamp_dropped_total", {"reason": "slow_consumer"}) or 0

    def buffered(self) -> float:
        return self.metrics.registry.get_sample_value("zmqwamp_outgoing_buffered_bytes")


@pytest.fixture
def wire():
    return Wire()


def slow_consumer_warnings(events: list) -> list:
    return [e for e in events if e.get("log_level") is LogLevel.warn and "slow consumer" in e.get("log_format", "")]


def test_not_paused_writes_through(wire):
    """While the transport takes data, frames are written at once and nothing is queued."""
    wire.send("a", 1000, DROP_OLDEST)
    wire.send("b", 1000)
    assert wire.written == ["a", "b"] and len(wire.buf) == 0 and wire.buffered() == 0


def test_paused_queues_in_order_and_resume_flushes(wire):
    """Paused: frames wait in order; resumeProducing writes them until paused again."""
    wire.buf.pauseProducing()
    wire.send("e1", 10, DROP_OLDEST)
    wire.send("r1", 10)
    wire.send("e2", 10, DROP_OLDEST)
    assert wire.written == [] and wire.buf.queued_bytes == 30 and wire.buffered() == 30
    wire.buf.resumeProducing()
    assert wire.written == ["e1", "r1", "e2"] and wire.buf.queued_bytes == 0 and wire.buffered() == 0


def test_resume_stops_when_transport_pauses_again(wire):
    """A write that fills the transport again (pauseProducing inside write) stops the flush."""
    wire.buf.pauseProducing()
    for name in "abc":
        wire.buf.send(lambda name=name: (wire.written.append(name), wire.buf.pauseProducing()), 10, DROP_OLDEST)
    wire.buf.resumeProducing()
    assert wire.written == ["a"] and len(wire.buf) == 2


def test_drop_oldest_keeps_the_newest_events(wire, log_events):
    """drop_oldest: the oldest queued EVENTs make room; counted; one log line when the burst ends."""
    wire.buf.pauseProducing()
    for i in range(25):
        wire.send(f"e{i}", 10, DROP_OLDEST)
    assert wire.buf.queued_bytes <= 100
    assert wire.dropped() == 15
    assert slow_consumer_warnings(log_events) == []  # the burst is still going
    wire.buf.resumeProducing()
    assert wire.written == [f"e{i}" for i in range(15, 25)]
    assert len(slow_consumer_warnings(log_events)) == 1 and slow_consumer_warnings(log_events)[0]["n"] == 15 and slow_consumer_warnings(log_events)[0]["policy"] == DROP_OLDEST


def test_drop_newest_keeps_the_oldest_events(wire, log_events):
    wire.buf.pauseProducing()
    for i in range(25):
        wire.send(f"e{i}", 10, DROP_NEWEST)
    wire.buf.resumeProducing()
    assert wire.written == [f"e{i}" for i in range(10)]
    assert wire.dropped() == 15 and len(slow_consumer_warnings(log_events)) == 1


def test_close_policy_closes_and_discards(wire, log_events):
    """close: the first EVENT that does not fit closes the connection; the queue is freed; one log line."""
    wire.buf.pauseProducing()
    for i in range(11):
        wire.send(f"e{i}", 10, CLOSE)
    assert len(wire.closed) == 1 and "slow consumer" in wire.closed[0]
    assert len(slow_consumer_warnings(log_events)) == 1 and slow_consumer_warnings(log_events)[0]["n"] == 10 and wire.dropped() == 10
    assert wire.buf.queued_bytes == 0 and wire.buffered() == 0
    wire.send("late", 10)
    wire.buf.resumeProducing()
    assert wire.written == []
    assert wire.metrics.registry.get_sample_value("zmqwamp_limit_exceeded_total", {"limit": "slow_consumer"}) == 1


def test_reply_evicts_events_rather_than_being_dropped(wire):
    """A reply that does not fit makes room by dropping EVENTs; it is never dropped itself."""
    wire.buf.pauseProducing()
    for i in range(10):
        wire.send(f"e{i}", 10, DROP_NEWEST)
    wire.send("result", 30)
    wire.buf.resumeProducing()
    assert wire.written == [f"e{i}" for i in range(3, 10)] + ["result"]
    assert wire.closed == []


def test_undeliverable_reply_closes(wire):
    """Replies filling the buffer: the next one cannot be delivered, so the connection is closed."""
    wire.buf.pauseProducing()
    for i in range(10):
        wire.send(f"r{i}", 10)
    wire.send("r10", 10)
    assert len(wire.closed) == 1 and "reply undeliverable" in wire.closed[0]


def test_drop_oldest_with_only_replies_queued_drops_the_event(wire):
    wire.buf.pauseProducing()
    for i in range(10):
        wire.send(f"r{i}", 10)
    wire.send("e", 10, DROP_OLDEST)
    assert wire.closed == [] and wire.dropped() == 1 and len(wire.buf) == 10


def test_flush_writes_everything_even_when_paused(wire):
    """Before a close frame, whatever is queued is written (bounded by the limit)."""
    wire.buf.pauseProducing()
    wire.send("e", 10, DROP_OLDEST)
    wire.send("goodbye", 10)
    wire.buf.flush()
    assert wire.written == ["e", "goodbye"] and wire.buf.queued_bytes == 0


def test_stop_producing_frees_and_logs_the_burst(wire, log_events):
    """Connection lost: the queue is freed and the pending events are counted as dropped."""
    wire.buf.pauseProducing()
    for i in range(3):
        wire.send(f"e{i}", 10, DROP_OLDEST)
    wire.buf.stopProducing()
    assert wire.buffered() == 0 and wire.dropped() == 3 and len(slow_consumer_warnings(log_events)) == 1
    wire.send("x", 10)
    assert wire.written == []


def test_gauge_is_shared_across_connections():
    metrics = BridgeMetrics()
    a = OutgoingBuffer(100, lambda t: None, metrics)
    b = OutgoingBuffer(100, lambda t: None, metrics)
    for buf in (a, b):
        buf.pauseProducing()
        buf.send(lambda: None, 40, DROP_OLDEST)
    assert metrics.registry.get_sample_value("zmqwamp_outgoing_buffered_bytes") == 80
    a.stopProducing()
    assert metrics.registry.get_sample_value("zmqwamp_outgoing_buffered_bytes") == 40
