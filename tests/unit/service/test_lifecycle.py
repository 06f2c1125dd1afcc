"""zmqwamp.service.lifecycle: what /healthz shows (Status), what the drain closes (DrainService), and the reactor lag
monitor (issue 21: see a freeze when it happens), in memory.  The drain against a real bridge: tests/e2e/test_drain.py;
a bridge that stalls: tests/e2e/test_log_floods.py."""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent

from zmqwamp.metrics import BridgeMetrics
from zmqwamp.service.lifecycle import DrainService, ReactorLagMonitor, Status
from zmqwamp.testing import FakeForwarder, fired, joined, make_world, received, send
from zmqwamp.transport.guard import ConnectionCounter

from memory import PUB, REP


def test_status_reports_the_registry_forwarder_and_hub_it_was_given():
    """Status: stopping is the registry's; the details count sessions, calls in flight and subscriptions, and name
    the open zmq connections of the forwarder and the hub (what /healthz shows the operator)."""
    world = make_world()
    try:
        forwarder = FakeForwarder()
        forwarder.request(REP, [b"x"], 1.0)  # a connection open to REP
        status = Status(world.registry, forwarder, world.hub)
        session, channel = joined(world)
        send(session, 32, 1, {}, PUB)
        assert received(channel)[-1][0] == 33  # SUBSCRIBED
        assert status.details() == {
            "sessions": 1,
            "calls_in_flight": 0,
            "subscriptions": 1,
            "zmq_endpoints": {"req": [REP], "sub": [PUB]},
        }
        assert status.stopping is False
        world.registry.stopping = True
        assert status.stopping is True
    finally:
        world.close()


class Closing:
    """Records that ``close``/``shutdown`` was called on it, in ``order``."""

    def __init__(self, name: str, order: list[str]) -> None:
        self.name, self.order = name, order

    def close(self) -> None:
        self.order.append(self.name)

    shutdown = close


def test_drain_closes_the_zmq_side_it_was_handed():
    """On stop, with nothing in flight: every session gets GOODBYE, then the forwarder, the hub, the zmq factory and
    the host resolver handed to DrainService close, in that order."""
    world = make_world()
    session, channel = joined(world)
    order: list[str] = []
    drain = DrainService(
        world.registry,
        ConnectionCounter(10, 10),
        forwarder=cast(Any, Closing("forwarder", order)),
        hub=cast(Any, Closing("hub", order)),
        zmq_factory=cast(Any, Closing("zmq_factory", order)),
        names=cast(Any, Closing("names", order)),
        clock=world.clock,
        drain_time=1.0,
    )
    drain.startService()
    fired(drain.stopService())
    assert world.registry.stopping and received(channel)[-1][0] == 6  # GOODBYE
    assert order == ["forwarder", "hub", "zmq_factory", "names"]
    world.close()


# -- ReactorLagMonitor, on a clock in memory ---------------------------------------------------------------------------


def sample(metrics: BridgeMetrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def stall(clock: MemoryReactorClock, seconds: float) -> None:
    """The reactor busy for ``seconds``: time passes, then the due timers run (late)."""
    clock.advance(seconds)


def test_the_lateness_of_a_timer_is_the_lag():
    """Each tick measures how late its timer ran: a histogram, and the worst in a gauge; a stop leaves no timer."""
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
    """A stall over reactor_lag_warning is logged at once; further ones in the window become one line with the count and the worst."""
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
