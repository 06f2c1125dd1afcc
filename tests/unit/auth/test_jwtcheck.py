"""The ``jwt:`` checker: a token from an existing web login, sent as the WAMP ticket."""

from __future__ import annotations

import time

import jwt
import pytest
from twisted.cred import strcred
from twisted.cred.error import UnauthorizedLogin

from zmqwamp.auth.cred import TicketCredentials
from zmqwamp.auth.jwtcheck import JwtChecker, JwtConfigError, checker_from_argstring
from zmqwamp.testing import fired

SECRET = "a-shared-secret-of-at-least-32-bytes!"


def token(claims=None, key=SECRET, algorithm="HS256", **overrides):
    body = {"sub": "alice", "aud": "zmqwamp", "exp": int(time.time()) + 60, **(claims or {}), **overrides}
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key, algorithm=algorithm)


@pytest.fixture
def checker(tmp_path):
    path = tmp_path / "jwt.key"
    path.write_text(SECRET + "\n")
    return checker_from_argstring(f"secret_file={path},audience=zmqwamp")


def check(checker, ticket, authid=""):
    return fired(checker.requestAvatarId(TicketCredentials(authid, ticket)))


def test_valid_token(checker):
    """A valid token logs in as its sub, with the default role and no endpoint limit."""
    identity = check(checker, token())
    assert (identity.authid, identity.authrole, identity.authprovider, identity.endpoints) == ("alice", "user", "jwt", None)


def test_role_and_endpoints_from_claims(checker):
    """role and zmq_endpoints claims become WELCOME's authrole and the session's endpoint limit."""
    identity = check(checker, token({"role": "staff", "zmq_endpoints": ["tcp://127.0.0.1:*"]}), authid="alice")
    assert identity.authrole == "staff" and identity.endpoints == ("tcp://127.0.0.1:*",)


@pytest.mark.parametrize(
    "ticket",
    [
        pytest.param(lambda: token(exp=int(time.time()) - 5), id="expired"),
        pytest.param(lambda: token(key="another-secret-that-is-32-bytes-long"), id="wrong signature"),
        pytest.param(lambda: token(aud="other-app"), id="wrong audience"),
        pytest.param(lambda: token(aud=None), id="no audience"),
        pytest.param(lambda: token(exp=None), id="no expiry"),
        pytest.param(lambda: token(sub=None), id="no subject"),
        pytest.param(lambda: token(nbf=int(time.time()) + 60), id="not yet valid"),
        pytest.param(lambda: token(key=SECRET * 2, algorithm="HS512"), id="algorithm not allowed"),
        pytest.param(lambda: jwt.encode({"sub": "alice", "aud": "zmqwamp", "exp": int(time.time()) + 60}, None, algorithm="none"), id="alg none"),
        pytest.param(lambda: token({"role": ["a"]}), id="role not a string"),
        pytest.param(lambda: token({"zmq_endpoints": "tcp://*"}), id="endpoints not a list"),
        pytest.param(lambda: "not-a-jwt", id="a password"),
        pytest.param(lambda: "a.b.c", id="garbage"),
    ],
)
def test_refused(checker, ticket):
    """Anything but a valid, unexpired, correctly signed token for our audience is refused."""
    with pytest.raises(UnauthorizedLogin):
        check(checker, ticket())


def test_hello_authid_must_match(checker):
    """If the HELLO names an authid, it must be the token's subject."""
    with pytest.raises(UnauthorizedLogin):
        check(checker, token(), authid="bob")


def test_leeway_and_custom_claims(tmp_path, monkeypatch):
    """secret_env, leeway, issuer and claim names are configurable."""
    monkeypatch.setenv("ZW_JWT", SECRET)
    c = checker_from_argstring("secret_env=ZW_JWT,audience=a,issuer=https://login.example,leeway=30,authid_claim=email,role_claim=grp")
    good = token({"email": "e@x", "grp": "ops", "iss": "https://login.example"}, aud="a", exp=int(time.time()) - 10)
    identity = check(c, good)
    assert (identity.authid, identity.authrole) == ("e@x", "ops")
    with pytest.raises(UnauthorizedLogin):
        check(c, token({"email": "e@x"}, aud="a"))  # no issuer


def test_public_key(tmp_path):
    """public_key_file with RS256: the issuer's private key signs, the bridge only has the public key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "pub.pem").write_bytes(pem)
    c = checker_from_argstring(f"public_key_file={tmp_path / 'pub.pem'},audience=zmqwamp")
    assert check(c, token(key=private, algorithm="RS256")).authid == "alice"
    with pytest.raises(UnauthorizedLogin):  # HS256 signed with the public key as secret: the classic confusion
        check(c, jwt.api_jws.PyJWS().encode(b'{"sub":"alice"}', b"x" * 32, algorithm="HS256"))


@pytest.mark.parametrize(
    "argstring, message",
    [
        ("audience=a", "exactly one of secret_file"),
        ("secret=abc,audience=a", "got 'secret'"),
        ("secret_env=NOPE_NOT_SET,audience=a", "NOPE_NOT_SET is not set"),
        ("secret_file=/nonexistent/k,audience=a", "cannot read /nonexistent/k"),
        ("secret_file={short},audience=a", "at least 32 bytes"),
        ("secret_file={key}", "audience=AUD is required"),
        ("secret_file={key},audience=a,algorithm=RS256", "needs an HMAC algorithm"),
        ("secret_file={key},audience=a,algorithm=none", "needs an HMAC algorithm"),
        ("public_key_file={key},audience=a", "not a PEM public key"),
        ("secret_file={key},audience=a,leeway=soon", "leeway must be a number"),
        ("secret_file={key},audience=a,audience=b", "audience given twice"),
    ],
)
def test_argstring_errors(tmp_path, argstring, message):
    """Configuration mistakes are reported clearly, and never quote the secret."""
    (tmp_path / "k").write_text(SECRET)
    (tmp_path / "short").write_text("tooshort")
    with pytest.raises(JwtConfigError) as e:
        checker_from_argstring(argstring.format(key=tmp_path / "k", short=tmp_path / "short"))
    assert message in str(e.value) and SECRET not in str(e.value)


def test_plugin_is_found_by_strcred(tmp_path):
    """strcred finds the jwt plugin: --auth jwt:... works."""
    (tmp_path / "k").write_text(SECRET)
    assert isinstance(strcred.makeChecker(f"jwt:secret_file={tmp_path / 'k'},audience=x"), JwtChecker)


def test_jwt_identity_carries_the_expiry_and_lifetime_is_capped():
    """The identity expires at exp (+ leeway); tokens with exp more than max_lifetime away, or more than
    max_lifetime after their iat, are refused."""
    checker = JwtChecker(SECRET.encode(), audience="zmqwamp", leeway=2, max_lifetime=3600)
    exp = int(time.time()) + 60
    identity = fired(checker.requestAvatarId(TicketCredentials("", token(exp=exp))))
    assert identity.expires == exp + 2
    now = int(time.time())
    for refused in (token(exp=now + 100 * 365 * 86400), token(exp=now + 3700), token(iat=now - 7200, exp=now + 60)):
        with pytest.raises(Exception) as e:
            fired(checker.requestAvatarId(TicketCredentials("", refused)))
        assert type(e.value).__name__ == "UnauthorizedLogin"
    assert JwtChecker(SECRET.encode(), audience="a").max_lifetime == 86400


def test_jwt_max_lifetime_argument(tmp_path):
    """The jwt: checker's max_lifetime argument is read; one not positive or not a number is refused, naming it."""
    key = tmp_path / "k"
    key.write_text(SECRET)
    assert checker_from_argstring(f"secret_file={key},audience=a,max_lifetime=600").max_lifetime == 600
    for bad in ("0", "-1", "soon"):
        with pytest.raises(JwtConfigError, match="max_lifetime"):
            checker_from_argstring(f"secret_file={key},audience=a,max_lifetime={bad}")
