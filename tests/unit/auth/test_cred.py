"""zmqwamp.auth.cred: credentials, checkers (one set of cases for every checker), the portal and its realm, without a
reactor or sockets.  The login conversation through them: test_login.py.

Client-side values are computed with autobahn's own ``compute_wcs`` / ``derive_key``,
so these tests also pin our WAMP-CRA to what the stock clients do.
"""

from __future__ import annotations

import pytest
from autobahn.wamp import auth as client_auth
from twisted.cred import strcred
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from zope.interface import implementer

from zmqwamp.auth.cred import (
    Challenge,
    CheckerChain,
    Identity,
    TicketCredentials,
    WampCraCredentials,
    build_portal,
    check_response,
    enabled_methods,
    make_challenge,
    select_method,
    wampcra_sign,
)
from zmqwamp.auth.users import UsersFileChecker, make_record, write_users
from zmqwamp.testing import fired

from memory import LONE, client_signature, sync


def login(portal, method: str, authid: str, secret: str):
    challenge = fired(make_challenge(portal, method, authid))
    return check_response(portal, challenge, client_signature(challenge, secret))


# -- credentials ---------------------------------------------------------------


def test_ticket_credentials_are_bytes_and_compare_str_or_bytes():
    """TicketCredentials normalises to bytes and accepts a stored secret as str or bytes."""
    c = TicketCredentials("alice", "s3cret")
    assert (c.username, c.password) == (b"alice", b"s3cret")
    assert c.checkPassword("s3cret") and c.checkPassword(b"s3cret")
    assert not c.checkPassword("s3cre") and not c.checkPassword("s3cret ")


def test_wampcra_signature_matches_autobahn():
    """Our signature is autobahn's compute_wcs, for a plain secret and a derived key."""
    challenge = '{"nonce":"x"}'
    assert wampcra_sign("secret", challenge) == client_auth.compute_wcs(b"secret", challenge)
    key = client_auth.derive_key("secret", "salt", 1000, 32)
    assert wampcra_sign(key, challenge) == client_auth.compute_wcs(key, challenge)


def test_wampcra_credentials_check_against_the_secret():
    """checkPassword(secret) is true only for the signature of that challenge with that secret."""
    sig = client_auth.compute_wcs(b"secret", "chal").decode()
    assert WampCraCredentials("alice", "chal", sig).checkPassword("secret")
    assert WampCraCredentials("alice", "chal", sig + "\n").checkPassword(b"secret")  # whitespace tolerated
    assert not WampCraCredentials("alice", "chal", sig).checkPassword("other")
    assert not WampCraCredentials("alice", "other challenge", sig).checkPassword("secret")


def test_credentials_repr_has_no_secret():
    """Neither credentials' repr shows the ticket or the signature."""
    assert "s3cret" not in repr(TicketCredentials("alice", "s3cret"))
    assert "SIGNATURE" not in repr(WampCraCredentials("alice", "c", "SIGNATURE"))


# -- one set of good/bad cases for every checker ------------------------------------


class CheckerCases:
    """Good and bad credentials, the same for every checker knowing alice/s3cret-alice and bob/pw-bob."""

    provider = ""
    serves_wampcra = True
    salted = False

    def make_checker(self, tmp_path) -> ICredentialsChecker:
        raise NotImplementedError

    @pytest.fixture
    def portal(self, tmp_path):
        return build_portal([self.make_checker(tmp_path)], anonymous=False)

    def test_methods(self, portal):
        """The portal serves ticket, and wampcra when the checker holds secrets; never anonymous."""
        assert enabled_methods(portal) == (["ticket", "wampcra"] if self.serves_wampcra else ["ticket"])

    def test_ticket_accepted(self, portal):
        """The right ticket logs in, with WELCOME's authid, authmethod and authprovider."""
        avatar = fired(login(portal, "ticket", "alice", "s3cret-alice"))
        assert (avatar.authid, avatar.authmethod, avatar.authprovider) == ("alice", "ticket", self.provider)
        assert fired(login(portal, "ticket", "bob", "pw-bob")).authid == "bob"

    @pytest.mark.parametrize("authid, secret", [("alice", "wrong-guess"), ("alice", "pw-bob"), ("nobody", "s3cret-alice"), ("", ""), ("alice", "")])
    def test_ticket_refused(self, portal, authid, secret):
        """A wrong ticket, another user's, an unknown or empty authid: UnauthorizedLogin."""
        with pytest.raises(UnauthorizedLogin):
            fired(login(portal, "ticket", authid, secret))

    def test_wampcra_accepted(self, portal):
        """The signature made with the right secret logs in; salted iff the checker stores derived keys."""
        if not self.serves_wampcra:
            pytest.skip("this checker does not hold secrets")
        challenge = fired(make_challenge(portal, "wampcra", "alice"))
        assert ("salt" in challenge.extra) == self.salted
        avatar = fired(check_response(portal, challenge, client_signature(challenge, "s3cret-alice")))
        assert (avatar.authid, avatar.authmethod, avatar.authprovider) == ("alice", "wampcra", self.provider)

    @pytest.mark.parametrize("authid, secret", [("alice", "wrong-guess"), ("alice", "pw-bob"), ("nobody", "s3cret-alice")])
    def test_wampcra_refused(self, portal, authid, secret):
        """A signature made with a wrong secret, or for an unknown authid, is refused."""
        if not self.serves_wampcra:
            pytest.skip("this checker does not hold secrets")
        with pytest.raises(UnauthorizedLogin):
            fired(login(portal, "wampcra", authid, secret))

    def test_wampcra_replayed_signature_refused(self, portal):
        """A signature for one challenge does not answer another."""
        if not self.serves_wampcra:
            pytest.skip("this checker does not hold secrets")
        first = fired(make_challenge(portal, "wampcra", "alice"))
        second = fired(make_challenge(portal, "wampcra", "alice"))
        assert first.challenge != second.challenge
        with pytest.raises(UnauthorizedLogin):
            fired(check_response(portal, second, client_signature(first, "s3cret-alice")))


class TestMemoryChecker(CheckerCases):
    """strcred ``memory:`` stores str; the portal normalises it."""

    provider = "memory"

    def make_checker(self, tmp_path):
        return strcred.makeChecker("memory:alice:s3cret-alice:bob:pw-bob")


class TestFileChecker(CheckerCases):
    """strcred ``file:`` (FilePasswordDB) reads bytes."""

    provider = "file"

    def make_checker(self, tmp_path):
        path = tmp_path / "passwd"
        path.write_text("alice:s3cret-alice\nbob:pw-bob\n")
        return strcred.makeChecker(f"file:{path}")


class TestUsersFileChecker(CheckerCases):
    """Our ``zmqwamp-users:`` file: salted PBKDF2 keys, salted WAMP-CRA."""

    provider = "zmqwamp-users"
    salted = True

    def make_checker(self, tmp_path):
        path = tmp_path / "users"
        write_users(path, {u: make_record(u, pw, iterations=1000) for u, pw in [("alice", "s3cret-alice"), ("bob", "pw-bob")]})
        return UsersFileChecker(path, run=sync)


class TestChain(CheckerCases):
    """memory: for alice then the users file for bob: both served through one chain."""

    provider = None  # set per user below

    def make_checker(self, tmp_path):
        raise AssertionError("unused")

    @pytest.fixture
    def portal(self, tmp_path):
        path = tmp_path / "users"
        write_users(path, {"bob": make_record("bob", "pw-bob", iterations=1000)})
        return build_portal([strcred.makeChecker("memory:alice:s3cret-alice"), UsersFileChecker(path, run=sync)], anonymous=False)

    def test_ticket_accepted(self, portal):
        """Each user is accepted by the checker that knows them, which is the authprovider."""
        assert fired(login(portal, "ticket", "alice", "s3cret-alice")).authprovider == "memory"
        assert fired(login(portal, "ticket", "bob", "pw-bob")).authprovider == "zmqwamp-users"

    def test_wampcra_accepted(self, portal):
        """alice (plain secret in memory:) needs plain WAMP-CRA: not served once a salted checker is chained."""
        challenge = fired(make_challenge(portal, "wampcra", "bob"))
        assert "salt" in challenge.extra
        assert fired(check_response(portal, challenge, client_signature(challenge, "pw-bob"))).authid == "bob"


# -- portal, realm, method selection -------------------------------------------------


def test_method_selection_follows_the_client_and_the_portal():
    """The first offered method the portal serves wins; anonymous only when enabled."""
    portal = build_portal([strcred.makeChecker("memory:a:b")], anonymous=False)
    assert select_method(portal, ["cryptosign", "wampcra", "ticket"]) == "wampcra"
    assert select_method(portal, ["anonymous"]) is None
    assert select_method(portal, [42, None]) is None
    assert select_method(build_portal([], anonymous=True), ["ticket", "anonymous"]) == "anonymous"
    assert enabled_methods(build_portal([], anonymous=False)) == []


def test_anonymous_checker_is_not_a_way_in():
    """Handing AllowAnonymousAccess as a checker is an error: anonymous access is the 'anonymous' option."""
    from twisted.cred.checkers import AllowAnonymousAccess

    with pytest.raises(ValueError, match="anonymous"):
        build_portal([AllowAnonymousAccess()], anonymous=False)


def test_identity_from_a_checker_sets_role_and_endpoints():
    """A checker returning an Identity sets WELCOME's authrole, its provider, and narrows endpoints."""

    @implementer(ICredentialsChecker)
    class Staff:
        credentialInterfaces = (IUsernamePassword,)

        def requestAvatarId(self, credentials):
            return Identity(credentials.username.decode(), "staff", "hr-db", ("tcp://10.0.0.1:*",))

    avatar = fired(login(build_portal([Staff()], anonymous=False), "ticket", "eve", "x"))
    assert (avatar.authid, avatar.authrole, avatar.authprovider, avatar.endpoints) == ("eve", "staff", "hr-db", ("tcp://10.0.0.1:*",))


def test_chain_falls_through_refusals_but_not_errors():
    """UnauthorizedLogin moves on to the next checker; an unexpected error fails the login."""

    @implementer(ICredentialsChecker)
    class Refuses:
        credentialInterfaces = (IUsernamePassword,)

        def requestAvatarId(self, credentials):
            raise UnauthorizedLogin()

    @implementer(ICredentialsChecker)
    class Breaks:
        credentialInterfaces = (IUsernamePassword,)

        def requestAvatarId(self, credentials):
            raise RuntimeError("database down")

    good = strcred.makeChecker("memory:a:b")
    from zmqwamp.auth.cred import _normalise_checker

    _normalise_checker(good)
    creds = TicketCredentials("a", "b")
    assert fired(CheckerChain([Refuses(), good]).requestAvatarId(creds)).authid == "a"
    with pytest.raises(RuntimeError):
        fired(CheckerChain([Breaks(), good]).requestAvatarId(creds))


# -- issue 21, item 6: values UTF-8 cannot carry ----------------------------------------------------------------



def test_check_response_refuses_a_lone_surrogate_as_a_wrong_secret():
    """In the authid or the ticket/signature: UnauthorizedLogin, like any wrong secret (before: UnicodeEncodeError
    from to_bytes, logged as a checker failure with a traceback)."""
    portal = build_portal([strcred.makeChecker("memory:bob:pw-bob")], anonymous=False)
    for challenge, signature in [
        (Challenge("ticket", "bob", {}), "pw" + LONE),
        (Challenge("ticket", LONE, {}), "pw-bob"),
        (fired(make_challenge(portal, "wampcra", "bob")), LONE),
    ]:
        with pytest.raises(UnauthorizedLogin):
            fired(check_response(portal, challenge, signature))
