"""Every accepted connection, before twisted.web reads a byte: counted, given a deadline, closed gently.

* Count (:class:`ConnectionCounter`): connections (HTTP or WebSocket) per client address and in total.
  Over the limit, the connection gets HTTP 503 naming the limit and is closed.
* Request time: each HTTP request's headers must arrive within ``handshake_timeout`` seconds of the
  accept or of the previous response, however slowly they drip in, or the connection is dropped.
* The client's address (:mod:`zmqwamp.peers`), and a lingering close.

Every refusal is counted in ``zmqwamp_limit_exceeded_total{limit=...}``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IAddress, IProtocolNegotiationFactory, ISSLTransport, IStreamServerEndpoint
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.protocols.haproxy import proxyEndpoint
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from zope.interface import directlyProvidedBy, directlyProvides, implementer

from zmqwamp.internals import private_name, say_missing
from zmqwamp.peers import ClientAddresses, host_key, peer_string
from zmqwamp.wamp.registry import WhenZero

log = Logger()


SERVER = b"zmqwamp"  # the Server header of every HTTP response: no versions


def proxy_wrappers() -> tuple[type, ...]:
    """The class the ``haproxy:`` endpoint wraps each connection in, which Twisted does not export.

    A connection under it is behind a PROXY protocol listener (its client is
    known once the header is read; its proxy may say the client used TLS), and
    it passes writes through (so the write path looks under it).  Without the
    private name: the class that ``proxyEndpoint`` (public) wraps connections in,
    asked of it.  Without either: () and a warning.
    """
    found = private_name("twisted.protocols.haproxy._wrapper", "HAProxyProtocolWrapper", "asked of proxyEndpoint")
    if found is None:
        found = _wrapper_of_proxy_endpoint()
    if found is None:
        say_missing(
            "twisted.protocols.haproxy.proxyEndpoint",
            "ProtocolWrapper of its own",
            "connections behind a PROXY protocol listener are counted under the proxy's address, and their "
            "X-Forwarded-Proto is not believed",
        )
        return ()
    return (found,)


def _wrapper_of_proxy_endpoint() -> type | None:
    """The ProtocolWrapper class of the WrappingFactory that ``proxyEndpoint`` hands the endpoint it wraps."""
    factories: list[object] = []

    @implementer(IStreamServerEndpoint)
    class Listened:
        def listen(self, factory: object) -> Deferred:
            factories.append(factory)
            return succeed(None)

    proxyEndpoint(Listened()).listen(Factory())
    made = factories[0].protocol if factories and isinstance(factories[0], WrappingFactory) else None
    if (
        isinstance(made, type)
        and issubclass(made, ProtocolWrapper)
        and made is not ProtocolWrapper  # not the plain one: TLS's is one too
        and made.__module__.startswith("twisted.protocols.haproxy")
    ):
        return made
    return None


_PROXY_WRAPPERS = proxy_wrappers()


class ConnectionCounter:
    """Connections open (every accepted one, HTTP or WebSocket), in total and per client address.

    A connection whose client is not known yet (behind a PROXY protocol listener
    before its header, or from a trusted proxy before a request says for whom)
    counts in the total only, under the key None, and is re-keyed once it is.
    """

    def __init__(self, max_total: int, max_per_peer: int) -> None:
        self.max_total = max_total
        self.max_per_peer = max_per_peer
        self.total = 0
        self.websockets = 0  # of those, upgraded to WebSocket (the drain waits for them)
        self._by_host: Counter[str] = Counter()
        self._no_websockets = WhenZero()

    def websocket_opened(self) -> None:
        self.websockets += 1

    def websocket_closed(self) -> None:
        self.websockets -= 1
        if not self.websockets:
            self._no_websockets.reached()

    def no_websockets(self) -> Deferred:
        """Fires when no WebSocket connection is open (at once if none is)."""
        return self._no_websockets.wait(self.websockets)

    def admit(self, host: str | None) -> str | None:
        """Count a new connection from ``host``; or the name of the limit it would exceed."""
        if self.total >= self.max_total:
            return "max_sessions"
        if host is not None and self._by_host[host] >= self.max_per_peer:
            return "max_sessions_per_peer"
        self.total += 1
        if host is not None:
            self._by_host[host] += 1
        return None

    def rekey(self, old: str | None, new: str | None) -> str | None:
        """Count a connection under ``new`` instead of ``old``; or the limit ``new`` would exceed (then unchanged)."""
        if old == new:
            return None
        if new is not None:
            if self._by_host[new] >= self.max_per_peer:
                return "max_sessions_per_peer"
            self._by_host[new] += 1
        self._forget(old)
        return None

    def release(self, host: str | None) -> None:
        self.total -= 1
        self._forget(host)

    def _forget(self, host: str | None) -> None:
        if host is not None:
            self._by_host[host] -= 1
            if self._by_host[host] <= 0:
                del self._by_host[host]

    def peers(self) -> int:
        return len(self._by_host)


def refusal_response(status: bytes, text: str) -> bytes:
    """A whole minimal HTTP/1.1 response that ends the connection, for refusals before twisted.web has a Request."""
    body = text.encode() + b"\n"
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\nServer: "
        + SERVER
        + b"\r\nContent-Type: text/plain; charset=utf-8\r\n"
        + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        + body
    )


class ConnectionGuard(ProtocolWrapper):
    """Connection count, request deadline, the client's address, and a lingering close.

    Count: the connection is counted (:class:`ConnectionCounter`) from accept to
    close, under its client's address; over a limit it gets a bare HTTP 503
    naming the limit and is closed before twisted.web sees a byte.

    Deadline: the connection is dropped unless each HTTP request's headers arrive
    within the factory's ``timeout`` of the accept or of the end of the previous
    response (however slowly they drip in, and however many requests came
    before); an idle keep-alive connection is dropped after ``timeout`` too.
    The WebSocket upgrade ends it: from then on autobahn's handshake timeout,
    the login deadline and the pings apply.  twisted.web's request
    (:class:`zmqwamp.transport.site.BridgeRequest`) tells the guard when a request's
    headers are in, when its response is done, and when it became a WebSocket.

    Client: ``getPeer()`` is the client (:mod:`zmqwamp.peers`): the connection's
    peer (after a PROXY protocol header), or the address a trusted proxy
    forwarded for the latest request; autobahn reads it for the session's
    ``peer``.  ``client_secure`` says whether that client used TLS (here or at
    the proxy), for the same-origin check.

    Errors: an exception that escapes the protocol it wraps (twisted.web's
    channel, then the WebSocket) would be a traceback in the log per
    connection; it goes to the factory's ``on_error`` (counted, logged once per
    exception class and interval) and the connection is dropped.

    Lingering close: closing a socket that still has unread input makes the
    kernel answer with RST, and a client receiving RST may lose what was sent
    just before, such as the close frame that says why (1002, 1007, 1009).
    So closing first shuts down only our sending side, then discards what the
    client still sends until it closes too, or ``LINGER`` seconds pass.
    """

    transport: Any  # the connection it wraps (set by makeConnection)

    LINGER = 2.0
    _timer = None
    _linger = None
    _counted = False  # counted by the factory's counter, under _key
    _key: str | None = None
    _peer_pending = False  # behind a PROXY protocol listener, before its header
    client: IAddress | None = None
    client_local = False  # the latest request's client is on this machine (request_headers)
    client_secure = False  # the latest request's client used TLS, here or at a proxy (request_headers)
    websocket = False
    _tls = False  # this connection is TLS

    def makeConnection(self, transport) -> None:
        self._arm()
        self._tls = self.client_secure = ISSLTransport.providedBy(transport)
        super().makeConnection(transport)
        # ProtocolWrapper copies the transport's interfaces; ISSLTransport would make
        # autobahn ask this wrapper (not a TLSMemoryBIOProtocol) for a TLS channel id
        # and fail.  The WebSocket layer does not need to know about TLS.
        directlyProvides(self, *[i for i in directlyProvidedBy(self).flattened() if not i.isOrExtends(ISSLTransport)])

    def connectionMade(self) -> None:
        super().connectionMade()  # the HTTP channel
        self.client = self.transport.getPeer()
        # Twisted's PROXY protocol wrapper reads its header before passing data on:
        # until then getPeer() is the proxy, so the per-peer count waits for it.
        self._peer_pending = isinstance(self.transport, _PROXY_WRAPPERS)
        counter = self.factory.counter
        if counter is not None:
            key = None if self._peer_pending else self._key_of(self.client)
            refused = counter.admit(key)
            if refused is not None:
                self._refuse(refused)
                return
            self._counted, self._key = True, key

    def getPeer(self) -> IAddress:
        return self.client if self.client is not None else self.transport.getPeer()

    def _key_of(self, client: IAddress) -> str | None:
        """The per-peer key of a client; None for a trusted proxy (whose clients are counted per request)."""
        return None if self.factory.addresses.trusted(client) else host_key(client)

    def _rekey(self, client: IAddress) -> str | None:
        self.client = client
        if not self._counted:
            return None
        key = self._key_of(client)
        refused = self.factory.counter.rekey(self._key, key)
        if refused is None:
            self._key = key
        return refused

    def _refuse(self, limit: str) -> None:
        self.factory.on_limit(limit)
        self.factory.note(
            "connection from {peer} refused: {limit} reached", peer=peer_string(self.getPeer()), limit=limit
        )
        self.transport.write(
            refusal_response(b"503 %s reached" % limit.encode(), f"{limit} reached")
        )  # as autobahn did
        self.loseConnection()

    # -- what twisted.web's request tells the guard (zmqwamp.transport.site.BridgeRequest) --

    def request_headers(self, headers: Headers) -> str | None:
        """A request's headers are in: stop the deadline, learn its client; the limit that client exceeds, or None.

        ``client_local`` then says whether that client is on this machine (:meth:`ClientAddresses.local`).
        """
        self._cancel()
        addresses, peer = self.factory.addresses, self.transport.getPeer()
        client = addresses.client(peer, headers)
        self.client_local = addresses.local(peer, client, headers)
        self.client_secure = addresses.secure(peer, headers, self._tls, isinstance(self.transport, _PROXY_WRAPPERS))
        return self._rekey(client)

    def response_done(self) -> None:
        """The response is complete: the next request (or the close) must come within the deadline."""
        if not self.websocket and self.connected and not self.disconnecting:
            self._arm()

    def upgraded(self) -> None:
        """The connection is becoming a WebSocket: no more HTTP deadline."""
        self._cancel()
        if not self.websocket:
            self.websocket = True
            if self._counted:
                self.factory.counter.websocket_opened()

    # -- the wire --

    def dataReceived(self, data: bytes) -> None:
        if self._linger is not None or self.disconnecting:
            return  # closing: the protocol is done, this only drains the socket
        if self._peer_pending:  # the PROXY header has been read: getPeer() is the client now
            self._peer_pending = False
            refused = self._rekey(self.transport.getPeer())
            if refused is not None:
                self._refuse(refused)
                return
        try:
            super().dataReceived(data)
        except Exception:  # a bug (ours, a hook's, a library's): Twisted would log a traceback per connection
            self.factory.on_error("connection", Failure(), peer_string(self.getPeer()))
            self.transport.abortConnection()

    def loseConnection(self) -> None:
        if self.disconnecting:
            return
        self.disconnecting = 1
        self._cancel()  # closing anyway: the linger bounds it
        half_close = getattr(self.transport, "loseWriteConnection", None)
        if half_close is None:  # e.g. TLS: no half-close
            self.transport.loseConnection()
            return
        half_close()
        self._linger = self.factory.clock.callLater(self.LINGER, self.transport.loseConnection)
        resume = getattr(self.transport, "resumeProducing", None)
        if resume is not None:
            resume()  # keep reading (and discarding) until the client closes

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel()
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        if self._counted:
            self._counted = False
            self.factory.counter.release(self._key)
            if self.websocket:
                self.factory.counter.websocket_closed()
        super().connectionLost(reason)

    def _arm(self) -> None:
        self._cancel()
        self._timer = self.factory.clock.callLater(self.factory.timeout, self._expired)

    def _cancel(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        self.factory.on_limit("handshake_timeout")
        self.factory.note(
            "connection from {peer} dropped: no complete HTTP request within {t}s",
            peer=peer_string(self.getPeer()),
            t=self.factory.timeout,
        )
        self.transport.abortConnection()


def _log_error(where: str, failure: Failure, peer: str) -> None:
    log.failure("unhandled error on a connection from {peer} ({where})", failure, peer=peer, where=where)


# Wrappers that pass writes through unchanged: the write path (zmqwamp.transport.writer.plain_tcp) looks under them.
PASS_THROUGH_WRAPPERS = (ConnectionGuard, *_PROXY_WRAPPERS)


@implementer(IProtocolNegotiationFactory)
class ConnectionGuardFactory(WrappingFactory):
    """Wraps a site: connection count, per-request deadline, client address, lingering close.

    ``counter`` None: connections are not counted.  ``addresses`` says which
    peers are trusted proxies (none by default).  ``on_limit(name)`` is called
    for every refusal or drop (the ``zmqwamp_limit_exceeded_total`` label).
    ``on_error(where, failure, peer)`` gets the exceptions that escape a
    connection's protocol (default: the wrapped site's ``errors.report``, see
    :class:`zmqwamp.clientlog.ErrorLog`; else logged).

    It passes the site's ALPN protocols through: a TLS listener asks the factory
    it wraps for them, and without an answer the TLS handshake fails.
    """

    protocol = ConnectionGuard

    def __init__(
        self,
        site,
        timeout: float,
        clock,
        counter: ConnectionCounter | None = None,
        addresses: ClientAddresses | None = None,
        on_limit: Callable[[str], None] = lambda limit: None,
        on_error: Callable[[str, Failure, str], None] | None = None,
    ) -> None:
        super().__init__(site)
        self.timeout = timeout
        self.clock = clock
        self.counter = counter
        self.addresses = addresses if addresses is not None else ClientAddresses()
        self.on_limit = on_limit
        errors = getattr(site, "errors", None)
        self.on_error = on_error or (errors.report if errors is not None else _log_error)
        self._note = getattr(site, "note_refusal", log.info)

    def note(self, format: str, **fields: Any) -> None:
        """Log a refused or dropped connection: through the site's client log, as its refused requests."""
        self._note(format, **fields)

    def acceptableProtocols(self) -> list[bytes]:
        return self.wrappedFactory.acceptableProtocols()

    def logPrefix(self) -> str:
        # "Site starting on <port>", as without the wrapper (tools read the port from it)
        wrapped = self.wrappedFactory
        return wrapped.logPrefix() if hasattr(wrapped, "logPrefix") else type(wrapped).__name__
