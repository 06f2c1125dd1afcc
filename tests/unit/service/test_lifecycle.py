"""zmqwamp.service.lifecycle: what /healthz shows (Status) and what the drain closes (DrainService), in memory.
The reactor lag monitor: tests/unit/service/test_reactor_lag.py.  The drain against a real bridge: tests/e2e/test_drain.py."""

from __future__ import annotations

from typing import Any, cast

from zmqwamp.service.lifecycle import DrainService, Status
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
