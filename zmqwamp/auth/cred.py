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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from twisted.cred.checkers import ANONYMOUS, AllowAnonymousAccess, ICredentialsChecker
from twisted.cred.credentials import Anonymous, IAnonymous, IUsernameHashedPassword, IUsernamePassword
from twisted.cred.error import LoginFailed, UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, fail, inlineCallbacks, maybeDeferred
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

from zmqwamp.auth.policy import UserRule, endpoint_matches, rules_allow
from zmqwamp.upstream.endpoints import Endpoint

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


def is_text(value: Any) -> bool:
    """Can ``value``, a str, become UTF-8?  Not with a lone surrogate, which JSON's ``"\\ud800"`` escape carries
    (msgpack and CBOR refuse it when decoding)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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

    def wampcra_salt(username: bytes) -> Salt | None | Deferred:
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


@dataclass(frozen=True)
class IdentityChange:
    """An identity a checker vouched for has changed or gone: the sessions it opened end.

    ``why`` is told to the client (GOODBYE's message) and logged; ``detail`` is only logged.
    """

    authid: str
    why: str
    detail: str = ""


class IIdentitySource(Interface):
    """A checker whose identities can change while their sessions are open (a users file).

    The bridge asks it to :meth:`refresh` every second and on SIGHUP; it tells the bridge what changed through
    the callbacks given to :meth:`watch`, and the bridge ends the open sessions of those authids that it
    vouched for (same ``authprovider``).
    """

    def identities() -> Iterable[tuple[str, str]]:
        """The (authid, role) pairs it accepts now."""

    def refresh() -> None:
        """Look for changes now; call the watchers with a list of :class:`IdentityChange` if there are some."""

    def watch(callback: Callable[[list[IdentityChange]], None]) -> None:
        """Call ``callback`` with the changes, each time there are some."""


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
        checker.users = {to_bytes(name): to_bytes(password) for name, password in users.items()}  # type: ignore[attr-defined]


# -- avatar and realm ------------------------------------------------------


class IZmqAvatar(Interface):
    authid = Attribute("WAMP authid (str)")
    authrole = Attribute("WAMP authrole (str)")
    authmethod = Attribute("WAMP authentication method used (str)")
    authprovider = Attribute("who vouched for the identity (str)")
    expires = Attribute("wall-clock time (time.time()) at which the session ends, or None (optional)")

    def zmq_allowed(action: str, endpoint: Endpoint, options: dict[str, Any]) -> bool | Deferred[bool]:
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
        rules: Iterable[UserRule] | RuleBook = (),
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
    def __init__(self, rules: Iterable[UserRule] | RuleBook = ()) -> None:
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
            identity.authid,
            identity.authrole,
            method,
            identity.authprovider,
            self.rulebook,
            identity.endpoints,
            identity.expires,
        )
        return IZmqAvatar, avatar, lambda: None


def build_portal(
    checkers: Iterable[ICredentialsChecker], anonymous: bool, rules: Iterable[UserRule] | RuleBook = ()
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
    set_anonymous(portal, anonymous)
    return portal


def set_anonymous(portal: Portal, enabled: bool) -> None:
    """Serve the ``anonymous`` authmethod, or stop serving it (a reload)."""
    if enabled:
        portal.registerChecker(AllowAnonymousAccess())
    else:
        portal.checkers.pop(IAnonymous, None)


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
    credentials: TicketCredentials | WampCraCredentials
    if not all(is_text(value) for value in (challenge.authid, signature) if isinstance(value, str)):
        return fail(UnauthorizedLogin("the authid or the signature is not valid Unicode text"))
    if challenge.method == "ticket":
        credentials = TicketCredentials(challenge.authid, signature)
    else:
        credentials = WampCraCredentials(challenge.authid, challenge.challenge, signature)
    return portal.login(credentials, challenge.method, IZmqAvatar).addCallback(lambda result: result[1])


def login_anonymous(portal: Portal) -> Deferred:
    """Log in without credentials; fails unless anonymous access is enabled."""
    return portal.login(Anonymous(), "anonymous", IZmqAvatar)
