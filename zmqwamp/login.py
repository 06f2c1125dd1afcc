"""Logging in: HELLO -> WELCOME or CHALLENGE, AUTHENTICATE -> WELCOME or ABORT, and the throttle.

:class:`LoginService` answers a session's HELLO and AUTHENTICATE through the
Twisted Cred portal (:mod:`zmqwamp.auth` has the credentials, checkers, realm
and the CHALLENGE itself); :class:`LoginThrottle` decides when a check may run,
so that guessing secrets is slow and the real user is never locked out.
Failures are :class:`ApplicationError` ready for an ABORT.  Neither a ticket nor
a signature is ever logged.
"""

from __future__ import annotations

from collections.abc import Callable

from autobahn.wamp.exception import ApplicationError
from twisted.cred.error import LoginFailed, UnauthorizedLogin, UnhandledCredentials
from twisted.cred.portal import Portal
from twisted.internet.defer import CancelledError, Deferred, DeferredLock, fail, inlineCallbacks, succeed
from twisted.internet.defer import TimeoutError as CheckTimedOut
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from zmqwamp.auth import Challenge, check_response, login_anonymous, make_challenge, select_method
from zmqwamp.metrics import BridgeMetrics
from zmqwamp.peers import peer_host

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
    ) -> None:
        self.realm = realm
        self.portal = portal
        self.throttle = throttle
        self.metrics = metrics
        self._stopping = stopping

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
        host = peer_host(session.peer)
        try:
            turn = yield throttle.turn(host, challenge.authid, wanted=lambda: session.state == "login")
        except TooManyLoginAttempts as e:
            self.metrics.limit_exceeded.labels("max_pending_logins").inc()
            self.metrics.logins.labels(challenge.method, "refused").inc()
            log.info(
                "login refused: too many login attempts ({why}): method={method} authid={authid!r} peer={peer}",
                why=str(e),
                method=challenge.method,
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


class TooManyLoginAttempts(Exception):
    """Refused without a check: too many attempts of this peer (or for this authid) are waiting."""


# Failures are counted per authid too; a longer authid shares its count with those of the same start.
AUTHID_KEY_LENGTH = 256
# An attempt that arrives with nothing ahead of it and waits the whole penalty cap (the budget) is in time,
# though the reactor's clock has moved on a little between its arrival and its turn.
_BUDGET_SLACK = 0.05


class _Line:
    """The login attempts of one peer, or for one authid: checked one at a time, in order of arrival."""

    __slots__ = ("lock", "ready_at")

    def __init__(self) -> None:
        self.lock = DeferredLock()
        self.ready_at = 0.0  # when the attempt holding the line is done with its penalty (its check starts)


class LoginTurn:
    """An attempt's turn: its check may run now.  Say how it went with :meth:`succeeded` or
    :meth:`failed`; either gives the turn to the next attempt in line (so does :meth:`release`)."""

    def __init__(self, throttle: LoginThrottle, host: str, authid: str, lines: list) -> None:
        self._throttle = throttle
        self.host = host
        self.authid = authid
        self._lines = lines  # [(key, _Line)], in the order they were taken
        self.started = throttle.clock.seconds()  # when its check began (set again after the penalty)

    def succeeded(self) -> None:
        self._throttle.succeeded(self.host, self.authid)
        self.release()

    def failed(self) -> None:
        self._throttle.failed(self.host, self.authid)
        self.release()

    def release(self) -> None:
        lines, self._lines = self._lines, []
        for key, line in reversed(lines):
            self._throttle._release(key, line)


class LoginThrottle:
    """Slows down password guessing without locking out the real user, on the reactor clock.

    * **Floor.** A refused login is answered no sooner than ``floor`` seconds
      after its check began, so an unknown authid and a wrong secret take the
      same time.
    * **Penalty.** Failures are recorded per (peer address, authid) pair and
      summed per peer and per authid.  Once either sum reaches ``free``, an
      attempt waits ``base`` seconds before its check, twice as long for each
      further failure, up to ``cap`` (``login_penalty_max``; ``0`` turns the
      penalty off).  A guesser is slowed down whether it tries many authids
      from one address or one authid from many addresses.  A success for an
      authid from a peer clears that pair's failures (a user's own typos stop
      counting against them); a pair is forgotten ``window`` seconds after its
      last failure.
    * **One check at a time** per peer and per authid (given in HELLO): an
      attempt waits for the ones before it, then for its penalty, then is
      checked.  Parallel guesses gain nothing over sequential ones.
    * **Never past the login deadline.**  The time an attempt spends here
      (waiting in line plus its penalty) is at most ``budget``, half the login
      deadline (``handshake_timeout``): the other half is left for the client
      (HELLO and CHALLENGE round trips, a browser's PBKDF2) and the check, so
      the right secret still gets WELCOME however many wrong ones came before.
      An attempt that would wait longer, or finds ``max_queue`` attempts already
      waiting in its line, is refused at once (:class:`TooManyLoginAttempts`)
      instead of being left to time out.
    """

    def __init__(
        self,
        clock: IReactorTime,
        floor: float = 0.5,
        cap: float = 30.0,
        *,
        login_timeout: float = 10.0,
        budget: float | None = None,
        max_queue: int = 32,
        free: int = 3,
        base: float = 1.0,
        window: float = 600.0,
        max_records: int = 10000,
    ) -> None:
        self.clock = clock
        self.floor = floor
        self.login_timeout = login_timeout  # a check that has not answered by then is given up
        self.budget = login_timeout / 2 if budget is None else budget
        self.cap = min(cap, self.budget)
        self.max_queue = max_queue
        self.free = free
        self.base = base
        self.window = window
        self.max_records = max_records
        # (host, authid) -> (failures, time of the last one), oldest first
        self._pairs: dict[tuple[str, str], tuple[int, float]] = {}
        self._counts: dict[tuple[str, str], int] = {}  # ("peer", host) / ("authid", authid) -> failures
        self._lines: dict[tuple[str, str], _Line] = {}

    # -- failure records ------------------------------------------------------

    def _expire(self) -> None:
        horizon = self.clock.seconds() - self.window
        while self._pairs:
            pair, (_, last) = next(iter(self._pairs.items()))
            if last >= horizon:
                return
            self._forget(pair)

    def _forget(self, pair: tuple[str, str]) -> None:
        count, _ = self._pairs.pop(pair)
        host, authid = pair
        for key in (("peer", host), ("authid", authid)) if authid else (("peer", host),):
            left = self._counts[key] - count
            if left > 0:
                self._counts[key] = left
            else:
                del self._counts[key]

    def failed(self, host: str, authid: str = "") -> None:
        """Record a refused login of ``authid`` from ``host``."""
        self._expire()
        authid = authid[:AUTHID_KEY_LENGTH]
        pair = (host, authid)
        count, _ = self._pairs.pop(pair, (0, 0.0))
        self._pairs[pair] = (count + 1, self.clock.seconds())
        for key in (("peer", host), ("authid", authid)) if authid else (("peer", host),):
            self._counts[key] = self._counts.get(key, 0) + 1
        while len(self._pairs) > self.max_records:
            self._forget(next(iter(self._pairs)))

    def succeeded(self, host: str, authid: str = "") -> None:
        """``authid`` logged in from ``host``: its failures from there no longer count."""
        self._expire()
        pair = (host, authid[:AUTHID_KEY_LENGTH])
        if pair in self._pairs:
            self._forget(pair)

    def _penalty(self, failures: int) -> float:
        excess = failures - self.free
        if excess < 0 or self.cap <= 0:
            return 0.0
        return min(self.base * 2.0 ** min(excess, 64), self.cap)

    def delay(self, host: str, authid: str = "") -> float:
        """Seconds an attempt for ``authid`` from ``host`` waits before it is checked (once its turn comes)."""
        self._expire()
        failures = self._counts.get(("peer", host), 0)
        if authid:
            failures = max(failures, self._counts.get(("authid", authid[:AUTHID_KEY_LENGTH]), 0))
        return self._penalty(failures)

    # -- turns ------------------------------------------------------------------

    def turn(self, host: str, authid: str = "", wanted: Callable[[], bool] | None = None) -> Deferred:
        """Wait for this attempt's turn to be checked; fires with a :class:`LoginTurn`.

        Fails at once with :class:`TooManyLoginAttempts` if its line is full or
        it could not be checked within the budget, and with ``CancelledError``
        if ``wanted()`` (asked when its turn comes) says the session is gone.
        """
        authid = authid[:AUTHID_KEY_LENGTH]
        keys = [("peer", host)] + ([("authid", authid)] if authid else [])
        now = self.clock.seconds()
        wait = self.delay(host, authid)
        for key in keys:
            line = self._lines.get(key)
            if line is None or not line.lock.locked:
                continue
            queued = len(line.lock.waiting)
            if queued >= self.max_queue:
                return fail(TooManyLoginAttempts(f"{queued} attempts {_whose(key)} are already waiting"))
            # no sooner than: the holder's penalty, one penalty for each attempt ahead, then its own
            ahead = self._penalty(self._counts.get(key, 0))
            if max(line.ready_at - now, 0.0) + queued * ahead + wait > self.budget + _BUDGET_SLACK:
                return fail(
                    TooManyLoginAttempts(f"attempts {_whose(key)} could not be checked within {self.budget:g}s")
                )
        lines = []
        for key in keys:
            line = self._lines.get(key)
            if line is None:
                line = self._lines[key] = _Line()
            lines.append((key, line))
        d: Deferred = lines[0][1].lock.acquire()
        for _, line in lines[1:]:
            d.addCallback(_acquire, line.lock)
        return d.addCallback(self._granted, host, authid, lines, now, wanted)

    def _granted(self, _, host: str, authid: str, lines: list, arrived: float, wanted) -> Deferred:
        turn = LoginTurn(self, host, authid, lines)
        if wanted is not None and not wanted():
            turn.release()
            raise CancelledError("the session is gone")
        now = self.clock.seconds()
        wait = self.delay(host, authid)
        if now - arrived + wait > self.budget + _BUDGET_SLACK:
            turn.release()
            raise TooManyLoginAttempts(
                f"waited {now - arrived:.1f}s in line, then {wait:g}s more would pass {self.budget:g}s"
            )
        for _, line in lines:
            line.ready_at = now + wait
        if wait:
            log.info(
                "login from {peer} for {authid!r} delayed {wait}s after repeated failures",
                peer=host,
                authid=authid[:80],
                wait=wait,
            )
        return self.pause(wait).addCallback(self._checking, turn, wanted)

    def _checking(self, _, turn: LoginTurn, wanted) -> LoginTurn:
        if wanted is not None and not wanted():
            turn.release()
            raise CancelledError("the session is gone")
        turn.started = self.clock.seconds()
        return turn

    def _release(self, key: tuple[str, str], line: _Line) -> None:
        line.lock.release()
        if not line.lock.locked and not line.lock.waiting and self._lines.get(key) is line:
            del self._lines[key]

    def pause(self, seconds: float) -> Deferred:
        if seconds <= 0:
            return succeed(None)
        return deferLater(self.clock, seconds, lambda: None)


def _acquire(_: object, lock: DeferredLock) -> Deferred:
    return lock.acquire()


def _whose(key: tuple[str, str]) -> str:
    return "from this address" if key[0] == "peer" else "for this authid"
