"""The unit suite's own helpers, beside zmqwamp.testing (the in-memory bridge core, fake channel and forwarder,
sessions, the WebSocket side: public, for anyone's tests):

* :data:`REP`, :data:`PUB`: the addresses the tests use (what ``make_world``'s default hook allows);
* :class:`SlowNames`, :func:`run_replays`: host names and history replays the test steps;
* :func:`sync`: a users-file key derivation without a thread;
* :class:`SiteWorld`: the HTTP side (site, connection guard) on a StringTransport, with a :class:`FakeStatus`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.web.resource import Resource
from twisted.web.static import Data

from zmqwamp.peers import ClientAddresses
from zmqwamp.transport.guard import ConnectionGuardFactory
from zmqwamp.transport.site import BridgeSite, BridgeStatus, HealthResource, HostCheck, LocalOnly

if TYPE_CHECKING:  # (e2e modules import this one: zmqwamp.testing runs on Twisted)
    from zmqwamp.testing import World

REP = "tcp://127.0.0.1:9999"
PUB = "tcp://127.0.0.1:9000"


class SlowNames:
    """A host resolver (``world.hub.sockets.names``) whose answers the test gives: ``pending[i].callback(address)``."""

    def __init__(self) -> None:
        self.pending: list[Deferred] = []

    def connect_address(self, address: str) -> Deferred:
        d: Deferred = Deferred()
        self.pending.append(d)
        return d


def run_replays(world: World, max_rounds: int = 100_000) -> int:
    """Run the hub's history replays to their end, advancing the clock past their waits; the rounds it took."""
    for rounds in range(max_rounds):
        if not world.hub.replayer.running:
            return rounds
        calls = world.clock.getDelayedCalls()
        assert calls, "replays are running but nothing is scheduled"
        world.clock.advance(max(0.0, min(c.getTime() for c in calls) - world.clock.seconds()))
    raise AssertionError(f"replays still running after {max_rounds} rounds")


def sync(f, *args):
    """Run a users-file key derivation synchronously (instead of in a thread)."""
    try:
        return succeed(f(*args))
    except Exception:
        return fail()


class FakeStatus:
    """What ``/healthz`` shows (the site's :class:`~zmqwamp.transport.site.BridgeStatus`): set ``stopping``."""

    stopping = False

    def details(self) -> dict[str, Any]:
        return {
            "sessions": 2,
            "calls_in_flight": 3,
            "subscriptions": 4,
            "zmq_endpoints": {"req": ["tcp://10.9.9.9:2"], "sub": ["tcp://10.9.9.9:1"]},
        }


class SiteWorld:
    """The HTTP side in memory: a BridgeSite with /data, /local (local clients only) and /healthz behind a
    ConnectionGuardFactory, on a MemoryReactorClock; ``connect`` gives a connection on a StringTransport."""

    def __init__(self, *, counter=None, trusted=(), allow_hosts=(), timeout=2.0, header="x-forwarded-for"):
        self.clock = MemoryReactorClock()
        self.refused: list[str] = []
        root = Resource()
        root.putChild(b"data", Data(b"hello", "text/plain"))
        root.putChild(b"local", LocalOnly(Data(b"secret", "text/plain")))
        self.status: BridgeStatus = FakeStatus()
        root.putChild(b"healthz", HealthResource(self.status))
        self.site = BridgeSite(root, hosts=HostCheck(allow_hosts), on_refused=self.refused.append, reactor=self.clock)
        self.counter = counter
        self.factory = ConnectionGuardFactory(
            self.site, timeout, self.clock, counter, ClientAddresses(trusted, header), on_limit=self.refused.append
        )

    def connect(self, peer="10.1.2.3", local="127.0.0.1"):
        guard = self.factory.buildProtocol(None)
        transport = StringTransport(IPv4Address("TCP", local, 8080), IPv4Address("TCP", peer, 40000))
        guard.makeConnection(transport)
        return guard, transport
