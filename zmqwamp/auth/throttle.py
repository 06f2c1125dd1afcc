"""When a login may be checked: slow for a guesser, never a lock-out for the real user.

:class:`LoginThrottle` keeps failures per (address, authid), summed per address and per
authid, and hands out turns (:class:`LoginTurn`): one check at a time per line, after a
penalty that doubles with the failures, never past half the login deadline.  Addresses
that logged in as an authid before are known and skip the authid-wide penalty
(docs/auth.md, "Failed logins").  Pure logic on a reactor clock: no network.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from twisted.internet.defer import CancelledError, Deferred, DeferredLock, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from zmqwamp.peers import peer_host

log = Logger()


class TooManyLoginAttempts(Exception):
    """Refused without a check: too many attempts of this peer (or for this authid) are waiting."""


def throttle_host(peer: str) -> str:
    """The throttle's key for a peer: its address without the port (:func:`~zmqwamp.peers.peer_host`), an
    IPv4-mapped IPv6 address as the IPv4 address, and an IPv6 address as its /64, one client's usual share
    (a guesser must not get 2**64 fresh addresses there)."""
    host = peer_host(peer)
    if not host.startswith("tcp6:"):
        return host
    try:
        ip = ipaddress.IPv6Address(host[len("tcp6:") :].split("%", 1)[0])
    except ValueError:
        return host
    if ip.ipv4_mapped is not None:
        return f"tcp4:{ip.ipv4_mapped}"
    return f"tcp6:{ipaddress.IPv6Network((ip, 64), strict=False)}"


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
      checked.  Parallel guesses gain nothing over sequential ones.  An authid
      has two lines: attempts from addresses that already failed for it, and
      attempts from addresses that have not (yet), so a guesser that keeps
      failing from a few addresses does not hold up the user at a new one.
    * **Known addresses** (OWASP's "device cookies", keyed by address).  An
      (address, authid) pair that logged in within ``trust_window`` is known:
      its attempts wait only in the address's line and pay only the address's
      penalty, not the authid's, so a guesser elsewhere -- however many
      addresses it has -- cannot lock the user out of the places she logs in
      from.  At most ``max_known_per_authid`` addresses per authid and
      ``max_known`` in all are remembered, the least recently used forgotten first
      (only a right secret adds one).
    * **Never past the login deadline.**  The time an attempt spends here
      (waiting in line plus its penalty) is at most ``budget``, half the login
      deadline (``handshake_timeout``): the other half is left for the client
      (HELLO and CHALLENGE round trips, a browser's PBKDF2) and the check, so
      the right secret still gets WELCOME however many wrong ones came before.
      An attempt that would wait longer, or finds ``max_queue`` attempts already
      waiting in its line, is refused at once (:class:`TooManyLoginAttempts`)
      instead of being left to time out.  Under a penalty of the whole budget
      that means one attempt per line: the next is refused while the first waits.
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
        trust_window: float = 30 * 86400.0,
        max_known: int = 10000,
        max_known_per_authid: int = 16,
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
        self.trust_window = trust_window
        self.max_known = max_known
        self.max_known_per_authid = max_known_per_authid
        # (host, authid) -> (failures, time of the last one), oldest first
        self._pairs: dict[tuple[str, str], tuple[int, float]] = {}
        self._counts: dict[tuple[str, str], int] = {}  # ("peer", host) / ("authid", authid) -> failures
        self._lines: dict[tuple[str, str], _Line] = {}
        # (host, authid) -> time of its last login, least recent first; and how many hosts each authid has there
        self._known: dict[tuple[str, str], float] = {}
        self._known_hosts: dict[str, int] = {}

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
        """``authid`` logged in from ``host``: its failures from there no longer count, and the pair is known."""
        self._expire()
        pair = (host, authid[:AUTHID_KEY_LENGTH])
        if pair in self._pairs:
            self._forget(pair)
        if authid:
            self._remember(pair)

    # -- known (address, authid) pairs ------------------------------------------

    def known(self, host: str, authid: str) -> bool:
        """Did ``authid`` log in from ``host`` within ``trust_window``?"""
        if not authid:
            return False
        horizon = self.clock.seconds() - self.trust_window
        while self._known:
            pair, last = next(iter(self._known.items()))
            if last >= horizon:
                break
            self._unknow(pair)
        return (host, authid[:AUTHID_KEY_LENGTH]) in self._known

    def _remember(self, pair: tuple[str, str]) -> None:
        authid = pair[1]
        if pair in self._known:
            del self._known[pair]  # to the end: the most recently used
        else:
            if self._known_hosts.get(authid, 0) >= self.max_known_per_authid:
                self._unknow(next(p for p in self._known if p[1] == authid))
            self._known_hosts[authid] = self._known_hosts.get(authid, 0) + 1
        self._known[pair] = self.clock.seconds()
        while len(self._known) > self.max_known:
            self._unknow(next(iter(self._known)))

    def _unknow(self, pair: tuple[str, str]) -> None:
        del self._known[pair]
        left = self._known_hosts[pair[1]] - 1
        if left:
            self._known_hosts[pair[1]] = left
        else:
            del self._known_hosts[pair[1]]

    # -- penalties --------------------------------------------------------------

    def _penalty(self, failures: int) -> float:
        excess = failures - self.free
        if excess < 0 or self.cap <= 0:
            return 0.0
        return min(self.base * 2.0 ** min(excess, 64), self.cap)

    def delay(self, host: str, authid: str = "", known: bool | None = None) -> float:
        """Seconds an attempt for ``authid`` from ``host`` waits before it is checked (once its turn comes).

        The address's failures, and the authid's unless the pair is ``known`` (None: look it up).
        """
        self._expire()
        failures = self._counts.get(("peer", host), 0)
        if authid and not (self.known(host, authid) if known is None else known):
            failures = max(failures, self._counts.get(("authid", authid[:AUTHID_KEY_LENGTH]), 0))
        return self._penalty(failures)

    def _line_failures(self, key: tuple[str, str]) -> int:
        kind, name = key
        return self._counts.get(("authid", name) if kind == "new" else key, 0)

    # -- turns ------------------------------------------------------------------

    def turn(self, host: str, authid: str = "", wanted: Callable[[], bool] | None = None) -> Deferred:
        """Wait for this attempt's turn to be checked; fires with a :class:`LoginTurn`.

        An attempt waits in the line of its address and, unless the pair is
        :meth:`known`, in one of its authid's two lines.  Fails at once with
        :class:`TooManyLoginAttempts` if a line is full or
        it could not be checked within the budget, and with ``CancelledError``
        if ``wanted()`` (asked when its turn comes) says the session is gone.
        """
        self._expire()
        authid = authid[:AUTHID_KEY_LENGTH]
        known = self.known(host, authid)
        keys = [("peer", host)]
        if authid and not known:
            # an address that already failed for this authid waits in the authid's line, a new one in the other
            keys.append(("authid", authid) if (host, authid) in self._pairs else ("new", authid))
        now = self.clock.seconds()
        wait = self.delay(host, authid, known)
        for key in keys:
            line = self._lines.get(key)
            if line is None or not line.lock.locked:
                continue
            queued = len(line.lock.waiting)
            if queued >= self.max_queue:
                return fail(TooManyLoginAttempts(f"{queued} attempts {_whose(key)} are already waiting"))
            # no sooner than: the holder's penalty, one penalty for each attempt ahead, then its own
            ahead = self._penalty(self._line_failures(key))
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
