"""zmqwamp.service.lifecycle.ReactorLagMonitor on a clock in memory (issue 21: see a freeze when it happens).
Against a real bridge that stalls: tests/e2e/test_log_floods.py."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent

from zmqwamp.metrics import BridgeMetrics
from zmqwamp.service.lifecycle import ReactorLagMonitor


def sample(metrics: BridgeMetrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def stall(clock: MemoryReactorClock, seconds: float) -> None:
    """The reactor busy for ``seconds``: time passes, then the due timers run (late)."""
    clock.advance(seconds)


def test_the_lateness_of_a_timer_is_the_lag():
    clock, metrics = MemoryReactorClock(), BridgeMetrics()
    monitor = ReactorLagMonitor(clock, metrics, warning=1.0, interval=0.1, window=30.0)
    monitor.startService()
    for _ in range(50):  # 5 s on time
        clock.advance(0.1)
    assert sample(metrics, "zmqwamp_reactor_lag_seconds_count") == 50
    assert sample(metrics, "zmqwamp_reactor_lag_max_seconds") < 0.001
    stall(clock, 2.8)
    assert 2.69 <= sample(metrics, "zmqwamp_reactor_lag_max_seconds") <= 2.71
    assert sample(metrics, "zmqwamp_reactor_lag_seconds_bucket", le="1.0") == 50
    assert sample(metrics, "zmqwamp_reactor_lag_seconds_bucket", le="2.5") == 50  # the stall: over 2.5 s
    assert sample(metrics, "zmqwamp_reactor_lag_seconds_bucket", le="5.0") == 51
    monitor.stopService()
    assert not clock.getDelayedCalls()


def test_the_worst_lag_is_kept_for_a_window_or_two():
    """A scrape every minute still sees a stall that ended: the gauge holds the worst of the last 30 to 60 s."""
    clock, metrics = MemoryReactorClock(), BridgeMetrics()
    ReactorLagMonitor(clock, metrics, warning=1.0, interval=0.1, window=30.0).startService()
    stall(clock, 0.6)
    for _ in range(290):  # 29 s later: still there
        clock.advance(0.1)
    assert 0.49 <= sample(metrics, "zmqwamp_reactor_lag_max_seconds") <= 0.51
    for _ in range(600):  # 60 s more, all on time
        clock.advance(0.1)
    assert sample(metrics, "zmqwamp_reactor_lag_max_seconds") < 0.001


def test_a_stall_past_the_warning_is_logged_at_most_once_per_window(log_events):
    clock, metrics = MemoryReactorClock(), BridgeMetrics()
    ReactorLagMonitor(clock, metrics, warning=1.0, interval=0.1, window=30.0).startService()
    stall(clock, 0.9)  # under the threshold: not logged
    clock.advance(0.1)
    for seconds in (1.6, 3.1, 1.2):  # three stalls within 30 s: one line now ...
        stall(clock, seconds)
        clock.advance(0.1)
    lines = [formatEvent(e) for e in log_events if e["log_namespace"] == "zmqwamp.service.lifecycle"]
    assert lines == ["the reactor was blocked for 1.50s: nothing else was served meanwhile (reactor_lag_warning: 1.0s)"]
    for _ in range(300):  # ... and one when the window ends, with the count and the worst
        clock.advance(0.1)
    lines = [formatEvent(e) for e in log_events if e["log_namespace"] == "zmqwamp.service.lifecycle"]
    assert len(lines) == 2 and lines[1].startswith("the reactor was blocked 2 more times over reactor_lag_warning (1.0s)")
    assert "the worst for 3.00s" in lines[1]
