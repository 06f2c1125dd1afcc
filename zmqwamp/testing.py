"""Test a bridge's hooks and checkers in memory: no process, no listening port, no reactor running.

For people who write a :class:`~zmqwamp.Bridge` subclass (``websocket_allowed``, ``zmq_allowed``) or a Twisted
Cred checker, as ``treq.testing`` is for treq's users; zmqwamp's own unit tests use it too.  A test drives real
WAMP sessions (the bridge's own :class:`~zmqwamp.wamp.session.WampSession`, router, logins and subscription hub)
on a :class:`~twisted.internet.testing.MemoryReactorClock` it advances itself, and reads what each session sent::

    from zmqwamp.testing import bridge_world, joined, received, send

    def test_bob_may_not_call_the_payroll():
        world = bridge_world(MyBridge(allow=["tcp://127.0.0.1:*"], checkers=[MyChecker()]))
        try:
            bob, channel = joined(world, authid="bob", ticket="bob-secret")
            send(bob, 48, 1, {}, "tcp://127.0.0.1:5555", ["raise"])  # CALL
            assert received(channel)[-1][4] == "wamp.error.not_authorized"  # ERROR
            assert world.forwarder.requests == []  # nothing reached ZeroMQ
        finally:
            world.close()

What stands in for what:

* ZeroMQ requests: a :class:`FakeForwarder` records each CALL that passed the hook (:class:`Request`); the test
  fires its Deferred with the reply frames (a RESULT follows) or fails it.
* ZeroMQ subscriptions: the real hub; :func:`publish` hands it a message as its SUB socket would.  (A SUBSCRIBE
  makes a real ZeroMQ SUB socket, whose connection no one ever reads: the test's messages come from :func:`publish`.)
* The WebSocket connection: a :class:`FakeChannel` records the frames a session sends (:func:`received` decodes
  them); :func:`websocket_factory` and :func:`handshake` give the real WebSocket side on a string transport, for
  ``websocket_allowed`` and the opening handshake.
* Deferreds without a reactor: :func:`fired`, :func:`pending`.

Import it from tests only: the bridge never imports it, and running a bridge does not need it.  The doubles
declare the Protocols they stand in for (:class:`~zmqwamp.wamp.ports.Forwarder`,
:class:`~zmqwamp.wamp.session.MessageChannel`), so mypy checks them against what the bridge uses.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from autobahn.wamp.serializer import JsonObjectSerializer
from twisted.cred.portal import Portal
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from zmqwamp.auth.cred import build_portal
from zmqwamp.auth.login import LoginService
from zmqwamp.auth.policy import EndpointPolicy
from zmqwamp.auth.throttle import LoginThrottle
from zmqwamp.clientlog import ClientLog
from zmqwamp.metrics import BridgeMetrics
from zmqwamp.service.bridge import Bridge, websocket_options
from zmqwamp.service.config import BridgeConfig
from zmqwamp.transport.websocket import WampServerFactory
from zmqwamp.transport.writer import WriteBatch
from zmqwamp.upstream.endpoints import Endpoint, EndpointResolver
from zmqwamp.upstream.hub import SubscriptionHub
from zmqwamp.upstream.reader import BridgeZmqFactory
from zmqwamp.wamp.limits import SessionLimits
from zmqwamp.wamp.messages import ObjectSerializer
from zmqwamp.wamp.ports import Forwarder
from zmqwamp.wamp.registry import SessionRegistry
from zmqwamp.wamp.router import Router
from zmqwamp.wamp.session import MessageChannel, SessionContext, WampSession

__all__ = [
    "FakeChannel",
    "FakeForwarder",
    "Request",
    "WebSocketTransport",
    "World",
    "allow_local",
    "bridge_world",
    "events",
    "fired",
    "handshake",
    "joined",
    "make_world",
    "new_session",
    "open_websocket",
    "pending",
    "publish",
    "received",
    "send",
    "server_frames",
    "websocket_factory",
]

# WAMP message types a test reads most
_WELCOME, _EVENT = 2, 36


# -- the doubles ------------------------------------------------------------------------------------------------


class FakeChannel(MessageChannel):
    """A session's WebSocket connection that records what the session sends.

    ``sent``: every frame, in order, as ``(payload, is_binary)`` (:func:`received` decodes them); ``closed``:
    the WebSocket close code once the session closed the connection (None while open).  ``room`` is what the
    outgoing buffer still takes (:meth:`outgoing_room`, which history replays look at): every frame sent takes
    its size off, as a client that does not read would; a test sets it (or adds to it, as the client reads).
    """

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.closed: int | None = None
        self.prepared = 0  # EVENTs made ready to send to many: one per zmq message and serializer
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


class Request(NamedTuple):
    """A request the :class:`FakeForwarder` got: fire ``deferred`` with the reply frames (``[b"..."]``), or fail
    it with one of :mod:`zmqwamp.upstream.errors`' exceptions, as the ZeroMQ side would."""

    address: str
    frames: list[bytes]
    timeout: float  # seconds: the CALL's timeout option, the endpoint's, or call_timeout
    deferred: Deferred


class FakeForwarder(Forwarder):
    """The ZeroMQ side of CALLs: records each request (``requests``, oldest first) and sends nothing.

    As the real :class:`~zmqwamp.upstream.forwarder.RequestForwarder`, an address is open once a request went to
    it, and :meth:`close` cancels the requests still waiting for a reply and closes every address.
    """

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._open: set[str] = set()

    @property
    def addresses(self) -> list[str]:
        return sorted(self._open)

    def request(self, address: str, frames: list[bytes], timeout: float, owner: Any = None) -> Deferred:
        d: Deferred = Deferred()
        self.requests.append(Request(address, frames, timeout, d))
        self._open.add(address)
        return d

    def is_open(self, address: str) -> bool:
        return address in self._open

    def close(self) -> None:
        self._open.clear()
        for request in self.requests:
            if not request.deferred.called:
                request.deferred.cancel()


# -- a bridge's core --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class World:
    """A bridge's core in memory: what its sessions share (``context``), and the clock it runs on.

    Slotted, so that a test setting something the bridge never reads (``world.authorize = ...`` instead of
    ``world.router.authorize = ...``) fails at once; ``test`` holds a test's own things.  :meth:`close` it at
    the end of the test (it closes the hub's ZeroMQ sockets).
    """

    context: SessionContext
    clock: MemoryReactorClock
    zmq_factory: BridgeZmqFactory
    test: dict = field(default_factory=dict)

    @property
    def router(self) -> Router:
        return self.context.router

    @property
    def forwarder(self) -> FakeForwarder:
        forwarder = self.context.router.forwarder
        assert isinstance(forwarder, FakeForwarder)  # make_world's
        return forwarder

    @property
    def hub(self) -> SubscriptionHub:
        hub = self.context.router.hub
        assert isinstance(hub, SubscriptionHub)  # make_world's is the real one
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


def allow_local(session: Any, action: str, endpoint: Endpoint, options: dict) -> bool:
    """:func:`make_world`'s default ``zmq_allowed`` hook: every ``tcp://127.0.0.1:*`` endpoint, nothing else."""
    return _LOCAL.allows(endpoint)


def make_world(
    *,
    authorize: Callable[..., Any] = allow_local,
    portal: Portal | None = None,
    throttle: Callable[[MemoryReactorClock], LoginThrottle] | None = None,
    realm: str = "zmqwamp",
    **router_options: Any,
) -> World:
    """A bridge's core in memory, on a new :class:`~twisted.internet.testing.MemoryReactorClock`.

    ``authorize`` is the ``zmq_allowed`` hook (``authorize(session, action, endpoint, options)``); ``portal``
    the Cred portal logins go through (default: anonymous logins only, as ``--anonymous``); ``throttle(clock)``
    the login throttle (default: none, so a refused login is answered at once); ``router_options`` go to the
    :class:`~zmqwamp.wamp.router.Router` (``resolver``, ``call_timeout`` 10 s, ``max_call_timeout`` 60 s,
    ``max_filter_length``, ...).  CALLs go to a :class:`FakeForwarder`, SUBSCRIBEs to the real hub.
    """
    clock = MemoryReactorClock()
    metrics = BridgeMetrics()
    zmq_factory = BridgeZmqFactory(clock, WriteBatch())
    registry = SessionRegistry(metrics, clock)
    client_log = ClientLog(metrics)
    router = Router(
        authorize=authorize,
        forwarder=FakeForwarder(),
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


def bridge_world(bridge: Bridge, **router_options: Any) -> World:
    """:func:`make_world` with ``bridge``'s ``zmq_allowed`` hook, its checkers, per-user rules and ``anonymous``
    (the portal), its realm, aliases (``endpoints``) and call timeouts and limits.

    Its ``websocket_allowed`` hook is :func:`websocket_factory`'s to take:
    ``websocket_factory(world, bridge.websocket_allowed)``.  Logins are not slowed down (no login throttle).
    """
    config = bridge.config
    options = {
        "resolver": EndpointResolver(config.endpoints),
        "call_timeout": config.call_timeout,
        "max_call_timeout": config.max_call_timeout,
        "max_filter_length": config.max_filter_length,
        "max_call_arguments": config.max_call_arguments,
        **router_options,
    }
    return make_world(
        authorize=bridge.zmq_allowed,
        portal=build_portal(bridge.checkers, config.anonymous, bridge.rulebook),
        realm=config.realm,
        **options,
    )


# -- sessions ---------------------------------------------------------------------------------------------------


def new_session(
    world: World,
    serializer: ObjectSerializer | None = None,
    peer: str = "test-peer",
    limits: SessionLimits | None = None,
    **session_options: Any,
) -> tuple[WampSession, FakeChannel]:
    """A new session of ``world`` (before HELLO) speaking ``serializer`` (default JSON) on a :class:`FakeChannel`.

    ``peer`` is the client's address as autobahn gives it (``tcp4:10.1.2.3:4000``); ``limits``: the session's
    limits (default: none); ``session_options`` go to :class:`~zmqwamp.wamp.session.WampSession`.
    """
    channel = FakeChannel()
    session = WampSession(world.context, serializer or JsonObjectSerializer(), channel, peer, limits, **session_options)
    return session, channel


def send(session: WampSession, *message: Any) -> None:
    """The client sends ``message`` (a WAMP message as a list: ``send(session, 48, 1, {}, uri, [args])``) in JSON."""
    session.message_received(json.dumps(list(message)).encode(), False)


def received(channel: FakeChannel) -> list:
    """Every message the session sent on ``channel``, in order, decoded from JSON (``[50, 1, {}, ["reply"]]``)."""
    return [json.loads(payload) for payload, _ in channel.sent]


def events(channel: FakeChannel) -> list:
    """The EVENT messages among :func:`received` (``[36, subscription, publication, details, args]``)."""
    return [message for message in received(channel) if message[0] == _EVENT]


def joined(
    world: World,
    peer: str = "test-peer",
    roles: dict | None = None,
    *,
    authid: str | None = None,
    ticket: str | None = None,
) -> tuple[WampSession, FakeChannel]:
    """A session past WELCOME: anonymous, or logged in as ``authid`` with WAMP ``ticket`` authentication.

    The WELCOME is checked (an AssertionError shows what came instead: an ABORT, for a refused login) and then
    cleared from the channel, so that ``received(channel)`` starts with what the test's own messages bring.
    ``roles``: the client's roles in HELLO (default: caller; the bridge serves any role's messages).
    """
    session, channel = new_session(world, peer=peer)
    details: dict[str, Any] = {"roles": roles or {"caller": {}}}
    if ticket is not None:
        details.update(authmethods=["ticket"], authid=authid)
    send(session, 1, world.logins.realm, details)
    if ticket is not None:
        send(session, 5, ticket, {})  # AUTHENTICATE, answering the CHALLENGE
    welcome = received(channel)[-1] if channel.sent else None
    assert welcome is not None and welcome[0] == _WELCOME, f"no WELCOME: {received(channel)}"
    assert ticket is not None or welcome[2]["authid"] == "anonymous", welcome
    channel.sent.clear()
    return session, channel


def publish(world: World, address: str, *frames: bytes) -> int:
    """Hand ``world``'s hub one ZeroMQ message (its ``frames``) from ``address``, as its SUB socket would.

    Subscribers of ``address`` whose filter matches the first frame get an EVENT; an alias with a history keeps
    it.  Returns the message's publication id (the hub's last for ``address``: a message no one subscribed to
    and no history keeps is dropped, as the bridge drops it, and gets none).
    """
    world.hub._message(address, list(frames))
    return world.hub.last_publication(address)


# -- the WebSocket side -----------------------------------------------------------------------------------------


def websocket_factory(
    world: World, websocket_allowed: Callable[[Any], Any] = lambda request: True, **config: Any
) -> WampServerFactory:
    """The bridge's WebSocket side for ``world``'s sessions, with the ``websocket_allowed`` hook and the
    options of ``BridgeConfig(**config)`` (``max_message_size=4096``, ...); autobahn's timers (handshake, close,
    pings) are off, so nothing waits on a real reactor."""
    writes = world.zmq_factory.write_batch
    assert isinstance(writes, WriteBatch)  # make_world's: the zmq readers hold it, the WebSocket writes fill it
    factory = WampServerFactory(world.context, websocket_allowed, websocket_options(BridgeConfig(**config)), writes)
    factory.setProtocolOptions(autoPingInterval=0, openHandshakeTimeout=0, closeHandshakeTimeout=0)
    return factory


class WebSocketTransport(StringTransport):
    """A StringTransport that autobahn's server protocol runs on (it unregisters a producer when it drops a
    connection, registered or not, which StringTransport refuses).  ``value()``: what the bridge wrote."""

    def unregisterProducer(self) -> None:
        self.producer = None


def handshake(
    factory: Any,
    subprotocol: str | None = None,
    *,
    origin: str | None = None,
    host: str = "localhost",
    peer: str = "127.0.0.1",
    secure: bool | None = None,
) -> tuple[Any, WebSocketTransport]:
    """``factory``'s protocol after a client's WebSocket opening handshake request; its answer is in
    ``transport.value()`` (``HTTP/1.1 101 ...``, or ``403`` when ``websocket_allowed`` says no).

    The request offers ``subprotocol`` (``"wamp.2.json"``; a WAMP factory needs one) with the ``Origin`` and
    ``Host`` headers given, from the client address ``peer`` (an IPv4 or IPv6 address: ``request.peer`` is
    ``tcp4:<peer>:40000``); ``secure``: whether the client used TLS, as the connection guard says
    (``request.secure``).  Runs on Twisted (txaio): the handshake completes within this call.
    """
    proto = factory.buildProtocol(None)
    client = IPv6Address("TCP", peer, 40000) if ":" in peer else IPv4Address("TCP", peer, 40000)
    transport = WebSocketTransport(IPv4Address("TCP", "127.0.0.1", 8080), client)
    if secure is not None:
        transport.client_secure = secure  # type: ignore[attr-defined]  # as ConnectionGuard sets it
    proto.makeConnection(transport)
    lines = [
        "GET /ws HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    if subprotocol is not None:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    if origin is not None:
        lines.append(f"Origin: {origin}")
    proto.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode())
    return proto, transport


def open_websocket(factory: Any, subprotocol: str | None = None) -> tuple[Any, WebSocketTransport]:
    """:func:`handshake`, which must succeed: the protocol is open, and the transport's bytes (the 101 answer)
    are cleared, so that ``transport.value()`` holds the frames that follow."""
    proto, transport = handshake(factory, subprotocol)
    assert proto.state == proto.STATE_OPEN, transport.value()
    transport.clear()
    return proto, transport


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """The WebSocket frames in ``data`` (what the bridge wrote: ``transport.value()``) as (opcode, payload):
    1 text, 2 binary, 8 close (its payload: the code, 2 bytes, then the reason), 9 ping, 10 pong."""
    frames = []
    while data:
        n, start = data[1] & 0x7F, 2
        if n == 126:
            n, start = struct.unpack("!H", data[2:4])[0], 4
        elif n == 127:
            n, start = struct.unpack("!Q", data[2:10])[0], 10
        frames.append((data[0] & 0x0F, data[start : start + n]))
        data = data[start + n :]
    return frames


# -- Deferreds without a reactor --------------------------------------------------------------------------------


def fired(d: Deferred) -> Any:
    """The result of a Deferred that has fired (a failed one raises its exception here)."""
    results: list = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def pending(d: Deferred) -> list:
    """A list that gets ``d``'s result (or its Failure) once it fires: empty while it has not."""
    results: list = []
    d.addBoth(results.append)
    return results
