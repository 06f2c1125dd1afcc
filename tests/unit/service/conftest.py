"""The service room's ``made``: a Bridge's own services (make_service) on a clock in memory."""

from __future__ import annotations

import pytest
from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet.testing import MemoryReactorClock

from zmqwamp import Bridge
from zmqwamp.testing import World


@pytest.fixture
def made():
    """``made(bridge, start=False)`` -> (a World of the bridge's own sessions, its top service), made by
    ``bridge.make_service`` on a MemoryReactorClock.  With ``start``, running: the reactor's start hooks (the
    aliases' histories), then every service (the users-file watcher among them), not the top service's own
    start, which installs process-wide signal handlers.  Its zmq side is shut down after the test."""
    made: list[tuple[Bridge, MultiService]] = []

    def make(bridge: Bridge, start: bool = False) -> tuple[World, MultiService]:
        clock = MemoryReactorClock()
        service = bridge.make_service(clock)
        made.append((bridge, service))
        if start:
            clock.run()
            MultiService.startService(service)
        assert bridge.context is not None
        return World(bridge.context, clock, bridge.context.router.hub._zmq), service

    yield make
    for bridge, service in made:
        for child in service:
            if isinstance(child, TimerService) and child.running:  # the users-file watcher
                child.stopService()
        assert bridge.context is not None
        bridge.context.router.hub.close()
        bridge.context.router.hub._zmq.shutdown()
