"""Logging in: HELLO -> WELCOME or CHALLENGE, AUTHENTICATE -> WELCOME or ABORT.

:class:`LoginService` answers a session's HELLO and AUTHENTICATE through the
Twisted Cred portal (:mod:`zmqwamp.auth.cred` has the credentials, checkers, realm
and the CHALLENGE itself); the :class:`~zmqwamp.auth.throttle.LoginThrottle` decides
when a check may run, so that guessing secrets is slow and the real user is never
locked out.  Failures are :class:`ApplicationError` ready for an ABORT.  Neither a
ticket nor a signature is ever logged.
"""

from __future__ import annotations

from collections.abc import Callable

from autobahn.wamp.exception import ApplicationError
from twisted.cred.error import LoginFailed, UnauthorizedLogin, UnhandledCredentials
from twisted.cred.portal import Portal
from twisted.internet.defer import TimeoutError as CheckTimedOut
from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger
from twisted.python.failure import Failure

from zmqwamp.auth.cred import Challenge, check_response, is_text, login_anonymous, make_challenge, select_method
from zmqwamp.auth.throttle import LoginThrottle, TooManyLoginAttempts, throttle_host
from zmqwamp.clientlog import ClientLog
from zmqwamp.metrics import BridgeMetrics

log = Logger()


class LoginService:
    """The login conversation of every session of a bridge, on one realm.

    ``stopping()`` says whether the bridge is shutting down (no new sessions then).
    """

    def __init__(
        self,
        realm: str,
        portal: Portal,
        throttle: LoginThrottle,
        metrics: BridgeMetrics,
        stopping: Callable[[], bool] = lambda: False,
        client_log: ClientLog | None = None,
    ) -> None:
        self.realm = realm
        self.portal = portal
        self.throttle = throttle
        self.metrics = metrics
        self._stopping = stopping
        self.client_log = client_log

    def _log(self, format: str, **fields) -> None:
        """A line about a login refused without a check: nothing bounds how often a client causes one but the
        client log's total rate (each attempt is a new connection, so a per-session budget would not)."""
        if self.client_log is None:
            log.info(format, **fields)
        else:
            self.client_log.emit(None, log.info, format, **fields)

    @inlineCallbacks
    def hello(self, session, hello):
        """Answer a HELLO: an avatar (anonymous), a :class:`Challenge` to send, or fail with ApplicationError."""
        if self._stopping():
            raise ApplicationError("wamp.close.system_shutdown", "the bridge is shutting down")
        if hello.realm != self.realm:
            raise ApplicationError(ApplicationError.NO_SUCH_REALM, f"no realm {hello.realm!r} on this bridge")
        method = select_method(self.portal, hello.authmethods or ["anonymous"])
        if method is None:
            self.metrics.logins.labels("none", "refused").inc()
            log.info("login refused: none of the offered authmethods is enabled, peer={peer}", peer=session.peer)
            raise ApplicationError(ApplicationError.NOT_AUTHORIZED, "no offered authentication method is enabled")
        if method != "anonymous" and isinstance(hello.authid, str) and not is_text(hello.authid):
            self.metrics.logins.labels(method, "refused").inc()
            self._log(
                "login refused: the authid is not valid Unicode text (a lone surrogate): "
                "method={authmethod} peer={peer}",
                authmethod=method,
                peer=session.peer,
            )
            raise ApplicationError(ApplicationError.NOT_AUTHORIZED, "the authid is not valid Unicode text")
        if method != "anonymous":
            # -> CHALLENGE; the session answers with AUTHENTICATE -> authenticate()
            return (yield make_challenge(self.portal, method, hello.authid))
        try:
            _, avatar, _ = yield login_anonymous(self.portal)
        except (UnauthorizedLogin, UnhandledCredentials):
            self.metrics.logins.labels("anonymous", "refused").inc()
            raise ApplicationError(ApplicationError.NOT_AUTHORIZED, "anonymous access is not enabled") from None
        self.metrics.logins.labels("anonymous", "accepted").inc()
        return avatar

    @inlineCallbacks
    def authenticate(self, session, challenge: Challenge, signature: str):
        """Check the AUTHENTICATE for ``challenge``; fire with an avatar or fail with not_authorized.

        The throttle decides when the check runs (one at a time per peer and
        per authid, after a penalty once they keep failing) or refuses at once
        with "too many login attempts".  Refusals of a check say nothing more
        than "authentication failed" and come no sooner than the throttle's
        floor delay.
        """
        throttle = self.throttle
        host = throttle_host(session.peer)
        try:
            turn = yield throttle.turn(host, challenge.authid, wanted=lambda: session.state == "login")
        except TooManyLoginAttempts as e:
            self.metrics.limit_exceeded.labels("max_pending_logins").inc()
            self.metrics.logins.labels(challenge.method, "refused").inc()
            self._log(
                "login refused: too many login attempts ({why}): method={authmethod} authid={authid!r} peer={peer}",
                why=str(e),
                authmethod=challenge.method,
                authid=challenge.authid[:80],
                peer=session.peer,
            )
            raise ApplicationError(ApplicationError.NOT_AUTHORIZED, "too many login attempts") from None
        try:
            avatar = yield check_response(self.portal, challenge, signature).addTimeout(
                throttle.login_timeout, throttle.clock
            )
        except LoginFailed:
            turn.failed()
        except CheckTimedOut:
            turn.failed()
            log.warn(
                "{method} login for {authid!r}: the checker gave no answer within {t}s",
                method=challenge.method,
                authid=challenge.authid[:80],
                t=throttle.login_timeout,
            )
        except Exception:
            turn.failed()
            log.failure(
                "{method} login for {authid!r} failed in a checker",
                Failure(),
                method=challenge.method,
                authid=challenge.authid[:80],
            )
        else:
            turn.succeeded()
            self.metrics.logins.labels(challenge.method, "accepted").inc()
            return avatar
        self.metrics.logins.labels(challenge.method, "refused").inc()
        log.info(
            "login refused: method={method} authid={authid!r} peer={peer}",
            method=challenge.method,
            authid=challenge.authid[:80],
            peer=session.peer,
        )
        yield throttle.pause(turn.started + throttle.floor - throttle.clock.seconds())
        raise ApplicationError(ApplicationError.NOT_AUTHORIZED, "authentication failed")
