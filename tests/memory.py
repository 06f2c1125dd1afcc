"""In-memory doubles for unit tests: a bridge's session side without sockets or a real reactor.

* :class:`FakeChannel`: a session's :class:`~zmqwamp.wamp.session.MessageChannel` that records what
  it is given (checked against the Protocol by mypy in ``make lint``, and by tests/unit/test_memory.py);
* :class:`FakeForwarder`: records requests, the test fires their Deferreds;
* :func:`make_world`: a :class:`World` (router, hub, logins, registry, metrics) on a
  :class:`~twisted.internet.testing.MemoryReactorClock`, the one way unit tests build a bridge core;
* :func:`new_session`, :func:`send`, :func:`received`, :func:`joined`: a session and its messages (JSON);
* :func:`fired`, :func:`pending`, :func:`sync`: Deferreds without a reactor;
* :class:`SiteWorld`: the HTTP side (site, connection guard) on a StringTransport;
* :func:`open_websocket`: an autobahn server protocol past its opening handshake, on a :class:`WebSocketTransport`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from autobahn.wamp.serializer import JsonObjectSerializer
from twisted.cred.portal import Portal
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.static import Data

from zmqwamp.auth.cred import build_portal
from zmqwamp.auth.login import LoginService
from zmqwamp.auth.policy import EndpointPolicy
from zmqwamp.auth.throttle import LoginThrottle
from zmqwamp.clientlog import ClientLog
from zmqwamp.metrics import BridgeMetrics
from zmqwamp.peers import ClientAddresses
from zmqwamp.transport.guard import ConnectionGuardFactory
from zmqwamp.transport.site import BridgeSite, BridgeStatus, HealthResource, HostCheck, LocalOnly
from zmqwamp.transport.writer import WriteBatch
from zmqwamp.upstream.endpoints import EndpointResolver
from zmqwamp.upstream.hub import SubscriptionHub
from zmqwamp.upstream.reader import BridgeZmqFactory
from zmqwamp.wamp.limits import SessionLimits
from zmqwamp.wamp.messages import ObjectSerializer
from zmqwamp.wamp.ports import Forwarder
from zmqwamp.wamp.registry import SessionRegistry
from zmqwamp.wamp.router import Router
from zmqwamp.wamp.session import MessageChannel, SessionContext, WampSession

REP = "tcp://127.0.0.1:9999"
PUB = "tcp://127.0.0.1:9000"


class FakeChannel:
    """A session's channel that records frames (``sent``: payloads, or prepared EVENTs) and the close code.

    ``room``: what its outgoing buffer still takes (``outgoing_room``); every frame sent takes its size off,
    as a client that does not read would; a test sets it (and adds to it, as the client reads).
    """

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.closed: int | None = None
        self.prepared = 0
        self.room = 1 << 40

    def send_frame(self, payload: bytes, is_binary: bool) -> None:
        self.sent.append((payload, is_binary))
        self.room -= len(payload) + 2

    def prepare(self, payload: bytes, is_binary: bool) -> Any:
        self.prepared += 1
        return (payload, is_binary)

    def send_prepared(self, prepared: Any, slow_consumer: str | None = None) -> None:
        self.sent.append(prepared)
        self.room -= len(prepared[0]) + 2

    def outgoing_room(self) -> int:
        return max(0, self.room)

    def close(self, code: int, reason: str | None) -> None:
        self.closed = code


class FakeForwarder:
    """Records requests as (address, frames, timeout, Deferred); the test fires the Deferreds."""

    addresses: list[str] = []

    def __init__(self) -> None:
        self.requests: list[tuple[str, list[bytes], float, Deferred]] = []

    def request(self, address: str, frames: list[bytes], timeout: float, owner: Any = None) -> Deferred:
        d: Deferred = Deferred()
        self.requests.append((address, frames, timeout, d))
        return d

    def is_open(self, address: str) -> bool:
        return any(r[0] == address for r in self.requests)

    def close(self) -> None:
        pass


@dataclass(slots=True)
class World:
    """A bridge's core in memory: what sessions share, and the clock it runs on.

    Slotted, so that a test setting something the bridge would never read (``world.authorize = ...``
    instead of ``world.router.authorize = ...``) fails at once; ``test`` holds a test's own things.
    """

    context: SessionContext
    clock: MemoryReactorClock
    zmq_factory: BridgeZmqFactory
    test: dict = field(default_factory=dict)

    @property
    def router(self) -> Router:
        return self.context.router

    @property
    def forwarder(self) -> Any:
        return self.context.router.forwarder

    @property
    def hub(self) -> SubscriptionHub:
        hub = self.context.router.hub
        assert isinstance(hub, SubscriptionHub)  # make_world's is real
        return hub

    @property
    def logins(self) -> LoginService:
        return self.context.logins

    @property
    def registry(self) -> SessionRegistry:
        return self.context.registry

    @property
    def metrics(self) -> BridgeMetrics:
        return self.context.metrics

    @property
    def sessions(self) -> set:
        return self.context.registry.sessions

    def close(self) -> None:
        self.hub.close()
        self.zmq_factory.shutdown()


_LOCAL = EndpointPolicy(["tcp://127.0.0.1:*"])


def allow_local(session: Any, action: str, endpoint: Any, options: dict) -> bool:
    return _LOCAL.allows(endpoint)


def make_world(
    *,
    authorize: Callable[..., Any] = allow_local,
    portal: Portal | None = None,
    forwarder: Forwarder | None = None,
    throttle: Callable[[MemoryReactorClock], LoginThrottle] | None = None,
    realm: str = "zmqwamp",
    **router_options: Any,
) -> World:
    """A bridge core in memory: a :class:`FakeForwarder` (or ``forwarder``), a real hub on an inproc-free
    zmq factory, anonymous logins (or ``portal``), the throttle ``throttle(clock)`` (default: no floor)."""
    clock = MemoryReactorClock()
    metrics = BridgeMetrics()
    zmq_factory = BridgeZmqFactory(clock, WriteBatch())
    registry = SessionRegistry(metrics, clock)
    client_log = ClientLog(metrics)
    router = Router(
        authorize=authorize,
        forwarder=forwarder if forwarder is not None else FakeForwarder(),  # mypy checks it is a wamp.ports.Forwarder
        hub=SubscriptionHub(zmq_factory, metrics),
        registry=registry,
        metrics=metrics,
        clock=clock,
        client_log=client_log,
        **{"resolver": EndpointResolver(), "call_timeout": 10.0, "max_call_timeout": 60.0, **router_options},
    )
    logins = LoginService(
        realm,
        portal if portal is not None else build_portal([], anonymous=True),
        throttle(clock) if throttle is not None else LoginThrottle(clock, floor=0.0),
        metrics,
        stopping=lambda: registry.stopping,
    )
    return World(SessionContext(router, logins, registry, metrics, client_log, clock), clock, zmq_factory)


def new_session(
    world: World, serializer: ObjectSerializer | None = None, peer: str = "test-peer", limits: SessionLimits | None = None, **kw: Any
) -> tuple[WampSession, FakeChannel]:
    channel = FakeChannel()
    checked: MessageChannel = channel  # mypy (make lint) checks FakeChannel against the session's channel Protocol
    session = WampSession(world.context, serializer or JsonObjectSerializer(), checked, peer, limits, **kw)
    return session, channel


def send(session: WampSession, *msg: Any) -> None:
    session.message_received(json.dumps(list(msg)).encode(), False)


def received(channel: FakeChannel) -> list:
    return [json.loads(p) for p, _ in channel.sent]


def joined(world: World, peer: str = "test-peer", roles: dict | None = None) -> tuple[WampSession, FakeChannel]:
    """An anonymous session past WELCOME (which is checked, then cleared from ``channel.sent``)."""
    session, channel = new_session(world, peer=peer)
    send(session, 1, "zmqwamp", {"roles": roles or {"caller": {}}})
    welcome = received(channel)[-1]
    assert welcome[0] == 2 and welcome[2]["authid"] == "anonymous"
    assert set(welcome[2]["roles"]) == {"broker", "dealer"}
    channel.sent.clear()
    return session, channel


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


def fired(d: Deferred):
    """The result of a Deferred that must already have fired (raises its failure)."""
    results: list = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def pending(d: Deferred) -> list:
    results: list = []
    d.addBoth(results.append)
    return results


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


class WebSocketTransport(StringTransport):
    """A StringTransport that autobahn's server protocol runs on (it unregisters a producer when it drops a
    connection, registered or not, which StringTransport refuses)."""

    def unregisterProducer(self) -> None:
        self.producer = None


def open_websocket(factory: Any, subprotocol: str | None = None) -> tuple[Any, WebSocketTransport]:
    """``factory``'s protocol past the WebSocket opening handshake (offering ``subprotocol``), on a
    :class:`WebSocketTransport` whose written bytes are then cleared."""
    proto = factory.buildProtocol(None)
    transport = WebSocketTransport()
    proto.makeConnection(transport)
    offer = f"Sec-WebSocket-Protocol: {subprotocol}\r\n".encode() if subprotocol else b""
    request = (
        b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + offer + b"\r\n"
    )
    proto.dataReceived(request)  # txaio on Twisted (tests/unit/conftest.py): the handshake completes here
    assert proto.state == proto.STATE_OPEN, transport.value()
    transport.clear()
    return proto, transport
