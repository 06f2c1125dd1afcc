"""The WAMP v2 router side, over WebSocket.

Wire protocol (subprotocols ``wamp.2.json``, ``wamp.2.msgpack``, ``wamp.2.cbor``):

* ``HELLO`` -> ``WELCOME`` (roles broker and dealer) or ``ABORT``
  (``wamp.error.no_such_realm``, ``wamp.error.not_authorized``); for the
  ``ticket`` and ``wampcra`` authmethods ``HELLO`` -> ``CHALLENGE``,
  ``AUTHENTICATE`` -> ``WELCOME`` or ``ABORT`` (``wamp.error.not_authorized``,
  "authentication failed").  The checks themselves are the router's and
  :mod:`zmqwamp.auth`'s.
* ``GOODBYE`` -> ``GOODBYE`` (``wamp.close.goodbye_and_out``), then close.
* ``CALL`` -> ``RESULT`` or ``ERROR``; ``CANCEL`` -> ``ERROR`` (``wamp.error.canceled``).  A
  reply over the message size limit -> ``ERROR`` ``wamp.error.payload_size_exceeded``.
* ``SUBSCRIBE`` -> ``SUBSCRIBED`` or ``ERROR``; ``UNSUBSCRIBE`` -> ``UNSUBSCRIBED`` or ``ERROR``;
  then ``EVENT`` for every matching zmq message.  When a reload no longer allows
  a subscription: ``UNSUBSCRIBED`` with request 0 and details ``subscription``,
  ``reason`` (WAMP subscription revocation) to a client that announced
  ``subscription_revocation``; no more ``EVENT`` for it either way.
* The session's credential expires (a JWT's ``exp``) -> ``ERROR``
  ``wamp.error.canceled`` for each call in flight, ``GOODBYE``
  ``zmqwamp.close.session_expired``, close 1000.
* ``REGISTER`` / ``PUBLISH`` (acknowledged) -> ``ERROR`` ``zmqwamp.error.not_supported``;
  ``UNREGISTER`` -> ``ERROR`` ``wamp.error.no_such_registration``; an
  unacknowledged ``PUBLISH`` has no reply in WAMP: it is logged and counted.
* Anything else (bad serialization, unknown type, a message before ``HELLO``, a
  second ``HELLO``, a message a router never receives, a CBOR tag in
  :data:`REFUSED_CBOR_TAGS`) -> ``ABORT``
  ``wamp.error.protocol_violation`` and close; other sessions are unaffected.
* Over a limit (:mod:`zmqwamp.limits`: calls in flight, calls per second,
  subscriptions) -> ``ERROR`` ``zmqwamp.error.limit_exceeded``; too many
  connections -> HTTP 503 at accept (:class:`zmqwamp.limits.ConnectionGuard`).  A client too slow to read its
  EVENTs loses some (its endpoint's policy, :mod:`zmqwamp.flow`) or is closed
  with 1008; a reply is never dropped.  Shutdown -> ``GOODBYE``
  ``wamp.close.system_shutdown`` and close 1001.  See docs/reliability.md.
* A client that sends pings but does not read gets a pong for its latest ping
  only, once it reads again.
* A message in more than ``max_message_fragments`` frames -> close 1009.

:class:`WampSession` is the state machine and knows nothing of WebSocket;
:class:`WampServerProtocol` adapts it to Autobahn's WebSocket protocol.
"""

from __future__ import annotations

import json
import random
import time
from functools import partial
from typing import Any, Callable

import cbor2
import msgpack
from autobahn.twisted.websocket import ConnectionDeny, WebSocketServerFactory, WebSocketServerProtocol
from autobahn.util import encode_truncate
from autobahn.wamp import message as m
from autobahn.wamp.exception import ApplicationError, ProtocolError
from autobahn.wamp.role import RoleBrokerFeatures, RoleDealerFeatures
from autobahn.wamp.serializer import (
    CBORObjectSerializer,
    JsonObjectSerializer,
    MsgPackObjectSerializer,
    Serializer,
)
from twisted.internet import tcp
from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.python.failure import Failure

from zmqwamp.auth import Challenge
from zmqwamp.clientlog import clip
from zmqwamp.codec import Unsupported
from zmqwamp.config import BridgeConfig
from zmqwamp.flow import SLOW_CONSUMER_CLOSE_CODE, OutgoingBuffer, PendingWrites
from zmqwamp.frames import FragmentLimit, WholeFrameReader
from zmqwamp.limits import LIMIT_EXCEEDED, PASS_THROUGH_WRAPPERS, SERVER, SessionLimits, TokenBucket
from zmqwamp.router import INTERNAL_ERROR, NOT_SUPPORTED, Router

log = Logger()


class WampProtocolViolation(Exception):
    pass


class MessageTooBig(Exception):
    """A message over the WebSocket message size limit: autobahn would refuse to send it."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size} bytes, over the bridge's max_message_size of {limit} bytes")
        self.size = size
        self.limit = limit


# CBOR tags a client may not send.  25/256 (string references) and 28/29 (value
# sharing) let a few bytes stand for a value of any size: 311 bytes of nested shared
# lists made json.dumps of a CALL argument freeze the reactor for 76 s, then fail with
# MemoryError.  35 (regular expression) and 36 (MIME message) compile or parse each
# value: 2.7 s and 0.9 s of CPU per MB, against 5 ms for plain strings.  None of them
# means anything to a ZeroMQ service (the codecs cannot encode what they decode to).
REFUSED_CBOR_TAGS = {
    25: "string reference", 256: "string reference namespace",
    28: "shared value", 29: "shared value reference",
    35: "regular expression", 36: "MIME message",
}


def _refuse_tag(tag: int) -> Callable[[Any, bool], Any]:
    def refuse(value: Any, immutable: bool) -> Any:
        raise WampProtocolViolation(f"CBOR tag {tag} ({REFUSED_CBOR_TAGS[tag]}) is not accepted")

    return refuse


# RFC 8746 typed arrays: tag 64 (uint8) and 68 (uint8, clamped) are plain bytes, which
# cbor-x (wampy.js's CBOR) sends for every Uint8Array / Uint8ClampedArray; the others
# (65-87: wider integers and floats, in either byte order) have no ZeroMQ encoding here.
BYTES_CBOR_TAGS = (64, 68)
TYPED_ARRAY_CBOR_TAGS = range(65, 88)


def _bytes_tag(value: Any, immutable: bool) -> Any:
    if not isinstance(value, bytes):
        raise WampProtocolViolation("a CBOR typed array (tag 64 or 68) must wrap a byte string")
    return value


def _typed_array_tag(tag: int) -> Callable[[Any, bool], Any]:
    def typed_array(value: Any, immutable: bool) -> Any:
        return Unsupported(f"a CBOR typed array of tag {tag} (RFC 8746; only bytes, a Uint8Array, can be sent)")

    return typed_array


class SafeCBORSerializer(CBORObjectSerializer):
    """Autobahn's CBOR serializer, refusing :data:`REFUSED_CBOR_TAGS` while decoding.

    cbor2 resolves those tags itself (``tag_hook`` never sees them); its
    ``semantic_decoders`` (cbor2 6) override that, so the decoder stops at the
    first such tag, before anything is expanded: O(payload).  Not batched.
    Typed arrays of bytes (tags 64, 68) decode as bytes; other typed arrays as
    :class:`~zmqwamp.codec.Unsupported`, which a CALL refuses with an ERROR.
    """

    _DECODERS = {
        **{tag: _refuse_tag(tag) for tag in REFUSED_CBOR_TAGS},
        **{tag: _typed_array_tag(tag) for tag in TYPED_ARRAY_CBOR_TAGS},
        **{tag: _bytes_tag for tag in BYTES_CBOR_TAGS},
    }

    def unserialize(self, payload: bytes) -> list:
        try:
            return [cbor2.loads(payload, semantic_decoders=self._DECODERS)]
        except cbor2.CBORDecodeError as e:
            if isinstance(e.__cause__, WampProtocolViolation):
                raise e.__cause__ from None
            raise


# One instance per serializer, shared by all sessions: autobahn caches a
# message's bytes per serializer instance, so an EVENT is encoded once.
SERIALIZERS = {
    "wamp.2.cbor": SafeCBORSerializer(),
    "wamp.2.msgpack": MsgPackObjectSerializer(),
    "wamp.2.json": JsonObjectSerializer(),
}

ROLES = {
    "broker": RoleBrokerFeatures(subscription_revocation=True),
    "dealer": RoleDealerFeatures(call_timeout=True, call_canceling=True),
}

PROTOCOL_VIOLATION = "wamp.error.protocol_violation"

# Seconds to wait for the client's GOODBYE after ours, before closing anyway.
GOODBYE_WAIT = 1.0

# Frames held for the end of a batch (WampServerProtocol._write): past this, sent at once.
CORK_LIMIT = 64 * 1024

# not batched, no decimal options: see _unserialize and _serialize
_JSON = SERIALIZERS["wamp.2.json"]
try:  # the encoder autobahn's JsonObjectSerializer.serialize makes, with the same options
    from autobahn.wamp.serializer import _WAMPJsonEncoder

    _JSON_ENCODER = _WAMPJsonEncoder(separators=(",", ":"), ensure_ascii=False, sort_keys=False)
except ImportError:  # autobahn on ujson: no such class
    _JSON_ENCODER = None


def _unserialize(serializer, payload: bytes) -> list:
    """``serializer.unserialize(payload)``, with a faster path for JSON.

    Autobahn's JSON decoder runs the pure-Python scanner, with a decoder made
    per message, only to turn strings starting with NUL into bytes (WAMP's
    binary in JSON).  JSON can only carry a NUL as the escape ``\\u0000``:
    without that text, the stdlib's C decoder gives the same result.
    """
    if serializer is _JSON:
        text = payload.decode("utf8")
        if "\\u0000" not in text:
            return [json.loads(text)]
    return serializer.unserialize(payload)


def _serialize(serializer, raw: list) -> bytes:
    """``serializer.serialize(raw)``; for JSON with one reused encoder, as autobahn's makes one per call."""
    if serializer is _JSON and _JSON_ENCODER is not None:
        return _JSON_ENCODER.encode(raw).encode("utf8")
    return serializer.serialize(raw)


# Where each message a client may send keeps its options (or details) dict:
# HELLO, ABORT, AUTHENTICATE, GOODBYE, ERROR, PUBLISH, SUBSCRIBE, CALL, CANCEL, REGISTER, YIELD.
_OPTIONS_AT = {1: 2, 3: 1, 5: 2, 6: 1, 8: 3, 16: 2, 32: 2, 48: 2, 49: 2, 64: 2, 70: 2}
# JavaScript's undefined as msgpackr (ext type 0) and cbor-x (the simple value) encode it
_MSGPACK_EXT = msgpack.ExtType
_CBOR_UNDEFINED = cbor2.undefined


def _absent(value: Any) -> bool:
    return value is None or value is _CBOR_UNDEFINED or (type(value) is _MSGPACK_EXT and value.code == 0)


def _drop_absent_options(raw: list) -> None:
    """An option whose value is null or undefined is an option not given.

    wampy.js sends ``match: undefined`` and ``get_retained: undefined`` in every
    SUBSCRIBE; over msgpack and CBOR those arrive as values autobahn's parsers
    refuse ("invalid type"), which ended the session.
    """
    at = _OPTIONS_AT.get(raw[0])
    if at is None or len(raw) <= at:
        return
    options = raw[at]
    if type(options) is dict and options:
        for value in options.values():
            if _absent(value):
                raw[at] = {key: value for key, value in options.items() if not _absent(value)}
                return


def decode(serializer, payload: bytes, is_binary: bool) -> list[tuple[list, m.Message]]:
    """Parse a WebSocket message into (raw list, parsed message) pairs.

    The raw list is kept because autobahn's parsers drop options they do not
    know, such as SUBSCRIBE's ``_filter``.  Options that are null or undefined
    are taken out first (:func:`_drop_absent_options`).
    """
    if is_binary != serializer.BINARY:
        raise WampProtocolViolation(f"{'binary' if is_binary else 'text'} frame on a {serializer.NAME} session")
    try:
        raws = _unserialize(serializer, payload)
    except WampProtocolViolation:
        raise
    except Exception as e:  # the serializers raise whatever their parser raises
        raise WampProtocolViolation(f"invalid {serializer.NAME} message: {type(e).__name__}") from None
    out = []
    for raw in raws:
        if not isinstance(raw, list) or not raw or type(raw[0]) is not int:
            raise WampProtocolViolation("a WAMP message is a list starting with an integer type")
        klass = Serializer.MESSAGE_TYPE_MAP.get(raw[0])
        if klass is None:
            raise WampProtocolViolation(f"unknown WAMP message type {raw[0]}")
        _drop_absent_options(raw)
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

    ``transport`` provides ``send_frame(bytes, is_binary)`` (must be
    delivered), ``prepare(bytes, is_binary)``, ``send_prepared(prepared,
    slow_consumer)`` (an EVENT, with its endpoint's slow-consumer policy or
    None for the default) and ``close(code, reason)``.  ``limits`` (None: no
    limits) are checked here: over one, a CALL or SUBSCRIBE gets ERROR
    ``zmqwamp.error.limit_exceeded``.

    Log lines about the client go through the router's
    :class:`~zmqwamp.clientlog.ClientLog`, which keeps its ``log_budget`` here.

    ``send_frame`` and ``prepare`` raise :class:`MessageTooBig` for a message
    over the size limit: a reply then gets ERROR ``wamp.error.payload_size_exceeded``.
    """

    # one per connection: no per-instance __dict__
    __slots__ = (
        "router", "serializer", "transport", "peer", "limits", "_call_rate", "_subscribing", "state",
        "session_id", "avatar", "_challenge", "_calls", "_subscriptions", "log_budget",
        "_revocable", "_closing",
    )

    def __init__(
        self,
        router: Router,
        serializer,
        transport,
        peer: str,
        limits: SessionLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.router = router
        self.serializer = serializer
        self.transport = transport
        self.peer = peer
        self.limits = limits
        self._call_rate = TokenBucket(limits.max_calls_per_second, clock=clock) if limits else None
        self._subscribing = 0  # SUBSCRIBEs not answered yet
        self.state = "hello"  # -> "login" [-> "challenge" -> "login"] -> "open" -> "closed"
        self.session_id: int | None = None
        self.avatar = None
        self._challenge = None  # the CHALLENGE awaiting its AUTHENTICATE
        self._calls: dict[int, Any] = {}
        self._subscriptions: dict[int, str | None] = {}  # id -> its endpoint's slow-consumer policy
        self._revocable = False  # the client announced subscription_revocation: tell it when one is revoked
        self._closing: tuple[int, str, Any] | None = None  # after our GOODBYE: (close code, reason, timer)
        self.log_budget = None  # this client's share of the log (zmqwamp.clientlog), made when first needed

    @property
    def is_open(self) -> bool:
        return self.state == "open"

    @property
    def calls_in_flight(self) -> int:
        return len(self._calls)

    @property
    def authid(self) -> str | None:
        return getattr(self.avatar, "authid", None)

    # -- in -----------------------------------------------------------------

    def message_received(self, payload: bytes, is_binary: bool) -> None:
        if self._closing is not None:
            self._after_goodbye(payload, is_binary)
            return
        if self.state == "closed":
            self.router.metrics.dropped.labels("after_close").inc()
            self.router.client_log.emit(self, log.info, "message from {peer} after session end ignored", peer=self.peer)
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
        if self.state in ("login", "challenge") and not isinstance(msg, (m.Authenticate, m.Abort)):
            raise WampProtocolViolation(f"{type(msg).__name__.upper()} during authentication")
        handler(raw, msg)

    def _on_hello(self, raw, msg: m.Hello) -> None:
        if self.state != "hello":
            raise WampProtocolViolation("second HELLO in a session")
        self.state = "login"
        subscriber = (msg.roles or {}).get("subscriber")
        self._revocable = getattr(subscriber, "subscription_revocation", None) is True
        d = self.router.login(self, msg)
        d.addCallbacks(self._logged_in, self._login_failed)

    def _logged_in(self, result) -> None:
        """The router's answer to HELLO: an avatar (WELCOME) or a challenge (CHALLENGE)."""
        if self.state != "login":
            return
        if isinstance(result, Challenge):
            self.state = "challenge"
            self._challenge = result
            self.send(m.Challenge(result.method, result.extra))
        else:
            self._welcome(result)

    def _on_authenticate(self, raw, msg: m.Authenticate) -> None:
        if self.state != "challenge":
            raise WampProtocolViolation("AUTHENTICATE without a CHALLENGE")
        challenge, self._challenge = self._challenge, None
        self.state = "login"
        d = self.router.authenticate(self, challenge, msg.signature)
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
            session=self.session_id, authid=clip(avatar.authid), authrole=clip(avatar.authrole), peer=self.peer,
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
        self.router.client_log.emit(self, log.info, "client {peer} aborted: {reason}", peer=self.peer, reason=clip(msg.reason))
        self._end()
        self.transport.close(1000, None)

    def _on_goodbye(self, raw, msg: m.Goodbye) -> None:
        self.send(m.Goodbye(reason="wamp.close.goodbye_and_out"))
        self._end()
        self.transport.close(1000, None)

    def _on_call(self, raw, msg: m.Call) -> None:
        if msg.request in self._calls:
            raise WampProtocolViolation(f"CALL request id {msg.request} already in flight")
        if self.limits is not None:
            if len(self._calls) >= self.limits.max_calls_in_flight:
                return self._limit_exceeded(
                    m.Call.MESSAGE_TYPE, msg.request, "max_calls_in_flight",
                    f"{self.limits.max_calls_in_flight} calls are already waiting for a reply",
                )
            if not self._call_rate.take():
                return self._limit_exceeded(
                    m.Call.MESSAGE_TYPE, msg.request, "max_calls_per_second",
                    f"more than {self.limits.max_calls_per_second:g} calls per second",
                )
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
            # the bytes of m.Result(request, args=args).serialize(), without building the message object
            raw = [m.Result.MESSAGE_TYPE, request, {}, args] if args else [m.Result.MESSAGE_TYPE, request, {}]
            try:
                self._send_payload(_serialize(self.serializer, raw))
            except MessageTooBig as e:
                self._too_big(m.Call.MESSAGE_TYPE, request, "reply", e)

    def _on_cancel(self, raw, msg: m.Cancel) -> None:
        d = self._calls.get(msg.request)
        if d is not None:
            d.cancel()  # -> _call_done with CancelledError -> ERROR canceled
        else:
            self.router.metrics.dropped.labels("cancel_unknown").inc()
            self.router.client_log.emit(
                self, log.info, "CANCEL for unknown call {request} from {peer} ignored", request=msg.request, peer=self.peer
            )

    def _on_subscribe(self, raw, msg: m.Subscribe) -> None:
        if self.limits is not None and len(self._subscriptions) + self._subscribing >= self.limits.max_subscriptions:
            return self._limit_exceeded(
                m.Subscribe.MESSAGE_TYPE, msg.request, "max_subscriptions",
                f"this session already holds {self.limits.max_subscriptions} subscriptions",
            )
        options = raw[2] if len(raw) > 2 and isinstance(raw[2], dict) else {}
        self._subscribing += 1
        d = self.router.subscribe(self, msg.topic, options)
        d.addBoth(self._subscribe_done, msg.request)

    def _subscribe_done(self, result, request: int) -> None:
        self._subscribing -= 1
        if isinstance(result, Failure):
            self._error(m.Subscribe.MESSAGE_TYPE, request, result)
        else:
            self._subscribed(request, result)

    def _subscribed(self, request: int, sub) -> None:
        if self.state != "open":
            self.router.hub.unsubscribe(self, sub.id)
            return
        self._subscriptions[sub.id] = sub.endpoint.slow_consumer
        self.send(m.Subscribed(request, sub.id))

    def _limit_exceeded(self, request_type: int, request: int, limit: str, text: str) -> None:
        self.router.metrics.limit_exceeded.labels(limit).inc()
        self.router.client_log.emit(self, log.info, "{limit} reached by {peer}: {text}", limit=limit, peer=self.peer, text=text)
        self.send(m.Error(request_type, request, LIMIT_EXCEEDED, args=[f"{limit}: {text}"]))

    def _on_unsubscribe(self, raw, msg: m.Unsubscribe) -> None:
        try:
            self.router.unsubscribe(self, msg.subscription)
        except ApplicationError:
            self._error(m.Unsubscribe.MESSAGE_TYPE, msg.request, Failure())
            return
        self._subscriptions.pop(msg.subscription, None)
        self.send(m.Unsubscribed(msg.request))

    def revoke_subscription(self, subscription_id: int, reason: str) -> bool:
        """End a subscription the session no longer may hold (WAMP subscription revocation).

        The client hears of it only if it announced ``subscription_revocation``
        (the WAMP spec forbids the message otherwise); either way no EVENT for
        it follows.  False if the session did not hold it.
        """
        if self.state != "open" or subscription_id not in self._subscriptions:
            return False
        del self._subscriptions[subscription_id]
        self.router.hub.unsubscribe(self, subscription_id)
        if self._revocable:
            self.send(m.Unsubscribed(0, subscription=subscription_id, reason=reason))
        return True

    def _on_publish(self, raw, msg: m.Publish) -> None:
        text = "this bridge does not route PUBLISH: publish from a zmq PUB service"
        if msg.acknowledge:
            self.send(m.Error(m.Publish.MESSAGE_TYPE, msg.request, NOT_SUPPORTED, args=[text]))
        else:
            self.router.metrics.dropped.labels("publish").inc()
            self.router.client_log.emit(
                self, log.info, "unacknowledged PUBLISH to {topic} from {peer} dropped: {text}",
                topic=clip(msg.topic), peer=self.peer, text=text,
            )

    def _on_register(self, raw, msg: m.Register) -> None:
        text = "this bridge does not route REGISTER: callees are zmq REP services"
        self.send(m.Error(m.Register.MESSAGE_TYPE, msg.request, NOT_SUPPORTED, args=[text]))

    def _on_unregister(self, raw, msg: m.Unregister) -> None:
        self.send(
            m.Error(m.Unregister.MESSAGE_TYPE, msg.request, ApplicationError.NO_SUCH_REGISTRATION, args=["nothing is registered"])
        )

    # -- out ----------------------------------------------------------------

    def send(self, msg: m.Message) -> None:
        try:
            self._send_payload(msg.serialize(self.serializer))
        except MessageTooBig as e:
            if not isinstance(msg, m.Error):
                raise  # only a reply can grow with what a client or a service sends
            self._too_big(msg.request_type, msg.request, "error", e)

    def _send_payload(self, payload: bytes) -> None:
        self.transport.send_frame(payload, self.serializer.BINARY)
        self.router.metrics.bytes_out.inc(len(payload))

    def _too_big(self, request_type: int, request: int, what: str, e: MessageTooBig) -> None:
        """A reply over the size limit (autobahn would refuse it): ERROR ``wamp.error.payload_size_exceeded`` instead."""
        self.router.metrics.dropped.labels(f"{what}_too_large").inc()
        self.router.client_log.emit(
            self, log.info, "{what} to request {request} of {peer} not sent: {text}",
            what=what, request=request, peer=self.peer, text=str(e),
        )
        self.send(m.Error(request_type, request, ApplicationError.PAYLOAD_SIZE_EXCEEDED, args=[f"the {what} is {e}"]))

    def send_event(self, event: m.Event, prepared: dict[str, Any]) -> int:
        """Send ``event``; return the payload bytes handed on (0: not sent, the session is not open).

        The hub counts the EVENT metrics once per zmq message from these sizes,
        not here once per delivery.
        """
        if self.state != "open":
            return 0
        key = self.serializer.NAME
        entry = prepared.get(key)
        if entry is None:
            payload = event.serialize(self.serializer)
            try:
                entry = (self.transport.prepare(payload, self.serializer.BINARY), len(payload))
            except MessageTooBig as e:  # once per zmq message and serializer, then dropped for each subscriber
                entry = (None, 0)
                self.router.client_log.emit(
                    None, log.warn, "event for subscription {subscription} dropped: {text}",
                    subscription=event.subscription, text=str(e),
                )
            prepared[key] = entry
        frame, size = entry
        if frame is None:
            self.router.metrics.dropped.labels("event_too_large").inc()
            return 0
        self.transport.send_prepared(frame, self._subscriptions.get(event.subscription))
        return size

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
            self.router.client_log.emit(self, log.failure, "request {request} failed", failure=failure, request=request)
            self.send(m.Error(request_type, request, INTERNAL_ERROR, args=["internal error in the bridge"]))

    def abort(self, reason: str, text: str | None) -> None:
        if self.state == "closed":
            return
        self.send(m.Abort(reason, message=text))
        self._end()
        self.transport.close(1000, None)

    def protocol_violation(self, text: str) -> None:
        """ABORT and close.  ``text`` may quote the client (autobahn's ProtocolError messages do): clipped."""
        self.router.metrics.protocol_errors.inc()
        text = clip(text, 300)
        self.router.client_log.emit(self, log.warn, "protocol violation from {peer}: {text}", peer=self.peer, text=text)
        self.abort(PROTOCOL_VIOLATION, text)

    def shutdown(
        self,
        reason: str = "wamp.close.system_shutdown",
        message: str = "the bridge is shutting down",
        code: int = 1001,
        close_reason: str = "server shutdown",
    ) -> None:
        """Say GOODBYE and close, for a bridge that is stopping (or a session whose credential expired).

        Calls still waiting (the drain time is over) get ERROR ``wamp.error.canceled``
        first, so every CALL has had its one answer.
        """
        if self.state == "open":
            for d in list(self._calls.values()):
                d.cancel()
            self.send(m.Goodbye(reason=reason, message=message))
            self._end()
            # WAMP: the client answers GOODBYE with GOODBYE; closing at once made every
            # browser log "WebSocket is already in CLOSING or CLOSED state" for its answer.
            timer = self.router.clock.callLater(GOODBYE_WAIT, self._close_after_goodbye)
            self._closing = (code, close_reason, timer)
        elif self.state != "closed":
            self.abort(reason, message)

    def _after_goodbye(self, payload: bytes, is_binary: bool) -> None:
        """A message after our GOODBYE: the client's GOODBYE closes the connection; anything else was on its way."""
        try:
            messages = decode(self.serializer, payload, is_binary)
        except WampProtocolViolation:
            messages = []
        if any(isinstance(msg, m.Goodbye) for _, msg in messages):
            self._closing[2].cancel()
            self._close_after_goodbye()

    def _close_after_goodbye(self) -> None:
        code, reason, _ = self._closing
        self._closing = None
        self.transport.close(code, reason)

    # -- end ----------------------------------------------------------------

    def transport_lost(self) -> None:
        if self._closing is not None:
            timer, self._closing = self._closing[2], None
            if timer.active():
                timer.cancel()
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
            log.info(
                "session {session} closed: authid={authid} peer={peer}",
                session=self.session_id, authid=clip(self.authid), peer=self.peer,
            )
        self.router.client_log.gone(self, self.peer)


class WampServerProtocol(FragmentLimit, WholeFrameReader, WebSocketServerProtocol):
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
            self.factory.router.client_log.emit(
                None, log.info, "WebSocket from {peer} refused (origin={origin})",
                peer=request.peer, origin=clip(request.headers.get("origin")),
            )
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "not allowed")
        # Connections are counted (max_sessions, max_sessions_per_peer) by the guard
        # under the HTTP site, from accept: zmqwamp.limits.ConnectionGuard.
        return offered

    def onOpen(self) -> None:
        factory = self.factory
        self._outgoing = OutgoingBuffer(factory.max_outgoing_buffer, self._slow_consumer, factory.router.metrics, self.peer)
        try:
            # replace twisted.web's HTTPChannel, still registered from before the upgrade
            self.transport.unregisterProducer()
            self.transport.registerProducer(self._outgoing, True)
        except (AttributeError, RuntimeError) as e:
            log.warn("outgoing buffer for {peer} not bounded: {error}", peer=self.peer, error=e)
        self.session = WampSession(
            factory.router, SERIALIZERS[self.websocket_protocol_in_use], self, self.peer, factory.session_limits
        )
        # Frames this connection sends are exactly autobahn's PreparedMessage bytes (one
        # unmasked, uncompressed, unfragmented frame, nothing logged): the fast paths of
        # send_frame and send_prepared may write them to the transport themselves.
        self._plain_frames = (
            self._perMessageCompress is None and not self.autoFragmentSize and not self.maskServerFrames
            and not self.logFrames and not self.logOctets and not self.trackedTimings
        )
        # sendMessage refuses a payload over maxMessagePayloadSize (0: no limit)
        self._max_payload = self.maxMessagePayloadSize or float("inf")
        self.read_whole_frames()
        self._tcp = _plain_tcp(self.transport)
        # The opening handshake is over, and autobahn reads none of these again (it keeps
        # them only for its test suite): free them, ~1.5 KB of every idle session.
        self.http_headers = {}
        self.http_request_data = b""
        self.http_response_data = ""
        self._login_deadline = factory.clock.callLater(factory.login_timeout, self._login_expired)

    def _login_expired(self) -> None:
        """A session must be established (HELLO ... WELCOME) within the handshake timeout."""
        self._login_deadline = None
        if self.session is not None and self.session.state in ("hello", "login", "challenge"):
            self.factory.router.metrics.limit_exceeded.labels("login_timeout").inc()
            log.info("session from {peer} aborted: no completed login within {t}s", peer=self.peer, t=self.factory.login_timeout)
            self.session.abort(ApplicationError.TIMEOUT, f"no completed login within {self.factory.login_timeout:g}s")

    @property
    def max_message_fragments(self) -> int:
        return self.factory.max_message_fragments

    def message_fragments_exceeded(self) -> None:
        self.factory.router.metrics.limit_exceeded.labels("max_message_fragments").inc()
        self.factory.router.client_log.emit(
            self.session, log.info, "WebSocket from {peer} closed: a message of more than {n} frames (max_message_fragments)",
            peer=self.peer, n=self.max_message_fragments,
        )
        super().message_fragments_exceeded()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.session.message_received(payload, isBinary)
        if self._login_deadline is not None and self.session.state == "open":
            self._login_deadline.cancel()  # logged in: free the timer now, not when it fires
            self._login_deadline = None

    def onClose(self, wasClean, code, reason) -> None:
        if self.session is not None:
            self.session.transport_lost()

    def connectionLost(self, reason) -> None:
        self._corked = None
        if self._login_deadline is not None and self._login_deadline.active():
            self._login_deadline.cancel()
        try:
            super().connectionLost(reason)
        finally:
            if self._outgoing is not None:
                self._outgoing.stopProducing()

    # the transport WampSession writes to: frames go through the bounded outgoing buffer
    _outgoing: OutgoingBuffer | None = None
    _login_deadline = None

    # Fast path: when the outgoing buffer writes through (nothing queued, transport
    # not paused), OutgoingBuffer.send would call write() at once; so write the framed
    # bytes straight to the transport instead, skipping autobahn's sendMessage /
    # sendPreparedMessage / sendData (which also builds debug-log arguments on every
    # send).  Only for plain frames: see _plain_frames; otherwise the slow path.
    _plain_frames = False

    def send_frame(self, payload: bytes, is_binary: bool) -> None:
        if (
            self._plain_frames and self._outgoing.writes_through()
            and self.state == self.STATE_OPEN and len(payload) <= self._max_payload
        ):
            self._write(self.factory.prepareMessage(payload, is_binary).payloadHybi)
            return
        if len(payload) > self._max_payload:  # sendMessage would refuse it, and only log that
            raise MessageTooBig(len(payload), self._max_payload)
        self._outgoing.send(partial(self._write_message, payload, is_binary), len(payload))

    def prepare(self, payload: bytes, is_binary: bool):
        if len(payload) > self._max_payload:
            raise MessageTooBig(len(payload), self._max_payload)
        return self.factory.prepareMessage(payload, is_binary)

    def send_prepared(self, prepared, slow_consumer: str | None = None) -> None:
        if self._plain_frames and self._outgoing.writes_through() and self.state == self.STATE_OPEN:
            self._write(prepared.payloadHybi)
            return
        policy = slow_consumer or self.factory.slow_consumer
        self._outgoing.send(partial(self._write_prepared, prepared), len(prepared.payloadHybi), policy)

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
            self.factory.router.metrics.dropped.labels("pong").inc()
        else:
            outgoing.send(self._send_latest_pong, 2 + len(payload or b""))
        self._pong = payload or b""

    def _send_latest_pong(self) -> None:
        payload, self._pong = self._pong, None
        super().sendPong(payload)

    def processControlFrame(self) -> bool:
        """Autobahn's, except that a pong not answering the pending auto-ping is ignored through the client log.

        Autobahn logs a warning for each: a client could write a log line per
        6-byte frame (20,000 such pongs wrote 2.4 MB of log).
        """
        if self.current_frame.opcode == 10 and self.autoPingPending:
            if b"".join(self.control_frame_data) != self.autoPingPending:
                self.control_frame_data = None
                self.factory.router.client_log.emit(
                    self.session, log.info, "pong from {peer} ignored: it does not answer the pending ping", peer=self.peer
                )
                return True
        return super().processControlFrame()

    _tcp = None  # the TCP connection under self.transport, if frames may go straight to its socket
    _corked: list[bytes] | None = None  # frames held until the end of a batch (see _write)
    _corked_size = 0

    def _write(self, data: bytes) -> None:
        """Send a frame now, or with the others of this batch of zmq messages.

        While the factory's :class:`~zmqwamp.flow.PendingWrites` is held (a
        batch of replies or EVENTs is being handled), frames to one connection
        are kept and go out in one ``send`` when the batch ends: at high rates
        that is most of the cost of a delivery.  Past ``CORK_LIMIT`` bytes they
        go at once.  Over TLS, frames go to the TLS transport.
        """
        if self._tcp is None:
            self.transport.write(data)
            return
        corked = self._corked
        if corked is not None:
            corked.append(data)
            self._corked_size += len(data)
            if self._corked_size >= CORK_LIMIT:
                self.flush_writes()
        elif self.factory.pending_writes.holding:
            self._corked = [data]
            self._corked_size = len(data)
            self.factory.pending_writes.add(self)
        else:
            self._send(data)

    def flush_writes(self) -> None:
        """Send what :meth:`_write` holds, in one ``send``."""
        corked = self._corked
        if corked is not None:
            self._corked = None
            self._send(corked[0] if len(corked) == 1 else b"".join(corked))

    def _send(self, data: bytes) -> None:
        """Straight to the socket when the transport has nothing buffered; else to the transport.

        Twisted's ``write`` only buffers: the bytes go out once the reactor has
        polled the socket as writable, which costs two ``epoll_ctl`` calls and a
        dispatch per connection and iteration (over half the CPU of a fan-out,
        measured).  A socket with an empty buffer is nearly always writable, so
        send at once; whatever the kernel does not take (or an error) goes to
        the transport, which keeps the order (later frames see its buffer
        non-empty), the producer pausing (:mod:`zmqwamp.flow`) and the error
        handling Twisted's.
        """
        tcp = self._tcp
        if not tcp._tempDataLen and tcp.offset == len(tcp.dataBuffer) and tcp.connected \
                and not tcp.disconnecting and not self.transport.disconnecting:
            try:
                sent = tcp.socket.send(data)
            except OSError:  # EAGAIN; or an error the transport will find and report itself
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        self.transport.write(data)

    def sendData(self, data, sync=False, chopsize=None) -> None:
        """Autobahn's own writes (close frames, pings, the slow path) take the same way as our frames.

        So they stay in order with the frames held for a batch, and go straight
        to the socket too.  That matters for a close frame: once the client's
        close frame arrives, autobahn aborts the TCP connection, and a close
        frame still waiting in Twisted's buffer behind an ABORT already sent
        would be lost.
        """
        if self._tcp is None or sync or chopsize or self.send_queue or self.logOctets:
            if self._corked is not None:
                self.flush_writes()
            super().sendData(data, sync, chopsize)
        else:
            self._write(data)

    def close(self, code: int, reason: str | None) -> None:
        """Send what is queued, then a close frame (any code: autobahn's sendClose refuses 1001, 1008)."""
        if self._outgoing is not None:
            self._outgoing.flush()
        self.sendCloseFrame(code=code, reasonUtf8=encode_truncate(reason, 123) if reason else None, isReply=False)

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


def _plain_tcp(transport):
    """The ``twisted.internet.tcp.Connection`` a WebSocket writes to, if it is plain TCP (not TLS).

    The transport is :class:`~zmqwamp.limits.ConnectionGuard`, a protocol
    wrapper around it, and behind a PROXY protocol listener (``haproxy:``)
    Twisted's wrapper is between: both pass writes through unchanged.  Under TLS
    there is a TLS layer between, and frames must go through it (None).
    """
    while isinstance(transport, PASS_THROUGH_WRAPPERS):
        transport = transport.transport
    if isinstance(transport, tcp.Connection) and not transport.TLS:  # TLS: listenSSL wraps, startTLS sets .TLS
        return transport
    return None


class WampServerFactory(WebSocketServerFactory):
    protocol = WampServerProtocol

    def __init__(
        self, router: Router, websocket_allowed, config: BridgeConfig, clock=None, writes: PendingWrites | None = None
    ) -> None:
        super().__init__(protocols=list(SERIALIZERS), server=SERVER.decode())  # no version in Server:
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        self.router = router
        self.websocket_allowed = websocket_allowed
        self.login_timeout = config.handshake_timeout
        self.max_outgoing_buffer = config.max_outgoing_buffer
        self.max_message_fragments = config.max_message_fragments
        self.slow_consumer = config.slow_consumer
        self.session_limits = SessionLimits(
            max_calls_in_flight=config.max_calls_in_flight,
            max_subscriptions=config.max_subscriptions,
            max_calls_per_second=config.max_calls_per_second,
        )
        # held by the zmq readers around each batch (the same object as the forwarder's and the hub's)
        self.pending_writes = writes if writes is not None else PendingWrites()
        self.setProtocolOptions(
            maxMessagePayloadSize=config.max_message_size,
            maxFramePayloadSize=config.max_message_size,
            openHandshakeTimeout=config.handshake_timeout,
            closeHandshakeTimeout=5,
            failByDrop=False,  # tell the client why (1007, 1009, ...) instead of dropping TCP
            autoPingInterval=config.ping_interval,
            autoPingTimeout=config.ping_timeout,
            webStatus=False,  # no status page (it names autobahn's version) for a GET without Upgrade
        )
