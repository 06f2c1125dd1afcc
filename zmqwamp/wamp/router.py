"""What a CALL or a SUBSCRIBE does to ZeroMQ.

No network here: sessions call :meth:`Router.call` and
:meth:`Router.subscribe`, which resolve the URI, apply the authorization hook
(within the call's deadline), and hand the work to the forwarder or the hub
(:mod:`zmqwamp.wamp.ports`).  Failures are :class:`ApplicationError`
with a WAMP error URI, ready to be sent as an ERROR: what the ZeroMQ side refused
becomes one in :meth:`Router._refused` (URIs: :func:`zmqwamp.wamp.errors.upstream_error`).
On a reload, :meth:`Router.reload` takes the new aliases and asks the hook again about
every open subscription, and a SUBSCRIBE still in flight (its hook or its host
name not answered yet) is asked again before SUBSCRIBED.  Logging in is
:mod:`zmqwamp.auth.login`'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from autobahn.wamp.exception import ApplicationError
from twisted.internet.defer import CancelledError, Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from zmqwamp.clientlog import ClientLog, clip
from zmqwamp.metrics import BridgeMetrics
from zmqwamp.upstream.codec import CodecError, decode_frames, encode_args
from zmqwamp.upstream.endpoints import Endpoint, EndpointResolver, InvalidEndpoint
from zmqwamp.upstream.errors import BackendUnavailable, CallTimedOut, LimitExceeded
from zmqwamp.upstream.hub import MAX_ID, Subscribed
from zmqwamp.upstream.subscription import Recovery
from zmqwamp.wamp.errors import UpstreamError, upstream_error
from zmqwamp.wamp.ports import Forwarder, Hub
from zmqwamp.wamp.registry import SessionRegistry

log = Logger()


# zmqwamp_calls_total's endpoint label for calls to endpoints not labelled by name (Router._call_counter)
OTHER_ENDPOINTS = "other"

# zmqwamp_calls_total's outcome of a call the ZeroMQ side refused (a refusal by a limit is not a call's outcome)
CALL_OUTCOMES: dict[type[Exception], str] = {
    BackendUnavailable: "unavailable",
    CallTimedOut: "timeout",
    InvalidEndpoint: "invalid",
}


# authorize(session, action, endpoint, options) -> bool | Deferred[bool]
Authorizer = Callable[[Any, str, Endpoint, dict], Any]


class Router:
    # Endpoints named in zmqwamp_calls_total (aliases aside): each is a series per outcome, kept forever.
    max_endpoint_labels = 256

    def __init__(
        self,
        *,
        resolver: EndpointResolver,
        authorize: Authorizer,
        forwarder: Forwarder,
        hub: Hub,
        registry: SessionRegistry,
        metrics: BridgeMetrics,
        clock: IReactorTime,
        call_timeout: float,
        max_call_timeout: float,
        max_filter_length: int = 256,
        max_call_arguments: int = 256,
        client_log: ClientLog | None = None,
    ) -> None:
        self.resolver = resolver
        self.authorize = authorize
        self.forwarder = forwarder
        self.hub = hub
        self.registry = registry
        self.metrics = metrics
        self.clock = clock
        self.call_timeout = call_timeout
        self.max_call_timeout = max_call_timeout
        self.max_filter_length = max_filter_length
        self.max_call_arguments = max_call_arguments
        self.client_log = client_log or ClientLog(metrics)
        self._call_counters: dict = {}  # (endpoint name, outcome) -> counter, for labelled endpoints only
        self._other_counters: dict = {}  # outcome -> counter of OTHER_ENDPOINTS
        self._endpoint_labels: set[str] = set()
        # Bumped by each reload (recheck_subscriptions): a SUBSCRIBE authorized under an older one is
        # asked again before SUBSCRIBED (issue 21 item 9).
        self.policy_generation = 0

    # -- the configuration ----------------------------------------------

    def start(self) -> None:
        """Once the reactor runs (after any fork): the aliases' histories and their keep_open connections."""
        self.hub.configure_history(self.resolver.aliases.values())

    def reload(self, aliases: Mapping[str, Endpoint]) -> Deferred:
        """A new configuration (SIGHUP), in one step: ``aliases`` replace the old ones, with their histories
        and keep_open connections (:meth:`SubscriptionHub.configure_history`), and a new policy generation
        begins: every open subscription, and every SUBSCRIBE still in flight, is asked again under the rules
        now in force (the caller has put them where its ``authorize`` hook reads them).

        Fires with the number of subscriptions revoked (:meth:`recheck_subscriptions`).
        """
        self.resolver.aliases = dict(aliases)
        self.hub.configure_history(self.resolver.aliases.values())
        return self.recheck_subscriptions()

    # -- sessions ---------------------------------------------------------

    def recheck_subscriptions(self) -> Deferred:
        """Ask the authorization hook again about every open subscription and revoke the ones it now denies.

        For a reload (SIGHUP): a subscription made under the old rules must not
        keep delivering.  The hook may answer with a Deferred; a hook that fails
        counts as a denial.  An alias that is gone (or now names something else)
        is denied too.  Fires with the number of subscriptions revoked.
        """
        self.policy_generation += 1
        checks = [self._recheck(session, sub) for sub in self.hub.subscriptions() for session in sub.members()]
        return gatherResults(checks, consumeErrors=True).addCallback(sum)

    def _recheck(self, session, sub) -> Deferred:
        return self._allowed_now(session, sub.endpoint, sub.filter, sub.id).addCallback(self._rechecked, session, sub)

    def _allowed_now(self, session, endpoint: Endpoint, filter_: bytes, subscription_id: int) -> Deferred:
        """Under the rules now in force: may ``session`` hold this subscription?  A failing hook says no."""
        if endpoint.alias is not None and self.resolver.aliases.get(endpoint.alias) != endpoint:
            allowed = succeed(False)  # the alias is gone, or names something else now
        else:
            allowed = maybeDeferred(self.authorize, session, "subscribe", endpoint, {"filter": filter_})
        return allowed.addErrback(self._recheck_failed, session, endpoint, subscription_id)

    def _recheck_failed(self, failure: Failure, session, endpoint: Endpoint, subscription_id: int) -> bool:
        log.failure(
            "re-checking subscription {id} to {endpoint} of {authid}: the hook failed, so it is revoked",
            failure,
            id=subscription_id,
            endpoint=endpoint.name[:200],
            authid=session.authid,
        )
        return False

    def _rechecked(self, allowed, session, sub) -> int:
        if allowed is True or not session.revoke_subscription(sub.id, ApplicationError.NOT_AUTHORIZED):
            return 0
        self.hub.unsubscribe(session, sub.id)
        self.metrics.revoked.labels("subscription").inc()
        log.info(
            "subscription {id} to {endpoint} (filter {filter!r}) of {authid} from {peer} revoked: no longer allowed",
            id=sub.id,
            endpoint=sub.endpoint.name[:200],
            filter=sub.filter[:80],
            authid=session.authid,
            peer=session.peer,
        )
        return 1

    # -- requests ---------------------------------------------------------

    def _resolve(self, uri: str, kind: str):
        try:
            target = self.resolver.resolve(uri)
        except InvalidEndpoint as e:
            raise upstream_error(e) from None
        if target.endpoint.kind not in (None, kind):
            raise ApplicationError(
                ApplicationError.INVALID_URI, f"{uri!r} is a {target.endpoint.kind} endpoint, not {kind}"
            )
        return target

    def _authorized(
        self,
        session,
        action: str,
        endpoint: Endpoint,
        options: dict,
        then: Callable,
        *args,
        timeout_ms: int | None = None,
    ):
        """``then(*args)`` if the hook allows ``action``; synchronous unless the hook returns a Deferred.

        A Deferred must fire within the call's timeout (``timeout_ms``, else the
        endpoint's or ``call_timeout``, as for the zmq request): a hook that never
        answers would leave the request unanswered for good.
        """
        allowed = self.authorize(session, action, endpoint, options)
        if isinstance(allowed, Deferred):
            timeout = self.call_deadline(endpoint, timeout_ms)
            expired = partial(self._authorize_timed_out, session, action, endpoint)
            allowed.addTimeout(timeout, self.clock, onTimeoutCancel=expired)
            return allowed.addCallback(self._after_authorize, session, action, endpoint, then, args)
        return self._after_authorize(allowed, session, action, endpoint, then, args)

    def call_deadline(self, endpoint: Endpoint, timeout_ms: int | None) -> float:
        """Seconds a request may take: the CALL's ``timeout`` option (bounded), the endpoint's, or ``call_timeout``."""
        if timeout_ms:
            return min(timeout_ms / 1000.0, self.max_call_timeout)
        return endpoint.timeout or self.call_timeout

    def _authorize_timed_out(self, session, action: str, endpoint: Endpoint, result, timeout: float):
        """The hook's Deferred did not fire in time (and was cancelled): ERROR, as for a call without a reply."""
        if not (isinstance(result, Failure) and result.check(CancelledError)):
            return result  # the hook's canceller gave an answer of its own
        self.metrics.limit_exceeded.labels("authorization_timeout").inc()
        self.client_log.emit(
            session,
            log.warn,
            "no authorization decision for {action} on {endpoint} within {timeout}s: authid={authid} peer={peer}",
            action=action,
            endpoint=clip(endpoint.name),
            timeout=timeout,
            authid=clip(session.authid),
            peer=session.peer,
        )
        text = f"{action} timed out: no authorization decision for {clip(endpoint.name)!r} within {timeout:g}s"
        raise ApplicationError(ApplicationError.CANCELED if action == "call" else ApplicationError.TIMEOUT, text)

    def _after_authorize(self, allowed, session, action: str, endpoint: Endpoint, then: Callable, args: tuple):
        if allowed is not True:
            self.metrics.denied.labels(action).inc()
            self.client_log.emit(
                session,
                log.info,
                "denied {action} on {endpoint} for {authid} from {peer}",
                action=action,
                endpoint=clip(endpoint.name),
                authid=clip(session.authid),
                peer=session.peer,
            )
            raise ApplicationError(ApplicationError.NOT_AUTHORIZED, f"{action} on {endpoint.name!r} is not allowed")
        return then(*args)

    def call(self, session, uri: str, args: list | None, kwargs: dict | None, timeout_ms: int | None) -> Deferred:
        """CALL -> policy check -> zmq request -> reply arguments.

        The hot path: no Deferred but the request's own unless the hook returns one.
        """
        return maybeDeferred(self._call, session, uri, args, kwargs, timeout_ms)

    def _call(self, session, uri: str, args: list | None, kwargs: dict | None, timeout_ms: int | None):
        if self.registry.stopping:
            raise ApplicationError(ApplicationError.SYSTEM_SHUTDOWN, "the bridge is shutting down")
        target = self._resolve(uri, "req")
        endpoint = target.endpoint
        if target.filter is not None:
            raise ApplicationError(ApplicationError.INVALID_URI, "a filter only applies to subscriptions")
        if kwargs:
            raise ApplicationError(
                ApplicationError.INVALID_ARGUMENT, "keyword arguments are not supported: send positional arguments"
            )
        if args and len(args) > self.max_call_arguments:
            # each argument is a ZeroMQ frame, each frame ~8 us to encode, send, receive and decode: one 1 MB
            # msgpack CALL of 1,000,000 arguments cost 7.9 s of CPU
            raise self._refused(
                session,
                LimitExceeded(
                    "max_call_arguments",
                    f"{len(args)} arguments, at most {self.max_call_arguments} (each becomes a ZeroMQ frame)",
                ),
            )
        return self._authorized(
            session, "call", endpoint, {}, self._forward, session, endpoint, args, timeout_ms, timeout_ms=timeout_ms
        )

    def _forward(self, session, endpoint: Endpoint, args: list | None, timeout_ms: int | None) -> Deferred:
        try:
            frames = encode_args(args, endpoint.codec)
        except CodecError as e:
            raise ApplicationError(ApplicationError.INVALID_ARGUMENT, str(e)) from None
        timeout = self.call_deadline(endpoint, timeout_ms)
        started = time.monotonic()
        try:
            d = self.forwarder.request(endpoint.address, frames, timeout, session)
        except UpstreamError as e:
            raise self._call_refused(session, endpoint, e, started) from None
        return d.addCallbacks(
            self._replied, self._failed, callbackArgs=(endpoint, started), errbackArgs=(session, endpoint, started)
        )

    def _replied(self, reply: list[bytes], endpoint: Endpoint, started: float) -> list:
        try:
            result = decode_frames(reply, endpoint.codec)
        except CodecError as e:
            self._count_call(endpoint, "codec", started)
            raise ApplicationError(ApplicationError.INVALID_PAYLOAD, f"reply from {endpoint.name}: {e}") from None
        self._count_call(endpoint, "ok", started)
        return result

    def _failed(self, failure: Failure, session, endpoint: Endpoint, started: float):
        # BackendUnavailable: the send itself was refused (zmq queue full), or the host name did not resolve;
        # CallTimedOut: logged by the forwarder, summarised per address
        if isinstance(failure.value, UpstreamError):
            raise self._call_refused(session, endpoint, failure.value, started)
        self._count_call(endpoint, "canceled" if failure.check(CancelledError) else "error", started)
        return failure

    def _call_refused(self, session, endpoint: Endpoint, error: Exception, started: float) -> ApplicationError:
        """A call the ZeroMQ side refused: its outcome counted (a limit's refusal is none), and the ERROR."""
        outcome = CALL_OUTCOMES.get(type(error))
        if outcome is not None:
            self._count_call(endpoint, outcome, started)
        return self._refused(session, error)

    def _count_call(self, endpoint: Endpoint, outcome: str, started: float) -> None:
        counter = self._call_counters.get((endpoint.name, outcome))
        if counter is None:
            counter = self._call_counter(endpoint, outcome)
        counter.inc()
        self.metrics.call_latency.observe(time.monotonic() - started)

    def _call_counter(self, endpoint: Endpoint, outcome: str):
        """The counter for a call not counted under this (endpoint, outcome) before.

        An endpoint is labelled by name if it is an alias, or if it has a connection
        open (calls that never reached zmq, such as to a missing ipc socket, do not
        make one) and fewer than ``max_endpoint_labels`` endpoints have a label:
        otherwise each of 60,000 distinct refused addresses was a series kept
        forever.  The rest count under ``OTHER_ENDPOINTS``, and are not cached here.
        """
        name = endpoint.name
        if endpoint.alias is None and name not in self._endpoint_labels:
            if len(self._endpoint_labels) >= self.max_endpoint_labels or not self.forwarder.is_open(endpoint.address):
                counter = self._other_counters.get(outcome)
                if counter is None:
                    counter = self._other_counters[outcome] = self.metrics.calls.labels(OTHER_ENDPOINTS, outcome)
                return counter
            self._endpoint_labels.add(name)
        counter = self._call_counters[(name, outcome)] = self.metrics.calls.labels(name, outcome)
        return counter

    def _refused(self, session, error: Exception) -> ApplicationError:
        """The ERROR for a request the ZeroMQ side (or a limit) refused; a limit is counted and logged too."""
        if isinstance(error, LimitExceeded):
            self.metrics.limit_exceeded.labels(error.limit).inc()
            self.client_log.emit(
                session,
                log.info,
                "{limit} reached by {peer}: {text}",
                limit=error.limit,
                peer=session.peer,
                text=error.text,
            )
        return upstream_error(error)

    def subscribe(self, session, uri: str, options: dict) -> Deferred:
        """SUBSCRIBE -> policy check -> the shared subscription for (endpoint, filter), with its replay (Subscribed)."""
        return maybeDeferred(self._subscribe_checked, session, uri, options)

    def _subscribe_checked(self, session, uri: str, options: dict):
        generation = self.policy_generation
        target = self._resolve(uri, "sub")
        filter_ = _subscription_filter(options, target.filter)
        recovery = subscription_recovery(options)
        if len(filter_) > self.max_filter_length:
            raise self._refused(
                session,
                LimitExceeded(
                    "max_filter_length",
                    f"the filter is {len(filter_)} bytes, at most {self.max_filter_length} are allowed",
                ),
            )
        result = self._authorized(
            session,
            "subscribe",
            target.endpoint,
            {"filter": filter_},
            self._subscribe,
            session,
            target.endpoint,
            filter_,
            recovery,
        )
        if isinstance(result, Deferred):  # the hook, or the endpoint's host name, answers later
            return result.addCallback(self._still_allowed, session, generation)
        return self._still_allowed(result, session, generation)

    def _still_allowed(self, subscribed: Subscribed, session, generation: int) -> Subscribed | Deferred:
        """Before SUBSCRIBED: if a reload came since the SUBSCRIBE was authorized, ask again under the new rules.

        recheck_subscriptions() at the reload cannot see a SUBSCRIBE whose hook or host name had not
        answered yet; without this, it got SUBSCRIBED and EVENTs under rules that deny it.
        """
        if generation == self.policy_generation:
            return subscribed
        sub = subscribed.subscription
        d = self._allowed_now(session, sub.endpoint, sub.filter, sub.id)
        return d.addCallback(self._in_flight_rechecked, subscribed, session, self.policy_generation)

    def _in_flight_rechecked(self, allowed, subscribed: Subscribed, session, generation: int):
        if allowed is True:
            return self._still_allowed(subscribed, session, generation)  # once more if another reload came
        sub = subscribed.subscription
        # it may be a SUBSCRIBE again to a subscription the session holds: that one goes too (revoked)
        session.revoke_subscription(sub.id, ApplicationError.NOT_AUTHORIZED)
        self.hub.unsubscribe(session, sub.id)  # stops its replay; closes the socket if it was the last
        self.metrics.denied.labels("subscribe").inc()
        self.client_log.emit(
            session,
            log.info,
            "denied subscribe on {endpoint} for {authid} from {peer}: the rules changed while it was in flight",
            endpoint=clip(sub.endpoint.name),
            authid=clip(session.authid),
            peer=session.peer,
        )
        raise ApplicationError(ApplicationError.NOT_AUTHORIZED, f"subscribe on {sub.endpoint.name!r} is not allowed")

    def _subscribe(
        self, session, endpoint: Endpoint, filter_: bytes, recovery: Recovery | None
    ) -> Subscribed | Deferred:
        if not session.is_open:
            raise CancelledError("session closed")
        try:
            result = self.hub.subscribe(session, endpoint, filter_, recovery)
        except UpstreamError as e:
            raise self._refused(session, e) from None
        if isinstance(result, Deferred):  # the endpoint's host name is being resolved
            result.addErrback(self._subscribe_failed, session)
        return result

    def _subscribe_failed(self, failure: Failure, session):
        if isinstance(failure.value, UpstreamError):
            raise self._refused(session, failure.value)
        return failure

    def unsubscribe(self, session, subscription_id: int) -> bool:
        """``session`` leaves the subscription (UNSUBSCRIBE, revoked, or gone); False if it did not hold it."""
        return self.hub.unsubscribe(session, subscription_id)


MAX_EPOCH_LENGTH = 64


def subscription_recovery(options: dict) -> Recovery | None:
    """What a SUBSCRIBE asks for besides live EVENTs: ``get_retained``, or ``_since`` (with ``_epoch``); else None.

    A malformed ``_since`` or ``_epoch`` is refused (``wamp.error.invalid_argument``):
    read as "nothing", it would make a resubscribing client miss messages unawares.
    """
    since = options.get("_since")
    epoch = options.get("_epoch")
    if since is not None and (type(since) is not int or not 0 <= since <= MAX_ID):
        raise ApplicationError(
            ApplicationError.INVALID_ARGUMENT, "the _since option must be a publication id (an integer >= 0)"
        )
    if epoch is not None and (not isinstance(epoch, str) or len(epoch) > MAX_EPOCH_LENGTH):
        raise ApplicationError(
            ApplicationError.INVALID_ARGUMENT, f"the _epoch option must be a string of at most {MAX_EPOCH_LENGTH}"
        )
    retained = options.get("get_retained") is True
    if since is None and not retained:
        return None
    return Recovery(retained=retained, since=since, epoch=epoch)


# Where a SUBSCRIBE may carry its filter.  ``_filter`` is the spelling WAMP allows for a
# custom option (``_[a-z0-9_]{3,}``; wampy.js forwards only such keys), ``filter`` the one
# autobahn-js users have written since the start (it passes any key through).
FILTER_OPTIONS = ("_filter", "filter")


def _subscription_filter(options: dict, uri_filter: bytes | None) -> bytes:
    """The prefix filter of a SUBSCRIBE, from its options or its URI's ``?filter=`` (none: every message).

    Given in more than one place, the values must agree: a filter dropped or misspelt
    somewhere must never silently widen the subscription to every message.
    """
    given = {} if uri_filter is None else {"the URI's ?filter=": uri_filter}
    for key in FILTER_OPTIONS:
        value = options.get(key)
        if value is None:
            continue
        if isinstance(value, str):
            value = value.encode("utf-8")
        elif isinstance(value, (bytes, bytearray)):
            value = bytes(value)
        else:
            raise ApplicationError(ApplicationError.INVALID_ARGUMENT, f"the {key} option must be a string or bytes")
        given[f"option {key}"] = value
    if len(set(given.values())) > 1:
        raise ApplicationError(
            ApplicationError.INVALID_ARGUMENT, f"the filter is given in {' and '.join(given)} with different values"
        )
    return next(iter(given.values()), b"")
