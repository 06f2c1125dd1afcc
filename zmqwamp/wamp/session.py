"""One client's WAMP session: the router side of WAMP v2, without any WebSocket.

Messages (subprotocols ``wamp.2.json``, ``wamp.2.msgpack``, ``wamp.2.cbor``; see
:mod:`zmqwamp.wamp.messages`):

* ``HELLO`` -> ``WELCOME`` (roles broker and dealer) or ``ABORT``
  (``wamp.error.no_such_realm``, ``wamp.error.not_authorized``); for the
  ``ticket`` and ``wampcra`` authmethods ``HELLO`` -> ``CHALLENGE``,
  ``AUTHENTICATE`` -> ``WELCOME`` or ``ABORT`` (``wamp.error.not_authorized``,
  "authentication failed").  The checks are :mod:`zmqwamp.auth.login`'s.
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
  ``zmqwamp.close.session_expired``, close 1000 once the client's GOODBYE is in.
* ``REGISTER`` / ``PUBLISH`` (acknowledged) -> ``ERROR`` ``zmqwamp.error.not_supported``;
  ``UNREGISTER`` -> ``ERROR`` ``wamp.error.no_such_registration``; an
  unacknowledged ``PUBLISH`` has no reply in WAMP: it is logged and counted.
* Anything else (bad serialization, unknown type, a message before ``HELLO``, a
  second ``HELLO``, a message a router never receives, a refused CBOR tag) ->
  ``ABORT`` ``wamp.error.protocol_violation`` and close; other sessions are unaffected.
* Over a limit (calls in flight, calls per second, subscriptions, SUBSCRIBEs per
  second, a SUBSCRIBE with ``get_retained``/``_since`` again while that
  subscription's replay still runs) -> ``ERROR`` ``zmqwamp.error.limit_exceeded``.  Shutdown -> ``GOODBYE``
  ``wamp.close.system_shutdown``, then close 1001 once the client's GOODBYE is
  in (or after :data:`GOODBYE_WAIT`).  See docs/reliability.md.

The WebSocket side (handshake, frames, slow consumers, pings) is
:mod:`zmqwamp.transport.websocket`'s; what a CALL or SUBSCRIBE does is :mod:`zmqwamp.wamp.router`'s.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from autobahn.wamp import message as m
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.role import RoleBrokerFeatures, RoleDealerFeatures
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from zmqwamp.auth.cred import Challenge
from zmqwamp.auth.login import LoginService
from zmqwamp.clientlog import ClientLog, clip
from zmqwamp.metrics import BridgeMetrics
from zmqwamp.tokenbucket import TokenBucket
from zmqwamp.wamp.errors import INTERNAL_ERROR, LIMIT_EXCEEDED, NOT_SUPPORTED, PROTOCOL_VIOLATION
from zmqwamp.wamp.limits import SessionLimits
from zmqwamp.wamp.messages import ObjectSerializer, WampProtocolViolation, decode, encode
from zmqwamp.wamp.registry import SessionRegistry
from zmqwamp.wamp.router import Router

log = Logger()

ROLES = {
    # event_retention: get_retained; _event_history: _since/_epoch/_gap (docs/history.md)
    "broker": RoleBrokerFeatures(subscription_revocation=True, event_retention=True),
    "dealer": RoleDealerFeatures(call_timeout=True, call_canceling=True),
}


# Seconds to wait for the client's GOODBYE after ours, before closing anyway.
GOODBYE_WAIT = 1.0

# Bytes a WebSocket frame header adds to a server's message (unmasked: 2, 4 or 10).
FRAME_HEADER = 10

_EVENT = m.Event.MESSAGE_TYPE


class Welcome(m.Welcome):
    """WELCOME, with the broker's custom feature ``_event_history`` (autobahn writes no ``_`` features)."""

    def marshal(self) -> list:
        raw = super().marshal()
        raw[2]["roles"]["broker"]["features"]["_event_history"] = True
        return raw


class MessageTooBig(Exception):
    """A message over the WebSocket message size limit: the channel cannot send it."""

    def __init__(self, size: int, limit: int | float) -> None:
        super().__init__(f"{size} bytes, over the bridge's max_message_size of {limit} bytes")
        self.size = size
        self.limit = limit


class MessageChannel(Protocol):
    """Where a session's messages go: one WebSocket connection

    (:class:`~zmqwamp.transport.websocket.WampServerProtocol`).
    """

    def send_frame(self, payload: bytes, is_binary: bool) -> None:
        """Send a message that must be delivered; raises :class:`MessageTooBig` over the size limit."""

    def prepare(self, payload: bytes, is_binary: bool) -> Any:
        """An EVENT's payload made ready to send to many (once per serializer); raises :class:`MessageTooBig`."""

    def send_prepared(self, prepared: Any, slow_consumer: str | None = None) -> None:
        """Send a prepared EVENT under its endpoint's slow-consumer policy (None: the bridge's default)."""

    def outgoing_room(self) -> int:
        """Bytes the outgoing buffer still takes before its slow-consumer policy would apply (0: closed)."""

    def close(self, code: int, reason: str | None) -> None:
        """Close the connection with this WebSocket close code."""


@dataclass(frozen=True, slots=True)
class SessionContext:
    """What every session of a bridge shares: one per bridge."""

    router: Router
    logins: LoginService
    registry: SessionRegistry
    metrics: BridgeMetrics
    client_log: ClientLog
    clock: IReactorTime


class WampSession:
    """One client's WAMP session: parse, dispatch, reply.

    It writes to its :class:`MessageChannel` (the WebSocket connection, or a
    test's fake) and asks the bridge's shared parts (:class:`SessionContext`)
    for logins, calls and subscriptions.  ``limits`` (None: no limits) are
    checked here: over one, a CALL or SUBSCRIBE gets ERROR
    ``zmqwamp.error.limit_exceeded``.  Log lines about the client go through
    the context's :class:`~zmqwamp.clientlog.ClientLog`, which keeps its
    ``log_budget`` here.
    """

    # one per connection: no per-instance __dict__
    __slots__ = (
        "context",
        "serializer",
        "channel",
        "peer",
        "limits",
        "_call_rate",
        "_subscribe_rate",
        "_message_rate",
        "_subscribing",
        "state",
        "session_id",
        "avatar",
        "_challenge",
        "_calls",
        "_subscriptions",
        "log_budget",
        "_revocable",
        "_closing",
    )

    def __init__(
        self,
        context: SessionContext,
        serializer: ObjectSerializer,
        channel: MessageChannel,
        peer: str,
        limits: SessionLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.context = context
        self.serializer = serializer
        self.channel = channel
        self.peer = peer
        self.limits = limits
        self._call_rate = TokenBucket(limits.max_calls_per_second, clock=clock) if limits else None
        # a session may (re)make all the subscriptions it may hold at once (js-client after a reconnect), and a
        # second's worth more
        self._subscribe_rate = (
            TokenBucket(
                limits.max_subscribes_per_second,
                burst=limits.max_subscriptions + limits.max_subscribes_per_second,
                clock=clock,
            )
            if limits
            else None
        )
        # every message, whatever its kind: 60,000 UNSUBSCRIBEs of unknown ids (1.4 MiB) cost 2.2 s of CPU, each
        # answered with its own ERROR; the per-kind limits answer first, this one ends a session that floods
        self._message_rate = (
            TokenBucket(limits.max_messages_per_second, burst=2 * limits.max_messages_per_second, clock=clock)
            if limits
            else None
        )
        self._subscribing = 0  # SUBSCRIBEs not answered yet
        self.state = "hello"  # -> "login" [-> "challenge" -> "login"] -> "open" -> "closed"
        self.session_id: int | None = None
        self.avatar: Any = None
        self._challenge: Challenge | None = None  # the CHALLENGE awaiting its AUTHENTICATE
        self._calls: dict[int, Deferred] = {}
        self._subscriptions: dict[int, str | None] = {}  # id -> its endpoint's slow-consumer policy
        self._revocable = False  # the client announced subscription_revocation: tell it when one is revoked
        self._closing: tuple[int, str, IDelayedCall] | None = None  # after our GOODBYE: (close code, reason, timer)
        self.log_budget: Any = None  # this client's share of the log (zmqwamp.clientlog), made when first needed

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
            self.context.metrics.dropped.labels("after_close").inc()
            self.context.client_log.emit(
                self, log.info, "message from {peer} after session end ignored", peer=self.peer
            )
            return
        if self._message_rate is not None and not self._message_rate.take():
            self._flooded()
            return
        try:
            for raw, msg in decode(self.serializer, payload, is_binary):
                self._dispatch(raw, msg)
                if self.state == "closed":
                    return
        except WampProtocolViolation as e:
            self.protocol_violation(str(e))

    def _flooded(self) -> None:
        """More messages than ``max_messages_per_second`` (after its burst): ABORT and close, before decoding."""
        assert self.limits is not None  # the bucket exists only with limits
        rate = self.limits.max_messages_per_second
        self.context.metrics.limit_exceeded.labels("max_messages_per_second").inc()
        self.context.client_log.emit(
            self,
            log.info,
            "session from {peer} ended: more than {rate:g} messages per second",
            peer=self.peer,
            rate=rate,
        )
        self.abort(LIMIT_EXCEEDED, f"max_messages_per_second: more than {rate:g} messages per second")

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
        d = self.context.logins.hello(self, msg)
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
        assert challenge is not None  # state "challenge" has one
        self.state = "login"
        d = self.context.logins.authenticate(self, challenge, msg.signature)
        d.addCallbacks(self._welcome, self._login_failed)

    def _welcome(self, avatar) -> None:
        if self.state != "login":
            return
        self.avatar = avatar
        self.session_id = random.randint(1, 2**53)
        self.state = "open"
        self.context.registry.opened(self)
        log.info(
            "session {session} open: authid={authid} role={authrole} peer={peer}",
            session=self.session_id,
            authid=clip(avatar.authid),
            authrole=clip(avatar.authrole),
            peer=self.peer,
        )
        self.send(
            Welcome(
                self.session_id,
                ROLES,
                realm=self.context.logins.realm,
                authid=avatar.authid,
                authrole=avatar.authrole,
                authmethod=avatar.authmethod,
                authprovider=avatar.authprovider,
            )
        )

    def _login_failed(self, failure: Failure) -> None:
        if self.state != "login":
            return
        err = failure.value
        if isinstance(err, ApplicationError):
            self.abort(err.error, err.args[0] if err.args else None)
        else:
            log.failure("login failed unexpectedly", failure)
            self.abort(ApplicationError.NOT_AUTHORIZED, "login failed")

    def _on_abort(self, raw, msg: m.Abort) -> None:
        self.context.client_log.emit(
            self, log.info, "client {peer} aborted: {reason}", peer=self.peer, reason=clip(msg.reason)
        )
        self._end()
        self.channel.close(1000, None)

    def _on_goodbye(self, raw, msg: m.Goodbye) -> None:
        self.send(m.Goodbye(reason="wamp.close.goodbye_and_out"))
        self._end()
        self.channel.close(1000, None)

    def _on_call(self, raw, msg: m.Call) -> None:
        if msg.request in self._calls:
            raise WampProtocolViolation(f"CALL request id {msg.request} already in flight")
        if self.limits is not None and self._call_rate is not None:
            if len(self._calls) >= self.limits.max_calls_in_flight:
                return self._limit_exceeded(
                    m.Call.MESSAGE_TYPE,
                    msg.request,
                    "max_calls_in_flight",
                    f"{self.limits.max_calls_in_flight} calls are already waiting for a reply",
                )
            if not self._call_rate.take():
                return self._limit_exceeded(
                    m.Call.MESSAGE_TYPE,
                    msg.request,
                    "max_calls_per_second",
                    f"more than {self.limits.max_calls_per_second:g} calls per second",
                )
        d = self.context.router.call(self, msg.procedure, msg.args, msg.kwargs, msg.timeout)
        self.context.registry.call_started()
        self._calls[msg.request] = d  # popped at once below if already answered
        d.addBoth(self._call_done, msg.request)

    def _call_done(self, result, request: int) -> None:
        self._calls.pop(request, None)
        try:
            if isinstance(result, Failure):
                self._error(m.Call.MESSAGE_TYPE, request, result)
            else:
                self._result(request, result)
        finally:  # after the answer is sent: the last call's end lets a drain say GOODBYE
            self.context.registry.call_ended()

    def _result(self, request: int, args: list) -> None:
        if self.state == "open":
            # the bytes of m.Result(request, args=args).serialize(), without building the message object
            raw = [m.Result.MESSAGE_TYPE, request, {}, args] if args else [m.Result.MESSAGE_TYPE, request, {}]
            try:
                self._send_payload(encode(self.serializer, raw))
            except MessageTooBig as e:
                self._too_big(m.Call.MESSAGE_TYPE, request, "reply", e)

    def _on_cancel(self, raw, msg: m.Cancel) -> None:
        d = self._calls.get(msg.request)
        if d is not None:
            d.cancel()  # -> _call_done with CancelledError -> ERROR canceled
        else:
            self.context.metrics.dropped.labels("cancel_unknown").inc()
            self.context.client_log.emit(
                self,
                log.info,
                "CANCEL for unknown call {request} from {peer} ignored",
                request=msg.request,
                peer=self.peer,
            )

    def _on_subscribe(self, raw, msg: m.Subscribe) -> None:
        if self._subscribe_rate is not None and not self._subscribe_rate.take():
            assert self.limits is not None
            return self._limit_exceeded(
                m.Subscribe.MESSAGE_TYPE,
                msg.request,
                "max_subscribes_per_second",
                f"more than {self.limits.max_subscribes_per_second:g} SUBSCRIBEs per second",
            )
        if self.limits is not None and len(self._subscriptions) + self._subscribing >= self.limits.max_subscriptions:
            return self._limit_exceeded(
                m.Subscribe.MESSAGE_TYPE,
                msg.request,
                "max_subscriptions",
                f"this session already holds {self.limits.max_subscriptions} subscriptions",
            )
        options = raw[2] if len(raw) > 2 and isinstance(raw[2], dict) else {}
        self._subscribing += 1
        d = self.context.router.subscribe(self, msg.topic, options)
        d.addBoth(self._subscribe_done, msg.request)

    def _subscribe_done(self, result, request: int) -> None:
        self._subscribing -= 1
        if isinstance(result, Failure):
            self._error(m.Subscribe.MESSAGE_TYPE, request, result)
        else:
            self._subscribed(request, result)

    def _subscribed(self, request: int, subscribed) -> None:
        """SUBSCRIBED, then the replay its ``get_retained``/``_since`` asked for (in steps, before live EVENTs)."""
        sub, replay = subscribed
        if self.state != "open":
            self.context.router.unsubscribe(self, sub.id)
            return
        self._subscriptions[sub.id] = sub.endpoint.slow_consumer
        self.send(m.Subscribed(request, sub.id))
        if replay is not None:
            replay.start()

    def _limit_exceeded(self, request_type: int, request: int, limit: str, text: str) -> None:
        self.context.metrics.limit_exceeded.labels(limit).inc()
        self.context.client_log.emit(
            self, log.info, "{limit} reached by {peer}: {text}", limit=limit, peer=self.peer, text=text
        )
        self.send(m.Error(request_type, request, LIMIT_EXCEEDED, args=[f"{limit}: {text}"]))

    def _on_unsubscribe(self, raw, msg: m.Unsubscribe) -> None:
        if not self.context.router.unsubscribe(self, msg.subscription):
            text = f"not subscribed under id {msg.subscription}"
            self.send(
                m.Error(m.Unsubscribe.MESSAGE_TYPE, msg.request, ApplicationError.NO_SUCH_SUBSCRIPTION, args=[text])
            )
            return
        self._subscriptions.pop(msg.subscription, None)
        self.send(m.Unsubscribed(msg.request))

    def revoke_subscription(self, subscription_id: int, reason: str) -> bool:
        """Forget a subscription the session no longer may hold (WAMP subscription revocation).

        The client hears of it only if it announced ``subscription_revocation``
        (the WAMP spec forbids the message otherwise).  The router, which decided,
        takes the session out of the subscription, so no EVENT for it follows.
        False if the session did not hold it.
        """
        if self.state != "open" or subscription_id not in self._subscriptions:
            return False
        del self._subscriptions[subscription_id]
        if self._revocable:
            self.send(m.Unsubscribed(0, subscription=subscription_id, reason=reason))
        return True

    def _on_publish(self, raw, msg: m.Publish) -> None:
        text = "this bridge does not route PUBLISH: publish from a zmq PUB service"
        if msg.acknowledge:
            self.send(m.Error(m.Publish.MESSAGE_TYPE, msg.request, NOT_SUPPORTED, args=[text]))
        else:
            self.context.metrics.dropped.labels("publish").inc()
            self.context.client_log.emit(
                self,
                log.info,
                "unacknowledged PUBLISH to {topic} from {peer} dropped: {text}",
                topic=clip(msg.topic),
                peer=self.peer,
                text=text,
            )

    def _on_register(self, raw, msg: m.Register) -> None:
        text = "this bridge does not route REGISTER: callees are zmq REP services"
        self.send(m.Error(m.Register.MESSAGE_TYPE, msg.request, NOT_SUPPORTED, args=[text]))

    def _on_unregister(self, raw, msg: m.Unregister) -> None:
        self.send(
            m.Error(
                m.Unregister.MESSAGE_TYPE,
                msg.request,
                ApplicationError.NO_SUCH_REGISTRATION,
                args=["nothing is registered"],
            )
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
        self.channel.send_frame(payload, self.serializer.BINARY)
        self.context.metrics.bytes_out.inc(len(payload))

    def _too_big(self, request_type: int, request: int, what: str, e: MessageTooBig) -> None:
        """A reply over the size limit (autobahn would refuse it): ERROR ``wamp.error.payload_size_exceeded``."""
        self.context.metrics.dropped.labels(f"{what}_too_large").inc()
        self.context.client_log.emit(
            self,
            log.info,
            "{what} to request {request} of {peer} not sent: {text}",
            what=what,
            request=request,
            peer=self.peer,
            text=str(e),
        )
        self.send(m.Error(request_type, request, ApplicationError.PAYLOAD_SIZE_EXCEEDED, args=[f"the {what} is {e}"]))

    def send_event(self, subscription: int, publication: int, args: list, details: dict, prepared: dict) -> int:
        """Send a live EVENT; return the payload bytes handed on (0: not sent, the session is not open).

        ``prepared`` is shared by the subscribers of one zmq message and subscription: the
        EVENT is built, encoded and framed once per serializer there, as a list (the bytes
        autobahn's Event would give, without the message object).  The hub counts the EVENT
        metrics once per zmq message from these sizes, not here once per delivery.
        """
        if self.state != "open":
            return 0
        key = self.serializer.NAME
        entry = prepared.get(key)
        if entry is None:
            raw = (
                [_EVENT, subscription, publication, details, args]
                if args
                else [_EVENT, subscription, publication, details]
            )
            payload = encode(self.serializer, raw)
            try:
                entry = (self.channel.prepare(payload, self.serializer.BINARY), len(payload))
            except MessageTooBig as e:  # once per zmq message and serializer, then dropped for each subscriber
                entry = (None, 0)
                self.context.client_log.emit(
                    None,
                    log.warn,
                    "event for subscription {subscription} dropped: {text}",
                    subscription=subscription,
                    text=str(e),
                )
            prepared[key] = entry
        frame, size = entry
        if frame is None:
            self.context.metrics.dropped.labels("event_too_large").inc()
            return 0
        self.channel.send_prepared(frame, self._subscriptions.get(subscription))
        return size

    def send_replayed(self, subscription: int, publication: int, args: list, details: dict) -> int | None:
        """Send an EVENT (a replayed one, or one carrying a ``_gap``) if it fits in the outgoing buffer.

        Its size; 0 if not sent (too large, closed); None if there is no room (the replay stops and
        says so in ``_gap``, rather than leave it to the slow-consumer policy).  The EVENT is built
        here, as a list (autobahn's Event and its marshal() cost more than the JSON encoding).
        """
        if self.state != "open":
            return 0
        payload = encode(self.serializer, [_EVENT, subscription, publication, details, args])
        size = len(payload)
        if size + FRAME_HEADER > self.channel.outgoing_room():
            return None
        try:
            frame = self.channel.prepare(payload, self.serializer.BINARY)
        except MessageTooBig as e:
            self.context.metrics.dropped.labels("event_too_large").inc()
            self.context.client_log.emit(
                self,
                log.warn,
                "event for subscription {subscription} to {peer} dropped: {text}",
                subscription=subscription,
                peer=self.peer,
                text=str(e),
            )
            return 0
        self.channel.send_prepared(frame, self._subscriptions.get(subscription))
        return size

    def _error(self, request_type: int, request: int, failure: Failure) -> None:
        if self.state != "open":
            return
        err = failure.value
        if isinstance(err, ApplicationError):
            text = err.args[0] if err.args else err.error
            self.send(m.Error(request_type, request, err.error, args=[text]))
        elif failure.check(CancelledError):
            self.send(m.Error(request_type, request, ApplicationError.CANCELED, args=["call canceled"]))
        else:
            self.context.client_log.emit(
                self, log.failure, "request {request} failed", failure=failure, request=request
            )
            self.send(m.Error(request_type, request, INTERNAL_ERROR, args=["internal error in the bridge"]))

    def abort(self, reason: str, text: str | None) -> None:
        if self.state == "closed":
            return
        self.send(m.Abort(reason, message=text))
        self._end()
        self.channel.close(1000, None)

    def protocol_violation(self, text: str) -> None:
        """ABORT and close.  ``text`` may quote the client (autobahn's ProtocolError messages do): clipped."""
        self.context.metrics.protocol_errors.inc()
        text = clip(text, 300)
        self.context.client_log.emit(
            self, log.warn, "protocol violation from {peer}: {text}", peer=self.peer, text=text
        )
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
            timer = self.context.clock.callLater(GOODBYE_WAIT, self._close_after_goodbye)
            self._closing = (code, close_reason, timer)
        elif self.state != "closed":
            self.abort(reason, message)

    def _after_goodbye(self, payload: bytes, is_binary: bool) -> None:
        """A message after our GOODBYE: the client's GOODBYE closes the connection; anything else was on its way."""
        try:
            messages = decode(self.serializer, payload, is_binary)
        except WampProtocolViolation:
            messages = []
        if self._closing is not None and any(isinstance(msg, m.Goodbye) for _, msg in messages):
            self._closing[2].cancel()
            self._close_after_goodbye()

    def _close_after_goodbye(self) -> None:
        if self._closing is None:
            return
        code, reason, _ = self._closing
        self._closing = None
        self.channel.close(code, reason)

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
        router = self.context.router
        for subscription_id in list(self._subscriptions):
            router.unsubscribe(self, subscription_id)
        self.context.registry.closed(self)
        self._subscriptions.clear()
        if was_open:
            log.info(
                "session {session} closed: authid={authid} peer={peer}",
                session=self.session_id,
                authid=clip(self.authid),
                peer=self.peer,
            )
        self.context.client_log.gone(self, self.peer)
