"""Who a session is: Twisted Cred credentials, checkers, realm and avatar.

Every login goes through a :class:`twisted.cred.portal.Portal`.  The WAMP
authentication methods map onto Cred credential interfaces:

=============  =============================  ==========================================
WAMP method    credentials                    checked by (for example)
=============  =============================  ==========================================
``ticket``     :class:`TicketCredentials`     any ``IUsernamePassword`` checker: ``memory:``,
               (``IUsernamePassword``)        ``file:``, ``unix``, ``zmqwamp-users:``, ``jwt:``
``wampcra``    :class:`WampCraCredentials`    checkers that hold the secret and accept
               (``IUsernameHashedPassword``)  ``IUsernameHashedPassword``: ``memory:``, ``file:``,
                                              ``zmqwamp-users:`` (salted)
``anonymous``  ``Anonymous``                  ``AllowAnonymousAccess``, only with ``--anonymous``
=============  =============================  ==========================================

Several checkers may serve the same interface (``--auth zmqwamp-users:... --auth
jwt:...``): they are tried in order by a :class:`CheckerChain`, first success wins.

A checker returns an avatar id: plain bytes/str (the stock checkers) or an
:class:`Identity` carrying a role, its provider and, optionally, endpoint globs
the credential is limited to (a JWT claim).  The realm turns it into an
:class:`IZmqAvatar`, which decides per session what it may reach.

Names and secrets travel as bytes (Twisted Cred's convention); :func:`to_bytes`
is the one place where str and bytes are normalised.  No function here logs or
puts a secret (password, ticket, key, signature) in an exception message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any, Iterable

from twisted.cred.checkers import ANONYMOUS, AllowAnonymousAccess, ICredentialsChecker
from twisted.cred.credentials import Anonymous, IAnonymous, IUsernameHashedPassword, IUsernamePassword
from twisted.cred.error import LoginFailed, UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import CancelledError, Deferred, DeferredLock, fail, inlineCallbacks, maybeDeferred, succeed
from twisted.internet.task import deferLater
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

from zmqwamp.endpoints import Endpoint
from zmqwamp.policy import UserRule, endpoint_matches, rules_allow

log = Logger()

DEFAULT_ROLE = "user"

# WAMP authmethod -> the Cred credentials interface that serves it
METHODS = {
    "ticket": IUsernamePassword,
    "wampcra": IUsernameHashedPassword,
    "anonymous": IAnonymous,
}
# interfaces a checker may be registered for; anonymous access is the --anonymous switch only
CHECKED_INTERFACES = (IUsernamePassword, IUsernameHashedPassword)


def to_bytes(value: Any) -> bytes:
    """Names and secrets as bytes, whatever a client or a checker handed us."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"expected str or bytes, got {type(value).__name__}")


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """Constant-time equality that does not leak the length either."""
    return hmac.compare_digest(hashlib.sha256(a).digest(), hashlib.sha256(b).digest())


# -- WAMP-CRA ---------------------------------------------------------------


def derive_key(secret: str | bytes, salt: str | bytes, iterations: int, keylen: int) -> bytes:
    """WAMP-CRA's salted key: base64 of PBKDF2-HMAC-SHA256 (what autobahn's ``derive_key`` returns)."""
    return base64.b64encode(hashlib.pbkdf2_hmac("sha256", to_bytes(secret), to_bytes(salt), iterations, keylen))


def wampcra_sign(key: str | bytes, challenge: str | bytes) -> bytes:
    """WAMP-CRA's signature: base64 of HMAC-SHA256 over the challenge, keyed with the (derived) key."""
    return base64.b64encode(hmac.new(to_bytes(key), to_bytes(challenge), hashlib.sha256).digest())


@dataclass(frozen=True)
class Salt:
    """PBKDF2 parameters sent in a salted WAMP-CRA CHALLENGE."""

    salt: str
    iterations: int
    keylen: int


class IWampCraSalts(Interface):
    """A checker whose stored secrets are PBKDF2-derived keys says how they were derived."""

    def wampcra_salt(username: bytes) -> "Salt | None | Deferred":
        """The :class:`Salt` for ``username``'s key, or None for plain WAMP-CRA.

        Should answer for unknown users too (a stable fake salt), so that a
        CHALLENGE does not tell whether an authid exists.
        """


# -- credentials ------------------------------------------------------------


@implementer(IUsernamePassword)
class TicketCredentials:
    """WAMP-Ticket: the HELLO's authid and the AUTHENTICATE's ticket."""

    def __init__(self, username: str | bytes, password: str | bytes) -> None:
        self.username = to_bytes(username)
        self.password = to_bytes(password)

    def checkPassword(self, password: str | bytes) -> bool:
        return constant_time_equal(to_bytes(password), self.password)

    def __repr__(self) -> str:
        return f"<TicketCredentials {self.username!r}>"


@implementer(IUsernameHashedPassword)
class WampCraCredentials:
    """WAMP-CRA: the authid, the challenge we sent and the client's signature over it.

    ``checkPassword(secret)`` is what makes stock checkers that hold the secret
    (``memory:``, ``file:``) verify a signature without the secret crossing the
    wire.  ``secret`` is the plain secret or, for salted WAMP-CRA, the derived key.
    """

    def __init__(self, username: str | bytes, challenge: str | bytes, signature: str | bytes) -> None:
        self.username = to_bytes(username)
        self.challenge = to_bytes(challenge)
        self.signature = to_bytes(signature).strip()

    def checkPassword(self, password: str | bytes) -> bool:
        return constant_time_equal(wampcra_sign(password, self.challenge), self.signature)

    def __repr__(self) -> str:
        return f"<WampCraCredentials {self.username!r}>"


# -- identities and checkers ------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """What a checker may return as avatar id, instead of a bare username."""

    authid: str
    authrole: str = DEFAULT_ROLE
    authprovider: str = ""
    endpoints: tuple[str, ...] | None = None  # globs this credential is limited to (e.g. a JWT claim)
    expires: float | None = None  # wall-clock time (time.time()) when the credential ends, and its sessions with it


# names for the stock checkers, shown as WELCOME's authprovider
_PROVIDERS = {
    "InMemoryUsernamePasswordDatabaseDontUse": "memory",
    "FilePasswordDB": "file",
    "UNIXChecker": "unix",
}


def provider_name(checker: ICredentialsChecker) -> str:
    return getattr(checker, "authprovider", None) or _PROVIDERS.get(type(checker).__name__, type(checker).__name__)


def as_identity(avatar_id: Any, provider: str) -> Identity:
    if isinstance(avatar_id, Identity):
        return avatar_id if avatar_id.authprovider else replace(avatar_id, authprovider=provider)
    if isinstance(avatar_id, bytes):
        avatar_id = avatar_id.decode("utf-8", "replace")
    return Identity(str(avatar_id), DEFAULT_ROLE, provider)


@implementer(ICredentialsChecker, IWampCraSalts)
class CheckerChain:
    """Several checkers for the same credentials, tried in order; the first that accepts wins.

    (A Portal keeps one checker per interface: without this, ``--auth a --auth b``
    would silently keep only ``b``.)
    """

    def __init__(self, checkers: Iterable[ICredentialsChecker]) -> None:
        self.checkers = list(checkers)
        seen: list = []
        for checker in self.checkers:
            for iface in checker.credentialInterfaces:
                if iface not in seen:
                    seen.append(iface)
        self.credentialInterfaces = tuple(seen)

    @inlineCallbacks
    def requestAvatarId(self, credentials):
        for checker in self.checkers:
            if not any(iface.providedBy(credentials) for iface in checker.credentialInterfaces):
                continue
            try:
                avatar_id = yield maybeDeferred(checker.requestAvatarId, credentials)
            except LoginFailed:
                continue
            return as_identity(avatar_id, provider_name(checker))
        raise UnauthorizedLogin()

    @inlineCallbacks
    def wampcra_salt(self, username: bytes):
        for checker in self.checkers:
            if IWampCraSalts.providedBy(checker):
                salt = yield maybeDeferred(checker.wampcra_salt, username)
                if salt is not None:
                    return salt
        return None


def _normalise_checker(checker: ICredentialsChecker) -> None:
    """``strcred``'s ``memory:`` stores str names and passwords; Cred credentials carry bytes."""
    users = getattr(checker, "users", None)
    if type(checker).__name__ == "InMemoryUsernamePasswordDatabaseDontUse" and isinstance(users, dict):
        checker.users = {to_bytes(name): to_bytes(password) for name, password in users.items()}


# -- avatar and realm ------------------------------------------------------


class IZmqAvatar(Interface):
    authid = Attribute("WAMP authid (str)")
    authrole = Attribute("WAMP authrole (str)")
    authmethod = Attribute("WAMP authentication method used (str)")
    authprovider = Attribute("who vouched for the identity (str)")
    expires = Attribute("wall-clock time (time.time()) at which the session ends, or None (optional)")

    def zmq_allowed(action: str, endpoint: Endpoint, options: dict[str, Any]) -> "bool | Deferred[bool]":
        """May this session do ``action`` ('call' or 'subscribe') on ``endpoint``?"""


@implementer(IZmqAvatar)
class SessionAvatar:
    """The default avatar: an identity and the per-user rules of the config file.

    With no rules configured, every endpoint the global ``--allow`` rules allow
    is reachable.  With rules, a session reaches only what a rule for its authid
    or role allows.  ``endpoints`` (from the credential, e.g. a JWT claim)
    narrows further.  ``expires`` (from the credential, e.g. a JWT's ``exp``)
    ends the session.
    """

    def __init__(
        self,
        authid: str,
        authrole: str,
        authmethod: str,
        authprovider: str,
        rules: Iterable[UserRule] = (),
        endpoints: Iterable[str] | None = None,
        expires: float | None = None,
    ) -> None:
        self.authid = authid
        self.authrole = authrole
        self.authmethod = authmethod
        self.authprovider = authprovider
        self._rulebook = rules if isinstance(rules, RuleBook) else RuleBook(rules)
        self.endpoints = None if endpoints is None else tuple(endpoints)
        self.expires = expires

    @property
    def rules(self) -> tuple[UserRule, ...]:
        return self._rulebook.rules

    def zmq_allowed(self, action: str, endpoint: Endpoint, options: dict[str, Any]) -> bool:
        if self.endpoints is not None and not any(
            endpoint_matches(p, endpoint, self.authid, self.authrole) for p in self.endpoints
        ):
            return False
        if self.rules:
            return rules_allow(self.rules, self.authid, self.authrole, action, endpoint, options.get("filter"))
        return True


class RuleBook:
    """The config file's per-user rules, shared by every avatar and replaced in
    place on reload (SIGHUP), so open sessions follow the new rules."""

    def __init__(self, rules: Iterable[UserRule] = ()) -> None:
        self.rules = tuple(rules)

    def replace(self, rules: Iterable[UserRule]) -> None:
        """The new rules, for every avatar at once (a reload)."""
        self.rules = tuple(rules)


@implementer(IRealm)
class BridgeRealm:
    def __init__(self, rules: "Iterable[UserRule] | RuleBook" = ()) -> None:
        self.rulebook = rules if isinstance(rules, RuleBook) else RuleBook(rules)

    def requestAvatar(self, avatarId, mind, *interfaces):
        if IZmqAvatar not in interfaces:
            raise NotImplementedError("zmqwamp only provides IZmqAvatar")
        method = mind or "anonymous"
        if avatarId is ANONYMOUS:
            identity = Identity("anonymous", "anonymous", "anonymous")
        else:
            identity = as_identity(avatarId, "cred")
        avatar = SessionAvatar(
            identity.authid, identity.authrole, method, identity.authprovider, self.rulebook, identity.endpoints,
            identity.expires,
        )
        return IZmqAvatar, avatar, lambda: None


def build_portal(
    checkers: Iterable[ICredentialsChecker], anonymous: bool, rules: "Iterable[UserRule] | RuleBook" = ()
) -> Portal:
    """A portal serving ticket/wampcra with ``checkers`` (in order), and anonymous if asked.

    Pass a :class:`RuleBook` as ``rules`` to replace them later (reload).
    """
    portal = Portal(BridgeRealm(rules))
    chains: dict = {}
    for checker in checkers:
        usable = [i for i in checker.credentialInterfaces if i in CHECKED_INTERFACES]
        if not usable:
            raise ValueError(
                f"{provider_name(checker)} checks none of IUsernamePassword, IUsernameHashedPassword"
                " (anonymous access is the 'anonymous' option)"
            )
        _normalise_checker(checker)
        for iface in usable:
            chains.setdefault(iface, []).append(checker)
    cra = chains.get(IUsernameHashedPassword, [])
    plain = [provider_name(c) for c in cra if not IWampCraSalts.providedBy(c)]
    if plain and len(plain) < len(cra):
        log.warn(
            "wampcra: a salted checker answers every authid, so users of {plain} can log in with ticket only",
            plain=", ".join(plain),
        )
    for iface, chain in chains.items():
        portal.registerChecker(CheckerChain(chain), iface)
    if anonymous:
        portal.registerChecker(AllowAnonymousAccess())
    return portal


# -- the login conversation ------------------------------------------------


def enabled_methods(portal: Portal) -> list[str]:
    return [name for name, iface in METHODS.items() if iface in portal.checkers]


def select_method(portal: Portal, offered: Iterable[Any]) -> str | None:
    """The first WAMP authmethod the client offered that this portal serves."""
    for method in offered:
        if isinstance(method, str) and METHODS.get(method) in portal.checkers:
            return method
    return None


@dataclass
class Challenge:
    """A CHALLENGE sent and the state needed to check its AUTHENTICATE."""

    method: str
    authid: str
    extra: dict
    challenge: str = ""  # wampcra: the string the client signs


@inlineCallbacks
def make_challenge(portal: Portal, method: str, authid: str | None):
    """The CHALLENGE for ``method`` ('ticket' or 'wampcra')."""
    authid = authid if isinstance(authid, str) else ""
    if method == "ticket":
        return Challenge("ticket", authid, {})
    if method != "wampcra":
        raise ValueError(f"no challenge for authmethod {method!r}")
    checker = portal.checkers[IUsernameHashedPassword]
    salt = None
    if IWampCraSalts.providedBy(checker):
        salt = yield maybeDeferred(checker.wampcra_salt, to_bytes(authid))
    challenge = json.dumps(
        {
            "authid": authid,
            "authmethod": "wampcra",
            "authprovider": "zmqwamp",
            "nonce": secrets.token_urlsafe(24),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        separators=(",", ":"),
    )
    extra: dict[str, Any] = {"challenge": challenge}
    if salt is not None:
        extra.update(salt=salt.salt, iterations=salt.iterations, keylen=salt.keylen)
    return Challenge("wampcra", authid, extra, challenge)


def check_response(portal: Portal, challenge: Challenge, signature: str | bytes) -> Deferred:
    """Check an AUTHENTICATE against its CHALLENGE; fires with an :class:`IZmqAvatar`."""
    if challenge.method == "ticket":
        credentials = TicketCredentials(challenge.authid, signature)
    else:
        credentials = WampCraCredentials(challenge.authid, challenge.challenge, signature)
    return portal.login(credentials, challenge.method, IZmqAvatar).addCallback(lambda result: result[1])


def login_anonymous(portal: Portal) -> Deferred:
    """Log in without credentials; fails unless anonymous access is enabled."""
    return portal.login(Anonymous(), "anonymous", IZmqAvatar)


# -- throttling ----------------------------------------------------------------


def peer_host(peer: str) -> str:
    """The address part of an autobahn peer string (``tcp4:1.2.3.4:5678`` -> ``tcp4:1.2.3.4``)."""
    if peer.startswith(("tcp4:", "tcp6:", "tcp:")):
        return peer.rsplit(":", 1)[0]
    return peer


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

    def __init__(self, throttle: "LoginThrottle", host: str, authid: str, lines: list) -> None:
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
        clock,
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

    def turn(self, host: str, authid: str = "", wanted=None) -> Deferred:
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
                return fail(TooManyLoginAttempts(f"attempts {_whose(key)} could not be checked within {self.budget:g}s"))
        lines = []
        for key in keys:
            line = self._lines.get(key)
            if line is None:
                line = self._lines[key] = _Line()
            lines.append((key, line))
        d = lines[0][1].lock.acquire()
        for _, line in lines[1:]:
            d.addCallback(lambda _, lock=line.lock: lock.acquire())
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
            raise TooManyLoginAttempts(f"waited {now - arrived:.1f}s in line, then {wait:g}s more would pass {self.budget:g}s")
        for _, line in lines:
            line.ready_at = now + wait
        if wait:
            log.info(
                "login from {peer} for {authid!r} delayed {wait}s after repeated failures",
                peer=host, authid=authid[:80], wait=wait,
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


def _whose(key: tuple[str, str]) -> str:
    return "from this address" if key[0] == "peer" else "for this authid"
