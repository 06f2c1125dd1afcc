"""The WAMP v2 router side, over WebSocket.

Wire protocol (subprotocols ``wamp.2.json``, ``wamp.2.msgpack``, ``wamp.2.cbor``):

* ``HELLO`` -> ``WELCOME`` (roles broker and dealer) or ``ABORT``
  (``wamp.error.no_such_realm``, ``wamp.error.not_authorized``).
* ``GOODBYE`` -> ``GOODBYE`` (``wamp.close.goodbye_and_out``), then close.
* ``CALL`` -> ``RESULT`` or ``ERROR``; ``CANCEL`` -> ``ERROR`` (``wamp.error.canceled``).
* ``SUBSCRIBE`` -> ``SUBSCRIBED`` or ``ERROR``; ``UNSUBSCRIBE`` -> ``UNSUBSCRIBED`` or ``ERROR``;
  then ``EVENT`` for every matching zmq message.
* ``REGISTER`` / ``PUBLISH`` (acknowledged) -> ``ERROR`` ``zmqwamp.error.not_supported``;
  ``UNREGISTER`` -> ``ERROR`` ``wamp.error.no_such_registration``; an
  unacknowledged ``PUBLISH`` has no reply in WAMP: it is logged and counted.
* Anything else (bad serialization, unknown type, a message before ``HELLO``, a
  second ``HELLO``, a message a router never receives) -> ``ABORT``
  ``wamp.error.protocol_violation`` and close; other sessions are unaffected.

:class:`WampSession` is the state machine and knows nothing of WebSocket;
:class:`WampServerProtocol` adapts it to Autobahn's WebSocket protocol.
"""

from __future__ import annotations

import random
from typing import Any

from autobahn.twisted.websocket import ConnectionDeny, WebSocketServerFactory, WebSocketServerProtocol
from autobahn.wamp import message as m
from autobahn.wamp.exception import ApplicationError, ProtocolError
from autobahn.wamp.role import RoleBrokerFeatures, RoleDealerFeatures
from autobahn.wamp.serializer import (
    CBORObjectSerializer,
    JsonObjectSerializer,
    MsgPackObjectSerializer,
    Serializer,
)
from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.python.failure import Failure

from zmqwamp.router import INTERNAL_ERROR, NOT_SUPPORTED, Router

log = Logger()

# One instance per serializer, shared by all sessions: autobahn caches a
# message's bytes per serializer instance, so an EVENT is encoded once.
SERIALIZERS = {
    "wamp.2.cbor": CBORObjectSerializer(),
    "wamp.2.msgpack": MsgPackObjectSerializer(),
    "wamp.2.json": JsonObjectSerializer(),
}

ROLES = {
    "broker": RoleBrokerFeatures(),
    "dealer": RoleDealerFeatures(call_timeout=True, call_canceling=True),
}

PROTOCOL_VIOLATION = "wamp.error.protocol_violation"


class WampProtocolViolation(Exception):
    pass


def decode(serializer, payload: bytes, is_binary: bool) -> list[tuple[list, m.Message]]:
    """Parse a WebSocket message into (raw list, parsed message) pairs.

    The raw list is kept because autobahn's parsers drop options they do not
    know, such as SUBSCRIBE's ``filter``.
    """
    if is_binary != serializer.BINARY:
        raise WampProtocolViolation(f"{'binary' if is_binary else 'text'} frame on a {serializer.NAME} session")
    try:
        raws = serializer.unserialize(payload)
    except Exception as e:  # the serializers raise whatever their parser raises
        raise WampProtocolViolation(f"invalid {serializer.NAME} message: {type(e).__name__}") from None
    out = []
    for raw in raws:
        if not isinstance(raw, list) or not raw or type(raw[0]) is not int:
            raise WampProtocolViolation("a WAMP message is a list starting with an integer type")
        klass = Serializer.MESSAGE_TYPE_MAP.get(raw[0])
        if klass is None:
            raise WampProtocolViolation(f"unknown WAMP message type {raw[0]}")
        try:
            msg = klass.parse(raw)
        except ProtocolError as e:
            raise WampProtocolViolation(str(e)) from None
        except Exception as e:
            raise WampProtocolViolation(f"invalid {klass.__name__} message: {type(e).__name__}") from None
        out.append((raw, msg))
    return out


class WampSession:
    """One client's WAMP session: parse, dispatch, reply.

    ``transport`` provides ``send_frame(bytes, is_binary)``,
    ``prepare(bytes, is_binary)``, ``send_prepared(prepared)`` and
    ``close(code, reason)``.
    """

    def __init__(self, router: Router, serializer, transport, peer: str) -> None:
        self.router = router
        self.serializer = serializer
        self.transport = transport
        self.peer = peer
        self.state = "hello"  # -> "login" -> "open" -> "closed"
        self.session_id: int | None = None
        self.avatar = None
        self._calls: dict[int, Any] = {}
        self._subscriptions: set[int] = set()

    @property
    def is_open(self) -> bool:
        return self.state == "open"

    @property
    def authid(self) -> str | None:
        return getattr(self.avatar, "authid", None)

    # -- in -----------------------------------------------------------------

    def message_received(self, payload: bytes, is_binary: bool) -> None:
        if self.state == "closed":
            self.router.metrics.dropped.labels("after_close").inc()
            log.info("message from {peer} after session end ignored", peer=self.peer)
            return
        try:
            for raw, msg in decode(self.serializer, payload, is_binary):
                self._dispatch(raw, msg)
                if self.state == "closed":
                    return
        except WampProtocolViolation as e:
            self.protocol_violation(str(e))

    def _dispatch(self, raw: list, msg: m.Message) -> None:
        handler = getattr(self, f"_on_{type(msg).__name__.lower()}", None)
        if handler is None:
            raise WampProtocolViolation(f"{type(msg).__name__.upper()} is never sent to a router")
        if self.state == "hello" and not isinstance(msg, (m.Hello, m.Abort)):
            raise WampProtocolViolation(f"{type(msg).__name__.upper()} before HELLO")
        if self.state == "login" and not isinstance(msg, (m.Authenticate, m.Abort)):
            raise WampProtocolViolation(f"{type(msg).__name__.upper()} during authentication")
        handler(raw, msg)

    def _on_hello(self, raw, msg: m.Hello) -> None:
        if self.state != "hello":
            raise WampProtocolViolation("second HELLO in a session")
        self.state = "login"
        d = self.router.login(self, msg)
        d.addCallbacks(self._welcome, self._login_failed)

    def _welcome(self, avatar) -> None:
        if self.state != "login":
            return
        self.avatar = avatar
        self.session_id = random.randint(1, 2**53)
        self.state = "open"
        self.router.session_opened(self)
        log.info(
            "session {session} open: authid={authid} role={authrole} peer={peer}",
            session=self.session_id, authid=avatar.authid, authrole=avatar.authrole, peer=self.peer,
        )
        self.send(
            m.Welcome(
                self.session_id,
                ROLES,
                realm=self.router.realm,
                authid=avatar.authid,
                authrole=avatar.authrole,
                authmethod=avatar.authmethod,
                authprovider=avatar.authprovider,
            )
        )

    def _login_failed(self, failure: Failure) -> None:
        if self.state != "login":
            return
        if failure.check(ApplicationError):
            self.abort(failure.value.error, failure.value.args[0] if failure.value.args else None)
        else:
            log.failure("login failed unexpectedly", failure)
            self.abort(ApplicationError.NOT_AUTHORIZED, "login failed")

    def _on_abort(self, raw, msg: m.Abort) -> None:
        log.info("client {peer} aborted: {reason}", peer=self.peer, reason=msg.reason)
        self._end()
        self.transport.close(1000, None)

    def _on_goodbye(self, raw, msg: m.Goodbye) -> None:
        self.send(m.Goodbye(reason="wamp.close.goodbye_and_out"))
        self._end()
        self.transport.close(1000, None)

    def _on_call(self, raw, msg: m.Call) -> None:
        if msg.request in self._calls:
            raise WampProtocolViolation(f"CALL request id {msg.request} already in flight")
        d = self.router.call(self, msg.procedure, msg.args, msg.kwargs, msg.timeout)
        self._calls[msg.request] = d  # popped at once below if already answered
        d.addBoth(self._call_done, msg.request)

    def _call_done(self, result, request: int):
        self._calls.pop(request, None)
        if isinstance(result, Failure):
            self._error(m.Call.MESSAGE_TYPE, request, result)
        else:
            self._result(request, result)

    def _result(self, request: int, args: list) -> None:
        if self.state == "open":
            self.send(m.Result(request, args=args))

    def _on_cancel(self, raw, msg: m.Cancel) -> None:
        d = self._calls.get(msg.request)
        if d is not None:
            d.cancel()  # -> _call_done with CancelledError -> ERROR canceled
        else:
            log.info("CANCEL for unknown call {request} from {peer} ignored", request=msg.request, peer=self.peer)
            self.router.metrics.dropped.labels("cancel_unknown").inc()

    def _on_subscribe(self, raw, msg: m.Subscribe) -> None:
        options = raw[2] if len(raw) > 2 and isinstance(raw[2], dict) else {}
        d = self.router.subscribe(self, msg.topic, options)
        d.addCallbacks(
            lambda sub: self._subscribed(msg.request, sub),
            lambda f: self._error(m.Subscribe.MESSAGE_TYPE, msg.request, f),
        )

    def _subscribed(self, request: int, sub) -> None:
        if self.state != "open":
            self.router.hub.unsubscribe(self, sub.id)
            return
        self._subscriptions.add(sub.id)
        self.send(m.Subscribed(request, sub.id))

    def _on_unsubscribe(self, raw, msg: m.Unsubscribe) -> None:
        try:
            self.router.unsubscribe(self, msg.subscription)
        except ApplicationError:
            self._error(m.Unsubscribe.MESSAGE_TYPE, msg.request, Failure())
            return
        self._subscriptions.discard(msg.subscription)
        self.send(m.Unsubscribed(msg.request))

    def _on_publish(self, raw, msg: m.Publish) -> None:
        text = "this bridge does not route PUBLISH: publish from a zmq PUB service"
        if msg.acknowledge:
            self.send(m.Error(m.Publish.MESSAGE_TYPE, msg.request, NOT_SUPPORTED, args=[text]))
        else:
            self.router.metrics.dropped.labels("publish").inc()
            log.info("unacknowledged PUBLISH to {topic} from {peer} dropped: {text}", topic=msg.topic, peer=self.peer, text=text)

    def _on_register(self, raw, msg: m.Register) -> None:
        text = "this bridge does not route REGISTER: callees are zmq REP services"
        self.send(m.Error(m.Register.MESSAGE_TYPE, msg.request, NOT_SUPPORTED, args=[text]))

    def _on_unregister(self, raw, msg: m.Unregister) -> None:
        self.send(
            m.Error(m.Unregister.MESSAGE_TYPE, msg.request, ApplicationError.NO_SUCH_REGISTRATION, args=["nothing is registered"])
        )

    def _on_authenticate(self, raw, msg: m.Authenticate) -> None:
        raise WampProtocolViolation("AUTHENTICATE without a CHALLENGE")

    # -- out ----------------------------------------------------------------

    def send(self, msg: m.Message) -> None:
        payload = msg.serialize(self.serializer)
        self.router.metrics.bytes_out.inc(len(payload))
        self.transport.send_frame(payload, self.serializer.BINARY)

    def send_event(self, event: m.Event, prepared: dict[str, Any]) -> None:
        if self.state != "open":
            return
        key = self.serializer.NAME
        frame = prepared.get(key)
        if frame is None:
            payload = event.serialize(self.serializer)
            frame = prepared[key] = self.transport.prepare(payload, self.serializer.BINARY)
        self.router.metrics.events_out.inc()
        self.transport.send_prepared(frame)

    def _error(self, request_type: int, request: int, failure: Failure) -> None:
        if self.state != "open":
            return
        if failure.check(ApplicationError):
            err = failure.value
            text = err.args[0] if err.args else err.error
            self.send(m.Error(request_type, request, err.error, args=[text]))
        elif failure.check(CancelledError):
            self.send(m.Error(request_type, request, ApplicationError.CANCELED, args=["call canceled"]))
        else:
            log.failure("request {request} failed", failure, request=request)
            self.send(m.Error(request_type, request, INTERNAL_ERROR, args=["internal error in the bridge"]))

    def abort(self, reason: str, text: str | None) -> None:
        if self.state == "closed":
            return
        self.send(m.Abort(reason, message=text))
        self._end()
        self.transport.close(1000, None)

    def protocol_violation(self, text: str) -> None:
        self.router.metrics.protocol_errors.inc()
        log.warn("protocol violation from {peer}: {text}", peer=self.peer, text=text)
        self.abort(PROTOCOL_VIOLATION, text)

    def shutdown(self, reason: str = "wamp.close.system_shutdown") -> None:
        """Say GOODBYE and close, for a bridge that is stopping."""
        if self.state == "open":
            self.send(m.Goodbye(reason=reason, message="the bridge is shutting down"))
            self._end()
            self.transport.close(1001, "server shutdown")
        elif self.state != "closed":
            self.abort("wamp.close.system_shutdown", "the bridge is shutting down")

    # -- end ----------------------------------------------------------------

    def transport_lost(self) -> None:
        self._end()

    def _end(self) -> None:
        if self.state == "closed":
            return
        was_open = self.state == "open"
        self.state = "closed"
        calls, self._calls = self._calls, {}
        for d in calls.values():
            d.cancel()
        self.router.session_closed(self, list(self._subscriptions))
        self._subscriptions.clear()
        if was_open:
            log.info("session {session} closed: authid={authid} peer={peer}", session=self.session_id, authid=self.authid, peer=self.peer)


class WampServerProtocol(WebSocketServerProtocol):
    session: WampSession | None = None

    def onConnect(self, request):
        for offered in request.protocols:
            if offered in SERIALIZERS:
                break
        else:
            raise ConnectionDeny(
                ConnectionDeny.BAD_REQUEST, f"no supported WAMP subprotocol offered (want one of {', '.join(SERIALIZERS)})"
            )
        allowed = self.factory.websocket_allowed(request)
        if allowed is not True:
            log.info("WebSocket from {peer} refused (origin={origin})", peer=request.peer, origin=request.headers.get("origin"))
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "not allowed")
        return offered

    def onOpen(self) -> None:
        self.session = WampSession(self.factory.router, SERIALIZERS[self.websocket_protocol_in_use], self, self.peer)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.session.message_received(payload, isBinary)

    def onClose(self, wasClean, code, reason) -> None:
        if self.session is not None:
            self.session.transport_lost()

    # the transport WampSession writes to
    def send_frame(self, payload: bytes, is_binary: bool) -> None:
        self.sendMessage(payload, is_binary)

    def prepare(self, payload: bytes, is_binary: bool):
        return self.factory.prepareMessage(payload, is_binary)

    def send_prepared(self, prepared) -> None:
        self.sendPreparedMessage(prepared)

    def close(self, code: int, reason: str | None) -> None:
        self.sendClose(code, reason)


class WampServerFactory(WebSocketServerFactory):
    protocol = WampServerProtocol

    def __init__(self, router: Router, websocket_allowed, max_message_size: int) -> None:
        super().__init__(protocols=list(SERIALIZERS))
        self.router = router
        self.websocket_allowed = websocket_allowed
        self.setProtocolOptions(
            maxMessagePayloadSize=max_message_size,
            maxFramePayloadSize=max_message_size,
            openHandshakeTimeout=10,
            closeHandshakeTimeout=5,
            failByDrop=False,  # tell the client why (1007, 1009, ...) instead of dropping TCP
            autoPingInterval=30,
            autoPingTimeout=20,
        )
