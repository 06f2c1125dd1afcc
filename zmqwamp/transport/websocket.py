"""The WebSocket side of a session: Autobahn's WebSocket protocol adapted to :class:`~zmqwamp.wamp.session.WampSession`.

:class:`WampServerProtocol` is the session's :class:`~zmqwamp.wamp.session.MessageChannel`:
it picks the subprotocol (the serializer) at the handshake, applies the
``websocket_allowed`` hook, hands every message to the session, and writes the
session's frames through the bounded outgoing buffer (:mod:`zmqwamp.transport.outgoing`) and
the connection's :class:`~zmqwamp.transport.writer.FrameWriter`.  Also here: the login
deadline, ``max_login_message_size`` until the session is open (close 1009),
bounded pongs for a client that does not read, ``max_control_frames_per_second``
(close 1008), at most ``max_message_fragments`` frames per message (close
1009), and whole frames read without autobahn's parser (:mod:`zmqwamp.transport.frames`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from autobahn.twisted.websocket import ConnectionDeny, WebSocketServerFactory, WebSocketServerProtocol
from autobahn.util import encode_truncate
from autobahn.wamp.exception import ApplicationError
from autobahn.websocket.types import ConnectionRequest
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from zmqwamp.clientlog import ErrorLog, clip
from zmqwamp.internals import lacks
from zmqwamp.tokenbucket import TokenBucket
from zmqwamp.transport.frames import FragmentLimit, WholeFrameReader
from zmqwamp.transport.guard import PASS_THROUGH_WRAPPERS, SERVER
from zmqwamp.transport.outgoing import SLOW_CONSUMER_CLOSE_CODE, OutgoingBuffer
from zmqwamp.transport.writer import FrameWriter, WriteBatch, plain_tcp
from zmqwamp.wamp.limits import SessionLimits
from zmqwamp.wamp.messages import SERIALIZERS
from zmqwamp.wamp.session import MessageTooBig, SessionContext, WampSession

log = Logger()

# What onOpen empties of autobahn's protocol once the opening handshake is over (autobahn keeps them).
AUTOBAHN_HANDSHAKE_DATA = ("http_headers", "http_request_data", "http_response_data")
AUTOBAHN_HANDSHAKE = "this autobahn's WebSocket handshake"


class ClientRequest(ConnectionRequest):
    """Autobahn's ConnectionRequest (what ``websocket_allowed`` gets) and ``secure``: did the client use TLS, here
    or at a proxy that says so (:meth:`zmqwamp.peers.ClientAddresses.secure`)?  For the same-origin check."""

    __slots__ = ("secure",)
    secure: bool

    @classmethod
    def of(cls, request: ConnectionRequest, secure: bool) -> ClientRequest:
        made = cls(*(getattr(request, name) for name in ConnectionRequest.__slots__))
        made.secure = secure
        return made


class WampServerProtocol(FragmentLimit, WholeFrameReader, WebSocketServerProtocol):  # type: ignore[misc]
    # (autobahn's two bases disagree on the types of peer and _transport_details: not ours to settle)
    session: WampSession | None = None
    factory: WampServerFactory
    transport: Any  # Twisted's transport, or the connection guard around it
    peer: str

    def onConnect(self, request):
        for offered in request.protocols:
            if offered in SERIALIZERS:
                break
        else:
            raise ConnectionDeny(
                ConnectionDeny.BAD_REQUEST,
                f"no supported WAMP subprotocol offered (want one of {', '.join(SERIALIZERS)})",
            )
        request = ClientRequest.of(request, bool(getattr(self.transport, "client_secure", False)))
        try:
            allowed = self.factory.websocket_allowed(request)
        except Exception:  # autobahn would log two warnings with the traceback, per upgrade
            self.factory.errors.report("websocket_allowed", Failure(), request.peer)
            self._refusal_logged = True
            raise ConnectionDeny(ConnectionDeny.INTERNAL_SERVER_ERROR, "internal error") from None
        if allowed is not True:
            self.factory.context.client_log.emit(
                None,
                log.info,
                "WebSocket from {peer} refused (origin={origin})",
                peer=request.peer,
                origin=clip(request.headers.get("origin")),
            )
            self._refusal_logged = True
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "not allowed")
        # Connections are counted (max_sessions, max_sessions_per_peer) by the guard
        # under the HTTP site, from accept: zmqwamp.transport.guard.ConnectionGuard.
        return offered

    _refusal_logged = False  # onConnect has logged why it refuses

    def failHandshake(self, reason: str, code: int = 400, responseHeaders=None) -> None:
        """Autobahn's, with the reason clipped and logged once, through the client log.

        Autobahn's reason may quote what the client sent (``No host part in Origin
        '<14 KB>'``): it logged it twice (info, then the warning of dropConnection)
        and sent it back in the status line; 100 such upgrades added 2.7 MiB of log.
        """
        reason = clip(reason)
        self.wasNotCleanReason = reason
        if not self._refusal_logged:
            self.factory.context.client_log.emit(
                None, log.info, "WebSocket upgrade from {peer} refused: {reason}", peer=self.peer, reason=reason
            )
        status = reason.replace("…", "...").encode("ascii", "backslashreplace").decode()  # a status line is ASCII
        self.sendHttpErrorResponse(code, status, responseHeaders)
        self.wasClean = True  # so dropConnection does not log the reason again, as a warning
        self.dropConnection(abort=False)

    def onOpen(self) -> None:
        factory = self.factory
        self._outgoing = OutgoingBuffer(
            factory.max_outgoing_buffer, self._slow_consumer, factory.context.metrics, self.peer
        )
        try:
            # replace twisted.web's HTTPChannel, still registered from before the upgrade
            self.transport.unregisterProducer()
            self.transport.registerProducer(self._outgoing, True)
        except (AttributeError, RuntimeError) as e:
            log.warn("outgoing buffer for {peer} not bounded: {error}", peer=self.peer, error=e)
        subprotocol = self.websocket_protocol_in_use
        assert subprotocol in SERIALIZERS  # onConnect chose it
        self.session = WampSession(factory.context, SERIALIZERS[subprotocol], self, self.peer, factory.session_limits)
        # Frames this connection sends are exactly autobahn's PreparedMessage bytes (one
        # unmasked, uncompressed, unfragmented frame, nothing logged): the fast paths of
        # send_frame and send_prepared may write them to the transport themselves.  Without
        # autobahn's internals (compression, its send queue): every frame through autobahn.
        internals = self.reads_internals
        self._plain_frames = (
            internals
            and self._perMessageCompress is None
            and not self.autoFragmentSize
            and not self.maskServerFrames
            and not self.logFrames
            and not self.logOctets
            and not self.trackedTimings
        )
        # sendMessage refuses a payload over maxMessagePayloadSize (0: no limit)
        self._max_payload = self.maxMessagePayloadSize or float("inf")
        if factory.max_login_message_size < self._max_payload:
            self._login_limit = factory.max_login_message_size
        self.read_whole_frames(self._login_limit)  # larger frames: autobahn's parser, onMessageFrameBegin
        self.max_message_fragments = factory.max_message_fragments
        direct = plain_tcp(self.transport, PASS_THROUGH_WRAPPERS) if internals else None
        self._writer = FrameWriter(self.transport, direct, factory.write_batch, self.peer)
        # The opening handshake is over, and autobahn reads none of these again (it keeps
        # them only for its test suite): free them, ~1.5 KB of every idle session.
        if not lacks(self, AUTOBAHN_HANDSHAKE_DATA, AUTOBAHN_HANDSHAKE, "the handshake's headers are kept (1.5 KB)"):
            self.http_headers = {}
            self.http_request_data = b""
            self.http_response_data = ""
        self._login_deadline = factory.clock.callLater(factory.login_timeout, self._login_expired)

    def _login_expired(self) -> None:
        """A session must be established (HELLO ... WELCOME) within the handshake timeout."""
        self._login_deadline = None
        if self.session is not None and self.session.state in ("hello", "login", "challenge"):
            self.factory.context.metrics.limit_exceeded.labels("login_timeout").inc()
            log.info(
                "session from {peer} aborted: no completed login within {t}s",
                peer=self.peer,
                t=self.factory.login_timeout,
            )
            self.session.abort(ApplicationError.TIMEOUT, f"no completed login within {self.factory.login_timeout:g}s")

    # -- max_login_message_size: until the session is open, messages of a few kB -------------------------
    #
    # HELLO and AUTHENTICATE need a few kB (a JWT ticket several), but before this limit anyone who reached the
    # port could have a message of max_message_size read and decoded before the WAMP layer said no.  Frames
    # larger than the limit are not read by the whole-frame reader, so autobahn's parser hands their length
    # to onMessageFrameBegin (below) before reading their payload.  The limit is lifted once the session is
    # open: seen at the next message (onMessage), or at the first frame over it (onMessageFrameBegin).

    _login_limit = 0  # bytes a message may have while the session is not open; 0: lifted (or not lower)
    _login_bytes = 0  # of the message being received, so far

    def _lift_login_limit(self) -> bool:
        """The session is open: max_message_size from now on.  False if it is not open (yet)."""
        if self.session is None or self.session.state != "open":
            return False
        self._login_limit = 0
        self.read_whole_frames()
        return True

    def onMessageBegin(self, isBinary: bool) -> None:
        self._login_bytes = 0
        super().onMessageBegin(isBinary)

    def onMessageFrameBegin(self, length: int) -> None:
        if self._login_limit:
            self._login_bytes += length
            if self._login_bytes > self._login_limit and not self.failing and not self._lift_login_limit():
                self._login_message_too_big()
                return
        super().onMessageFrameBegin(length)

    def _login_message_too_big(self) -> None:
        """Close 1009 before the payload is read, and drop the connection: what follows is not parsed."""
        limit = self._login_limit
        self.factory.context.metrics.limit_exceeded.labels("max_login_message_size").inc()
        self.factory.context.client_log.emit(
            self.session,
            log.info,
            "WebSocket from {peer} closed: a message of {size} bytes before the session is open "
            "(max_login_message_size {limit})",
            peer=self.peer,
            size=self._login_bytes,
            limit=limit,
        )
        self.close_and_drop(self.CLOSE_STATUS_CODE_MESSAGE_TOO_BIG, LOGIN_MESSAGE_TOO_BIG.format(limit=limit))

    # -- max_control_frames_per_second ---------------------------------------------------------------------

    _control_rate: TokenBucket | None = None  # made at the first ping or pong

    def _control_frame_allowed(self) -> bool:
        """A token for this ping or pong; without one, close 1008 and drop (what follows is not parsed).

        Each control frame goes through autobahn's parser, which also copies the
        rest of the read per frame: 1 MiB of empty pings cost 2 s of CPU.
        Browsers never send pings, and answer one ping with one pong; autobahn
        clients ping every few seconds at most.
        """
        bucket = self._control_rate
        if bucket is None:
            rate = self.factory.max_control_frames_per_second
            bucket = self._control_rate = TokenBucket(rate, clock=self.factory.clock.seconds)
        if bucket.take():
            return True
        rate = self.factory.max_control_frames_per_second
        self.factory.context.metrics.limit_exceeded.labels("max_control_frames_per_second").inc()
        self.factory.context.client_log.emit(
            self.session,
            log.info,
            "WebSocket from {peer} closed: over {rate:g} pings and pongs per second (max_control_frames_per_second)",
            peer=self.peer,
            rate=rate,
        )
        self.close_and_drop(self.CLOSE_STATUS_CODE_POLICY_VIOLATION, CONTROL_FRAMES_EXCEEDED.format(rate=rate))
        return False

    def message_fragments_exceeded(self) -> None:
        self.factory.context.metrics.limit_exceeded.labels("max_message_fragments").inc()
        self.factory.context.client_log.emit(
            self.session,
            log.info,
            "WebSocket from {peer} closed: a message of more than {n} frames (max_message_fragments)",
            peer=self.peer,
            n=self.max_message_fragments,
        )
        super().message_fragments_exceeded()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        session = self.session
        session.message_received(payload, isBinary)  # type: ignore[union-attr]  # made in onOpen
        if self._login_deadline is not None and session.state == "open":  # type: ignore[union-attr]
            self._login_deadline.cancel()  # logged in: free the timer now, not when it fires
            self._login_deadline = None
        if self._login_limit:
            self._lift_login_limit()

    def onClose(self, wasClean, code, reason) -> None:
        if self.session is not None:
            self.session.transport_lost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._writer is not None:
            self._writer.discard()
        if self._login_deadline is not None and self._login_deadline.active():
            self._login_deadline.cancel()
        try:
            super().connectionLost(reason)
        finally:
            if self._outgoing is not None:
                self._outgoing.stopProducing()

    # The session's MessageChannel: frames go through the bounded outgoing buffer, then the writer.  Both are
    # made in onOpen, with the session: the channel's methods (send_frame, prepare, send_prepared) are only
    # ever called by it, so they do not check for None (the type checker is told so where they use them).
    _outgoing: OutgoingBuffer | None = None
    _writer: FrameWriter | None = None  # this connection's frames to the kernel (zmqwamp.transport.writer), once open
    _login_deadline: IDelayedCall | None = None

    # Fast path: when the outgoing buffer writes through (nothing queued, transport
    # not paused), OutgoingBuffer.send would call write() at once; so write the framed
    # bytes straight to the transport instead, skipping autobahn's sendMessage /
    # sendPreparedMessage / sendData (which also builds debug-log arguments on every
    # send).  Only for plain frames: see _plain_frames; otherwise the slow path.
    _plain_frames = False

    def send_frame(self, payload: bytes, is_binary: bool) -> None:
        if (
            self._plain_frames
            and self._outgoing.writes_through()  # type: ignore[union-attr]
            and self.state == self.STATE_OPEN
            and len(payload) <= self._max_payload
        ):
            frame = self.factory.prepareMessage(payload, is_binary).payloadHybi
            self._writer.write(frame)  # type: ignore[union-attr]
            return
        if len(payload) > self._max_payload:  # sendMessage would refuse it, and only log that
            raise MessageTooBig(len(payload), self._max_payload)
        self._outgoing.send(partial(self._write_message, payload, is_binary), len(payload))  # type: ignore[union-attr]

    def prepare(self, payload: bytes, is_binary: bool):
        if len(payload) > self._max_payload:
            raise MessageTooBig(len(payload), self._max_payload)
        return self.factory.prepareMessage(payload, is_binary)

    def send_prepared(self, prepared, slow_consumer: str | None = None) -> None:
        outgoing, writer = self._outgoing, self._writer
        if self._plain_frames and outgoing.writes_through() and self.state == self.STATE_OPEN:  # type: ignore[union-attr]
            writer.write(prepared.payloadHybi)  # type: ignore[union-attr]
            return
        policy = slow_consumer or self.factory.slow_consumer
        write = partial(self._write_prepared, prepared)
        outgoing.send(write, len(prepared.payloadHybi), policy)  # type: ignore[union-attr]

    def outgoing_room(self) -> int:
        """Bytes the outgoing buffer takes before its slow-consumer policy applies: how far a replay may go."""
        outgoing = self._outgoing
        return 0 if outgoing is None or outgoing.closed else outgoing.limit - outgoing.queued_bytes

    _pong: bytes | None = None  # the latest ping's payload, while its pong waits in the outgoing buffer

    def sendPong(self, payload: bytes | None = None) -> None:
        """Answer a ping at once; while the client is not reading, only its latest ping, once it reads again.

        Pongs are autobahn's own writes: they bypass the outgoing buffer, and a
        client sending pings without reading grew the bridge from 72 to 299 MB
        in 20 s.  RFC 6455 (5.5.3) lets an endpoint answer only the most recent
        of several pings: one pong waits in the outgoing buffer, later pings
        replace its payload (counted in ``zmqwamp_dropped_total{reason="pong"}``).
        """
        outgoing = self._outgoing
        if outgoing is None or outgoing.writes_through():
            super().sendPong(payload)
            return
        if self._pong is not None:
            self.factory.context.metrics.dropped.labels("pong").inc()
        else:
            outgoing.send(self._send_latest_pong, 2 + len(payload or b""))
        self._pong = payload or b""

    def _send_latest_pong(self) -> None:
        payload, self._pong = self._pong, None
        super().sendPong(payload)

    def processControlFrame(self) -> bool:
        """Autobahn's, within ``max_control_frames_per_second`` for pings and pongs; and a pong not answering the
        pending auto-ping is ignored through the client log.

        Autobahn logs a warning for each: a client could write a log line per
        6-byte frame (20,000 such pongs wrote 2.4 MB of log).  Without autobahn's
        parser state (:attr:`reads_control_frames`): autobahn's, and the rate in onPing and onPong.
        """
        if not self.reads_control_frames:
            return super().processControlFrame()
        if self.current_frame.opcode in (9, 10) and not self._control_frame_allowed():
            return False  # closed and dropped
        if self.current_frame.opcode == 10 and self.autoPingPending:
            if b"".join(self.control_frame_data) != self.autoPingPending:
                self.control_frame_data = None
                self.factory.context.client_log.emit(
                    self.session,
                    log.info,
                    "pong from {peer} ignored: it does not answer the pending ping",
                    peer=self.peer,
                )
                return True
        return super().processControlFrame()

    def onPing(self, payload: bytes) -> None:
        if self.reads_control_frames or self._control_frame_allowed():  # else: closed and dropped
            super().onPing(payload)

    def onPong(self, payload: bytes) -> None:
        if self.reads_control_frames or self._control_frame_allowed():
            super().onPong(payload)

    def sendData(self, data, sync=False, chopsize=None) -> None:
        """Autobahn's own writes (close frames, pings, the slow path) take the same way as our frames.

        So they stay in order with the frames held for a batch, and go straight
        to the socket too.  That matters for a close frame: once the client's
        close frame arrives, autobahn aborts the TCP connection, and a close
        frame still waiting in Twisted's buffer behind an ABORT already sent
        would be lost.  (A writer is direct only if autobahn's send_queue can be read.)
        """
        writer = self._writer
        if writer is None or not writer.direct or sync or chopsize or self.send_queue or self.logOctets:
            if writer is not None and writer.holding:
                writer.flush()
            super().sendData(data, sync, chopsize)
        else:
            writer.write(data)

    def close(self, code: int, reason: str | None) -> None:
        """Send what is queued, then a close frame (any code: autobahn's sendClose refuses 1001, 1008)."""
        if self._outgoing is not None:
            self._outgoing.flush()
        super().close(code, reason)

    def _write_message(self, payload: bytes, is_binary: bool) -> None:
        if self.state == self.STATE_OPEN:
            self.sendMessage(payload, is_binary)

    def _write_prepared(self, prepared) -> None:
        if self.state == self.STATE_OPEN:
            self.sendPreparedMessage(prepared)

    def _slow_consumer(self, text: str) -> None:
        """The outgoing buffer overflowed under the ``close`` policy, or a reply does not fit."""
        self.sendCloseFrame(code=SLOW_CONSUMER_CLOSE_CODE, reasonUtf8=encode_truncate(text, 123), isReply=False)
        if self.session is not None:
            self.session.transport_lost()


# Close reasons (at most 123 bytes in a close frame)
LOGIN_MESSAGE_TOO_BIG = "max_login_message_size: a message over {limit} bytes before the session is open"
CONTROL_FRAMES_EXCEEDED = "max_control_frames_per_second: more than {rate:g} pings and pongs per second"


@dataclass(frozen=True)
class WebSocketOptions:
    """What the WebSocket side takes of the configuration; each field is the option of the same name
    (:func:`zmqwamp.service.bridge.websocket_options` makes one of a BridgeConfig, whose defaults apply)."""

    handshake_timeout: float  # the WebSocket opening handshake, and again the login (HELLO ... WELCOME)
    max_message_size: int
    max_login_message_size: int
    max_message_fragments: int
    max_control_frames_per_second: float
    max_outgoing_buffer: int
    slow_consumer: str
    ping_interval: float
    ping_timeout: float
    session_limits: SessionLimits  # the limits each session checks itself


class WampServerFactory(WebSocketServerFactory):
    protocol = WampServerProtocol  # type: ignore[assignment]

    def __init__(
        self,
        context: SessionContext,
        websocket_allowed: Callable[[Any], Any],
        options: WebSocketOptions,
        write_batch: WriteBatch,
    ) -> None:
        super().__init__(protocols=list(SERIALIZERS), server=SERVER.decode())  # no version in Server:
        self.context = context
        self.errors = ErrorLog(context.metrics, context.clock)  # exceptions of the websocket_allowed hook
        self.clock = context.clock
        self.websocket_allowed = websocket_allowed
        self.login_timeout = options.handshake_timeout
        self.max_outgoing_buffer = options.max_outgoing_buffer
        self.max_message_fragments = options.max_message_fragments
        self.max_login_message_size = options.max_login_message_size
        self.max_control_frames_per_second = options.max_control_frames_per_second
        self.slow_consumer = options.slow_consumer
        self.session_limits = options.session_limits
        # held by the zmq readers around each batch (the zmq factory's: zmqwamp.upstream.reader.BridgeZmqFactory)
        self.write_batch = write_batch
        self.setProtocolOptions(
            maxMessagePayloadSize=options.max_message_size,
            maxFramePayloadSize=options.max_message_size,
            openHandshakeTimeout=options.handshake_timeout,
            closeHandshakeTimeout=5,
            failByDrop=False,  # tell the client why (1007, 1009, ...) instead of dropping TCP
            autoPingInterval=options.ping_interval,
            autoPingTimeout=options.ping_timeout,
            webStatus=False,  # no status page (it names autobahn's version) for a GET without Upgrade
        )
