"""A Cred checker for JSON Web Tokens sent as the WAMP ticket (``--auth jwt:...``).

For a site that already has logins: its web app issues a short-lived signed
token for the logged-in user, the page passes it to Autobahn as the ticket
(``authmethods: ['ticket']``, ``onchallenge`` returns the token), and the bridge
verifies it without ever knowing a password.

Checked: the signature (only the configured algorithms; never ``none``), ``exp``
(required), ``aud`` (required, must match), ``iss`` (when configured), ``nbf`` and
``iat`` when present, and the token's lifetime: a token whose ``exp`` is more
than ``max_lifetime`` seconds away (default 86400, one day), or more than that
after its ``iat``, is refused.  Taken from the claims: the authid (``sub`` by
default; if the HELLO names an authid it must be the same), the role (``role``,
default ``user``) and, optionally, a list of endpoint globs the session is
limited to (``zmq_endpoints``).  The session ends when the token expires (at
``exp`` plus ``leeway``): calls in flight are cancelled and the client gets
GOODBYE ``zmqwamp.close.session_expired``; it logs in again with a new token.

Argument string: comma-separated ``key=value`` pairs::

    --auth jwt:secret_file=/etc/zmqwamp/jwt.key,audience=zmqwamp
    --auth jwt:public_key_file=/etc/zmqwamp/issuer.pem,algorithm=RS256,audience=zmqwamp,issuer=https://example.com

Keys: exactly one of ``secret_file`` / ``secret_env`` (HMAC secret, at least 32
bytes for HS256) / ``public_key_file`` (PEM); ``audience`` (required); ``issuer``;
``algorithm`` (repeatable; default HS256 for a secret, RS256 for a public key);
``leeway`` (seconds of clock skew, default 0); ``max_lifetime`` (seconds, default
86400); ``authid_claim``, ``role_claim``, ``endpoints_claim``, ``default_role``.  The secret is never
accepted inline, so that it shows neither in ``ps`` nor in logs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jwt
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from zmqwamp.auth.cred import DEFAULT_ROLE, Identity, to_bytes

log = Logger()

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
PUBLIC_KEY_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
MIN_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}  # RFC 7518 3.2: at least the hash size
DEFAULT_MAX_LIFETIME = 86400.0  # a stolen token is good for a day at most


class JwtConfigError(ValueError):
    """The ``jwt:`` argument string cannot be used (never contains the secret)."""


@implementer(ICredentialsChecker)
class JwtChecker:
    credentialInterfaces = (IUsernamePassword,)
    authprovider = "jwt"

    def __init__(
        self,
        key: Any,
        *,
        audience: str | Iterable[str],
        algorithms: Iterable[str] = ("HS256",),
        issuer: str | None = None,
        leeway: float = 0.0,
        max_lifetime: float = DEFAULT_MAX_LIFETIME,
        authid_claim: str = "sub",
        role_claim: str = "role",
        endpoints_claim: str = "zmq_endpoints",
        default_role: str = DEFAULT_ROLE,
    ) -> None:
        self.algorithms = list(algorithms)
        if not self.algorithms or any(a not in HMAC_ALGORITHMS + PUBLIC_KEY_ALGORITHMS for a in self.algorithms):
            raise JwtConfigError(f"jwt: algorithms must be among {', '.join(HMAC_ALGORITHMS + PUBLIC_KEY_ALGORITHMS)}")
        hmac_algs = [a for a in self.algorithms if a in HMAC_ALGORITHMS]
        if hmac_algs and len(hmac_algs) != len(self.algorithms):
            raise JwtConfigError("jwt: do not mix HMAC and public-key algorithms for one key")
        needed = max((MIN_SECRET_BYTES[a] for a in hmac_algs), default=0)
        if hmac_algs and len(to_bytes(key)) < needed:
            raise JwtConfigError(f"jwt: the HMAC secret must be at least {needed} bytes for {', '.join(hmac_algs)}")
        if not audience:
            raise JwtConfigError("jwt: an audience is required")
        if not max_lifetime > 0:
            raise JwtConfigError("jwt: max_lifetime must be a positive number of seconds")
        self.key = key
        self.audience = audience if isinstance(audience, str) else list(audience)
        self.issuer = issuer
        self.leeway = leeway
        self.max_lifetime = max_lifetime
        self.authid_claim = authid_claim
        self.role_claim = role_claim
        self.endpoints_claim = endpoints_claim
        self.default_role = default_role

    def _refuse(self, reason: str):
        log.info("jwt refused: {reason}", reason=reason)
        return fail(UnauthorizedLogin())

    def requestAvatarId(self, credentials):
        try:
            token = to_bytes(credentials.password).decode("ascii")
        except UnicodeDecodeError:
            return fail(UnauthorizedLogin())
        if token.count(".") != 2:
            return fail(UnauthorizedLogin())  # not a JWT (a password meant for another checker)
        required = ["exp", "aud", self.authid_claim] + (["iss"] if self.issuer else [])
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": required},
            )
        except jwt.InvalidTokenError as e:
            return self._refuse(type(e).__name__)  # the class only: messages may quote claims
        exp = float(claims["exp"])  # a number: checked by jwt.decode
        if exp - time.time() > self.max_lifetime + self.leeway:
            return self._refuse(f"exp is more than max_lifetime ({self.max_lifetime:g}s) away")
        iat = claims.get("iat")
        if isinstance(iat, (int, float)) and not isinstance(iat, bool) and exp - iat > self.max_lifetime:
            return self._refuse(f"exp - iat is more than max_lifetime ({self.max_lifetime:g}s)")
        authid = claims.get(self.authid_claim)
        if not isinstance(authid, str) or not authid:
            return self._refuse(f"claim {self.authid_claim!r} is not a non-empty string")
        asked = to_bytes(credentials.username)
        if asked and asked != authid.encode("utf-8"):
            return self._refuse(f"HELLO authid differs from claim {self.authid_claim!r}")
        role = claims.get(self.role_claim, self.default_role)
        if not isinstance(role, str) or not role:
            return self._refuse(f"claim {self.role_claim!r} is not a non-empty string")
        endpoints = claims.get(self.endpoints_claim)
        if endpoints is not None:
            if not isinstance(endpoints, list) or not all(isinstance(e, str) for e in endpoints):
                return self._refuse(f"claim {self.endpoints_claim!r} is not a list of strings")
            endpoints = tuple(endpoints)
        return succeed(Identity(authid, role, self.authprovider, endpoints, expires=exp + self.leeway))


_KEYS = {
    "secret_file",
    "secret_env",
    "public_key_file",
    "audience",
    "issuer",
    "algorithm",
    "leeway",
    "max_lifetime",
    "authid_claim",
    "role_claim",
    "endpoints_claim",
    "default_role",
}


def checker_from_argstring(argstring: str) -> JwtChecker:
    """``--auth jwt:key=value,...`` (see the module docstring)."""
    options: dict[str, list[str]] = {}
    for item in filter(None, (part.strip() for part in argstring.split(","))):
        name, sep, value = item.partition("=")
        if not sep or name not in _KEYS:
            raise JwtConfigError(f"jwt: expected key=value with key one of {', '.join(sorted(_KEYS))}; got {name!r}")
        if name != "algorithm" and name in options:
            raise JwtConfigError(f"jwt: {name} given twice")
        options.setdefault(name, []).append(value)
    one = {k: v[0] for k, v in options.items()}
    sources = [k for k in ("secret_file", "secret_env", "public_key_file") if k in one]
    if len(sources) != 1:
        raise JwtConfigError("jwt: give exactly one of secret_file=PATH, secret_env=VAR, public_key_file=PATH")
    source = sources[0]
    try:
        if source == "secret_env":
            if one["secret_env"] not in os.environ:
                raise JwtConfigError(f"jwt: environment variable {one['secret_env']} is not set")
            key: Any = os.environ[one["secret_env"]].encode("utf-8")
        else:
            key = Path(one[source]).read_bytes()
            if source == "secret_file":
                key = key.rstrip(b"\r\n")
    except OSError as e:
        raise JwtConfigError(f"jwt: cannot read {one[source]}: {e.strerror}") from None
    default_algorithm = "RS256" if source == "public_key_file" else "HS256"
    algorithms = options.get("algorithm", [default_algorithm])
    if source == "public_key_file":
        if any(a in HMAC_ALGORITHMS for a in algorithms):
            raise JwtConfigError("jwt: a public key needs a public-key algorithm (RS256, ES256, EdDSA, ...)")
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        try:
            key = load_pem_public_key(key)
        except ValueError:
            raise JwtConfigError(f"jwt: {one[source]} is not a PEM public key") from None
    elif any(a not in HMAC_ALGORITHMS for a in algorithms):
        raise JwtConfigError("jwt: a shared secret needs an HMAC algorithm (HS256, HS384, HS512)")
    if "audience" not in one:
        raise JwtConfigError("jwt: audience=AUD is required")
    try:
        leeway = float(one.get("leeway", "0"))
    except ValueError:
        raise JwtConfigError("jwt: leeway must be a number of seconds") from None
    try:
        max_lifetime = float(one.get("max_lifetime", DEFAULT_MAX_LIFETIME))
    except ValueError:
        raise JwtConfigError("jwt: max_lifetime must be a number of seconds") from None
    return JwtChecker(
        key,
        audience=one["audience"],
        algorithms=algorithms,
        issuer=one.get("issuer"),
        leeway=leeway,
        max_lifetime=max_lifetime,
        authid_claim=one.get("authid_claim", "sub"),
        role_claim=one.get("role_claim", "role"),
        endpoints_claim=one.get("endpoints_claim", "zmq_endpoints"),
        default_role=one.get("default_role", DEFAULT_ROLE),
    )


AUTH_HELP = __doc__
