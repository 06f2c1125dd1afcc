"""The open sessions of a bridge: counted, ended when their credential expires, drained on stop.

:class:`SessionRegistry` knows which sessions are open and how many calls are
in flight, ends a session whose credential (a JWT's ``exp``) has expired, and
tells the shutdown when the last call has ended (:meth:`SessionRegistry.no_calls`),
so the drain waits on a Deferred instead of polling.  No network here.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from zmqwamp.metrics import BridgeMetrics
from zmqwamp.wamp.errors import SESSION_EXPIRED, SESSION_REVOKED

log = Logger()


class Ending(Protocol):
    """What the registry needs of a session."""

    session_id: int | None
    peer: str
    avatar: Any

    @property
    def authid(self) -> str | None: ...

    def shutdown(self, reason: str = ..., message: str = ..., code: int = ..., close_reason: str = ...) -> None: ...


def _identity(session: Ending) -> tuple[str, str]:
    avatar = session.avatar
    return (getattr(avatar, "authprovider", ""), getattr(avatar, "authid", ""))


class WhenZero:
    """Deferreds that fire when a count reaches zero (at once if it is zero already).

    A waiter cancelled (e.g. by ``Deferred.addTimeout``) is forgotten.
    """

    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        self._waiting: list[Deferred] = []

    def wait(self, count: int) -> Deferred:
        if count == 0:
            return succeed(None)
        d: Deferred = Deferred(canceller=self._waiting.remove)
        self._waiting.append(d)
        return d

    def reached(self) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)


class SessionRegistry:
    """The bridge's open sessions and its calls in flight.

    ``stopping`` is set by the shutdown: no new sessions (login) and no new
    calls (the router) from then on.
    """

    def __init__(self, metrics: BridgeMetrics, clock: IReactorTime) -> None:
        self.metrics = metrics
        self.clock = clock
        self.sessions: set[Ending] = set()
        self.stopping = False
        self.calls_in_flight = 0
        self._no_calls = WhenZero()
        self._expiries: dict[Ending, IDelayedCall] = {}
        self._by_identity: dict[tuple[str, str], set[Ending]] = {}  # (authprovider, authid) -> open sessions

    # -- sessions -------------------------------------------------------------

    def opened(self, session: Ending) -> None:
        self.sessions.add(session)
        self.metrics.sessions_open.set(len(self.sessions))
        self._by_identity.setdefault(_identity(session), set()).add(session)
        expires = getattr(session.avatar, "expires", None)
        if expires is not None:  # a wall-clock time; one timer on the reactor's clock
            self._expiries[session] = self.clock.callLater(max(0.0, expires - time.time()), self._expired, session)

    def closed(self, session: Ending) -> None:
        expiry = self._expiries.pop(session, None)
        if expiry is not None and expiry.active():
            expiry.cancel()
        if session in self.sessions:
            self.sessions.discard(session)
            self.metrics.sessions_open.set(len(self.sessions))
            key = _identity(session)
            same = self._by_identity.get(key)
            if same is not None:
                same.discard(session)
                if not same:
                    del self._by_identity[key]

    def sessions_of(self, authprovider: str, authid: str) -> list[Ending]:
        """The open sessions that ``authprovider`` vouched for as ``authid``."""
        return list(self._by_identity.get((authprovider, authid), ()))

    def revoke(self, session: Ending, why: str, detail: str = "") -> None:
        """End a session whose identity no longer holds (GOODBYE ``zmqwamp.close.session_revoked``, ``why``)."""
        self.metrics.revoked.labels("session").inc()
        log.info(
            "session {session} of {authid!r} from {peer} ended: {why}{detail}",
            session=session.session_id,
            authid=(session.authid or "")[:120],
            peer=session.peer,
            why=why,
            detail=f" ({detail})" if detail else "",
        )
        session.shutdown(SESSION_REVOKED, why, 1000, "session revoked")

    def _expired(self, session: Ending) -> None:
        """The session's credential (e.g. a JWT) has expired: its calls are cancelled, GOODBYE, close."""
        self._expiries.pop(session, None)
        self.metrics.revoked.labels("session").inc()
        log.info(
            "session {session} ended: the credential of {authid} from {peer} expired",
            session=session.session_id,
            authid=session.authid,
            peer=session.peer,
        )
        session.shutdown(SESSION_EXPIRED, "the session's credential has expired", 1000, "session expired")

    # -- calls in flight ------------------------------------------------------

    def call_started(self) -> None:
        self.calls_in_flight += 1

    def call_ended(self) -> None:
        self.calls_in_flight -= 1
        if not self.calls_in_flight:
            self._no_calls.reached()

    def no_calls(self) -> Deferred:
        """Fires when no call is in flight (at once if none is)."""
        return self._no_calls.wait(self.calls_in_flight)
