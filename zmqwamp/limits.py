"""Limits that keep one client from using up the bridge (docs/reliability.md).

* Per session (checked by :class:`zmqwamp.protocol.WampSession`): calls in
  flight, subscriptions, calls per second.  Exceeding one gets ERROR
  ``zmqwamp.error.limit_exceeded`` whose message names the limit; the session
  carries on.
* Per connection (checked by :class:`zmqwamp.protocol.WampServerProtocol` at the
  WebSocket handshake): WebSocket connections per peer address and in total.
  Over the limit, the upgrade is refused with HTTP 503.
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
from typing import Callable

from twisted.internet.interfaces import IProtocolNegotiationFactory, ISSLTransport
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import directlyProvidedBy, directlyProvides, implementer

log = Logger()

LIMIT_EXCEEDED = "zmqwamp.error.limit_exceeded"


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
