"""Limits that keep one client from using up the bridge (docs/reliability.md).

* Per session (checked by :class:`zmqwamp.protocol.WampSession`): calls in
  flight, subscriptions, calls per second.  Exceeding one gets ERROR
  ``zmqwamp.error.limit_exceeded`` whose message names the limit; the session
  carries on.
* Per connection (checked by :class:`zmqwamp.protocol.WampServerProtocol` at the
  WebSocket handshake): WebSocket connections per peer address and in total.
  Over the limit, the upgrade is refused with HTTP 503.
* Upstream connections (:class:`UpstreamBudget`, asked by the forwarder and the
  hub when they open a zmq socket): per session, per peer address and in total.
  Over a limit, the CALL or SUBSCRIBE gets ``zmqwamp.error.limit_exceeded``.
* Handshake time (:class:`ConnectionGuardFactory`, around the HTTP site): a
  connection must deliver its HTTP request headers within ``handshake_timeout``
  seconds of being accepted, however slowly it drips them, or it is dropped.
  The same wrapper closes connections with a lingering close.

Every refusal is counted in ``zmqwamp_limit_exceeded_total{limit=...}``.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Hashable

from twisted.internet.interfaces import IProtocolNegotiationFactory, ISSLTransport
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import directlyProvidedBy, directlyProvides, implementer

from zmqwamp.auth import peer_host

log = Logger()

LIMIT_EXCEEDED = "zmqwamp.error.limit_exceeded"


class LimitExceeded(Exception):
    """A request would go over ``limit`` (a setting's name); the WAMP ERROR says ``"<limit>: <text>"``."""

    def __init__(self, limit: str, text: str) -> None:
        super().__init__(f"{limit}: {text}")
        self.limit = limit
        self.text = text


def session_peer(session) -> str:
    """The peer address a session's upstream connections are counted under (the one place that says so)."""
    return peer_host(getattr(session, "peer", None) or "")


@dataclass(frozen=True)
class SessionLimits:
    """The per-session limits (defaults: :class:`zmqwamp.config.BridgeConfig`)."""

    max_calls_in_flight: int
    max_subscriptions: int
    max_calls_per_second: float


class TokenBucket:
    """``take()`` is True at most ``rate`` times per second on average, ``burst`` at once."""

    __slots__ = ("rate", "burst", "_clock", "_tokens", "_stamp")  # one per session

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1.0, rate if burst is None else burst)
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class ConnectionCounter:
    """WebSocket connections open, in total and per peer host."""

    def __init__(self, max_total: int, max_per_peer: int) -> None:
        self.max_total = max_total
        self.max_per_peer = max_per_peer
        self.total = 0
        self._by_host: Counter[str] = Counter()

    def admit(self, host: str) -> str | None:
        """Count a new connection from ``host``; or the name of the limit it would exceed."""
        if self.total >= self.max_total:
            return "max_sessions"
        if self._by_host[host] >= self.max_per_peer:
            return "max_sessions_per_peer"
        self.total += 1
        self._by_host[host] += 1
        return None

    def release(self, host: str) -> None:
        self.total -= 1
        self._by_host[host] -= 1
        if self._by_host[host] <= 0:
            del self._by_host[host]

    def peers(self) -> int:
        return len(self._by_host)


# reclaim(predicate): close the least recently used idle connection whose key passes ``predicate``;
# True if one was closed.
Reclaimer = Callable[[Callable[[Hashable], bool]], bool]


class UpstreamBudget:
    """The zmq sockets the bridge opens on clients' behalf, bounded per session, per peer and in total.

    Each socket is charged to the session (and that session's peer address) whose
    CALL or SUBSCRIBE opened it, until the socket closes: a REQ connection stays open
    ``idle_close`` seconds after its last call, so counting calls in flight would not
    bound the sockets.  Requests on a socket that is already open cost nothing here.
    At a limit, the least recently used idle REQ connection that counts against it
    is closed to make room (the ``reclaim`` hook, set by the forwarder; a later call
    reopens it); if there is none, :class:`LimitExceeded`.
    """

    def __init__(self, max_per_session: int = 32, max_per_peer: int = 128, max_total: int = 512) -> None:
        self.max_per_session = max_per_session
        self.max_per_peer = max_per_peer
        self.max_total = max_total
        self.reclaim: Reclaimer | None = None
        self._charges: dict[Hashable, tuple[object, str | None]] = {}  # key -> (session or None, peer or None)
        self._sessions: Counter = Counter()
        self._peers: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return len(self._charges)

    def charged(self, session) -> int:
        """Open sockets charged to ``session``."""
        return self._sessions[session]

    def charge(self, key: Hashable, session=None) -> None:
        """Count a socket about to open for ``session`` (None: nobody's); raise :class:`LimitExceeded` if it cannot."""
        if key in self._charges:
            raise ValueError(f"{key!r} is already charged")
        peer = None
        if session is not None:
            peer = session_peer(session)
            self._make_room(
                lambda: self._sessions[session] >= self.max_per_session, lambda k: self._charges[k][0] is session,
                "max_endpoints_per_session", f"this session already has {self.max_per_session} zmq connections open",
            )
            self._make_room(
                lambda: self._peers[peer] >= self.max_per_peer, lambda k: self._charges[k][1] == peer,
                "max_endpoints_per_peer", f"sessions from this address already have {self.max_per_peer} zmq connections open",
            )
        self._make_room(
            lambda: len(self._charges) >= self.max_total, lambda k: True,
            "max_zmq_sockets", f"the bridge already has {self.max_total} zmq connections open",
        )
        self._charges[key] = (session, peer)
        if session is not None:
            self._sessions[session] += 1
            self._peers[peer] += 1

    def _make_room(self, full: Callable[[], bool], counts: Callable[[Hashable], bool], limit: str, text: str) -> None:
        while full():
            if self.reclaim is None or not self.reclaim(counts):
                raise LimitExceeded(limit, text)

    def release(self, key: Hashable) -> None:
        """The socket charged under ``key`` is closed (or never opened)."""
        session, peer = self._charges.pop(key)
        if session is not None:
            _uncount(self._sessions, session)
            _uncount(self._peers, peer)


def _uncount(counter: Counter, key) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


class _ConnectionGuard(ProtocolWrapper):
    """Handshake deadline, and a lingering close.

    Deadline: the connection is dropped unless the first HTTP request's headers
    arrive within the factory's ``timeout``.

    Lingering close: closing a socket that still has unread input makes the
    kernel answer with RST, and a client receiving RST may lose what was sent
    just before, such as the close frame that says why (1002, 1007, 1009).
    So closing first shuts down only our sending side, then discards what the
    client still sends until it closes too, or ``LINGER`` seconds pass.
    """

    LINGER = 2.0
    _timer = None
    _linger = None

    def makeConnection(self, transport) -> None:
        self._tail = b""
        self._timer = self.factory.clock.callLater(self.factory.timeout, self._expired)
        super().makeConnection(transport)
        # ProtocolWrapper copies the transport's interfaces; ISSLTransport would make
        # autobahn ask this wrapper (not a TLSMemoryBIOProtocol) for a TLS channel id
        # and fail.  The WebSocket layer does not need to know about TLS.
        directlyProvides(self, *[i for i in directlyProvidedBy(self).flattened() if not i.isOrExtends(ISSLTransport)])

    def dataReceived(self, data: bytes) -> None:
        if self._linger is not None:
            return  # closing: the protocol is done, this only drains the socket
        if self._timer is not None:
            seen = self._tail + data
            if b"\r\n\r\n" in seen:
                self._cancel()
            else:
                self._tail = seen[-3:]
        super().dataReceived(data)

    def loseConnection(self) -> None:
        if self.disconnecting:
            return
        self.disconnecting = 1
        half_close = getattr(self.transport, "loseWriteConnection", None)
        if half_close is None:  # e.g. TLS: no half-close
            self.transport.loseConnection()
            return
        half_close()
        self._linger = self.factory.clock.callLater(self.LINGER, self.transport.loseConnection)
        resume = getattr(self.transport, "resumeProducing", None)
        if resume is not None:
            resume()  # keep reading (and discarding) until the client closes

    def connectionLost(self, reason) -> None:
        self._cancel()
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        super().connectionLost(reason)

    def _cancel(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        self.factory.on_timeout()
        log.info(
            "connection from {peer} dropped: no complete HTTP request within {t}s",
            peer=self.transport.getPeer(), t=self.factory.timeout,
        )
        self.transport.abortConnection()


@implementer(IProtocolNegotiationFactory)
class ConnectionGuardFactory(WrappingFactory):
    """Wraps the site: ``timeout`` seconds from accept to complete request headers; lingering close.

    It passes the site's ALPN protocols through: a TLS listener asks the factory
    it wraps for them, and without an answer the TLS handshake fails.
    """

    protocol = _ConnectionGuard

    def __init__(self, site, timeout: float, clock, on_timeout: Callable[[], None] = lambda: None) -> None:
        super().__init__(site)
        self.timeout = timeout
        self.clock = clock
        self.on_timeout = on_timeout

    def acceptableProtocols(self) -> list[bytes]:
        return self.wrappedFactory.acceptableProtocols()

    def logPrefix(self) -> str:
        # "Site starting on <port>", as without the wrapper (tools read the port from it)
        wrapped = self.wrappedFactory
        return wrapped.logPrefix() if hasattr(wrapped, "logPrefix") else type(wrapped).__name__
