"""Credentials, checkers, portal and the login conversation, without a reactor or sockets.

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
from twisted.internet.task import Clock
from twisted.logger import formatEvent
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
from zmqwamp.auth.throttle import LoginThrottle
from zmqwamp.auth.users import UsersFileChecker, make_record, write_users
from zmqwamp.peers import peer_host
from zmqwamp.testing import fired, make_world, new_session, pending, received, send

from memory import sync

SECRETS = ["s3cret-alice", "pw-bob", "wrong-guess"]


def client_signature(challenge: Challenge, secret: str) -> str:
    """What autobahn-python or autobahn-js sends for this CHALLENGE."""
    if challenge.method == "ticket":
        return secret
    key = secret
    extra = challenge.extra
    if "salt" in extra:
        key = client_auth.derive_key(secret, extra["salt"], extra["iterations"], extra["keylen"])
    return client_auth.compute_wcs(key, extra["challenge"]).decode("ascii")


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


def test_peer_host():
    """Throttling groups by address, not by source port."""
    assert peer_host("tcp4:10.1.2.3:5555") == "tcp4:10.1.2.3"
    assert peer_host("tcp6:::1:5555") == "tcp6:::1"
    assert peer_host("unix:/tmp/s") == "unix:/tmp/s"


# -- throttle ------------------------------------------------------------------


def test_throttle_grows_per_address_and_expires():
    """Free failures, then 1, 2, 4 ... seconds up to the cap; per address; forgotten after the window."""
    clock = Clock()
    t = LoginThrottle(clock, floor=0.5, cap=5.0, free=2, base=1.0, window=60.0, login_timeout=20.0)
    delays = []
    for _ in range(7):
        delays.append(t.delay("a"))
        t.failed("a")
    assert delays == [0, 0, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert t.delay("b") == 0
    clock.advance(61)
    assert t.delay("a") == 0


def test_throttle_is_bounded():
    """The failure table never holds more than max_records (peer, authid) pairs; the oldest go first."""
    t = LoginThrottle(Clock(), max_records=3)
    for i in range(10):
        t.failed(f"h{i}", "alice")
    assert list(t._pairs) == [("h7", "alice"), ("h8", "alice"), ("h9", "alice")]
    assert t._counts == {("peer", "h7"): 1, ("peer", "h8"): 1, ("peer", "h9"): 1, ("authid", "alice"): 3}


# -- the router's login and the session's CHALLENGE step, on a Clock -----------------


class Peer:
    state = "login"  # a session waiting for its AUTHENTICATE to be checked

    def __init__(self, peer="tcp4:192.0.2.7:4000"):
        self.peer = peer


@pytest.fixture
def world(tmp_path):
    path = tmp_path / "users"
    write_users(path, {"alice": make_record("alice", "s3cret-alice", role="staff", iterations=1000)})
    world = make_world(
        portal=build_portal([UsersFileChecker(path, run=sync), strcred.makeChecker("memory:bob:pw-bob")], anonymous=False),
        authorize=lambda *a: True,
        throttle=lambda clock: LoginThrottle(clock, floor=0.5, cap=8.0),
    )
    yield world
    world.close()


def logins(world, method, outcome):
    return world.metrics.registry.get_sample_value("zmqwamp_logins_total", {"method": method, "outcome": outcome}) or 0


def authenticate(world, authid, secret, method="ticket", peer=None):
    challenge = fired(make_challenge(world.logins.portal, method, authid))
    return world.logins.authenticate(peer or Peer(), challenge, client_signature(challenge, secret))


def test_refusals_take_the_floor_delay_for_unknown_user_and_wrong_password(world):
    """Unknown authid and wrong ticket are refused at exactly the same time; success is not delayed."""
    for authid, secret in [("alice", "wrong-guess"), ("nobody", "s3cret-alice")]:
        result = pending(authenticate(world, authid, secret, peer=Peer(f"tcp4:198.51.100.{len(authid)}:1")))
        world.clock.advance(0.499)
        assert result == []
        world.clock.advance(0.001)
        assert result[0].value.error == "wamp.error.not_authorized"
        assert result[0].value.args[0] == "authentication failed"
    assert fired(authenticate(world, "alice", "s3cret-alice")).authrole == "staff"
    assert logins(world, "ticket", "refused") == 2 and logins(world, "ticket", "accepted") == 1


def test_repeated_failures_slow_down_that_address(world):
    """After 3 failures from one address, its next attempts wait 1 s, then 2 s, before being checked."""
    peer = Peer("tcp4:203.0.113.9:1111")
    for _ in range(3):
        result = pending(authenticate(world, "alice", "wrong-guess", peer=peer))
        world.clock.advance(0.5)
        assert result
    good = pending(authenticate(world, "alice", "s3cret-alice", peer=Peer("tcp4:203.0.113.9:2222")))
    world.clock.advance(0.999)
    assert good == []
    world.clock.advance(0.001)
    assert good[0].authid == "alice"
    other = pending(authenticate(world, "alice", "s3cret-alice", peer=Peer("tcp4:203.0.113.10:1")))
    assert other[0].authid == "alice"  # another address is not slowed down


def test_no_secret_in_log(world, log_events):
    """Refused and accepted logins log authid and peer, never a ticket or signature."""
    sent = []
    for method in ("ticket", "wampcra"):
        for authid, secret in [("alice", "wrong-guess"), ("bob", "pw-bob"), ("alice", "s3cret-alice")]:
            challenge = fired(make_challenge(world.logins.portal, method, authid))
            signature = client_signature(challenge, secret)
            sent.append(signature)
            pending(world.logins.authenticate(Peer(), challenge, signature))
            world.clock.advance(60)
    text = "\n".join(formatEvent(e) for e in log_events)
    assert "login refused: method=ticket authid='alice'" in text
    for secret in SECRETS + sent:
        assert secret not in text


def test_session_ticket_challenge_then_welcome(world):
    """HELLO(ticket) -> CHALLENGE -> AUTHENTICATE -> WELCOME with authid, authrole, authmethod, authprovider."""
    session, transport = new_session(world, peer="tcp4:192.0.2.1:9")
    send(session, 1, "zmqwamp", {"roles": {"caller": {}}, "authmethods": ["ticket"], "authid": "alice"})
    assert received(transport) == [[4, "ticket", {}]]
    send(session, 5, "s3cret-alice", {})
    welcome = received(transport)[-1]
    assert welcome[0] == 2
    details = welcome[2]
    assert (details["authid"], details["authrole"], details["authmethod"], details["authprovider"]) == (
        "alice", "staff", "ticket", "zmqwamp-users"
    )
    assert session.is_open


def hello_wampcra(router, authid):
    session, transport = new_session(router)
    send(session, 1, "zmqwamp", {"roles": {"caller": {}}, "authmethods": ["wampcra"], "authid": authid})
    [[kind, method, extra]] = received(transport)
    assert (kind, method) == (4, "wampcra")
    return session, transport, extra


def test_session_salted_wampcra(world):
    """HELLO(wampcra) -> CHALLENGE with salt/iterations/keylen -> autobahn's signature -> WELCOME."""
    session, transport, extra = hello_wampcra(world, "alice")
    assert (extra["iterations"], extra["keylen"]) == (1000, 32)
    key = client_auth.derive_key("s3cret-alice", extra["salt"], extra["iterations"], extra["keylen"])
    send(session, 5, client_auth.compute_wcs(key, extra["challenge"]).decode(), {})
    assert received(transport)[-1][0] == 2 and received(transport)[-1][2]["authmethod"] == "wampcra"


def test_wampcra_challenge_does_not_reveal_unknown_authids(world):
    """An unknown authid gets a challenge of the same shape, with a salt that is stable across HELLOs."""
    _, _, known = hello_wampcra(world, "alice")
    _, _, unknown1 = hello_wampcra(world, "mallory")
    _, _, unknown2 = hello_wampcra(world, "mallory")
    assert set(known) == set(unknown1) and unknown1["iterations"] == known["iterations"]
    assert len(unknown1["salt"]) == len(known["salt"])
    assert unknown1["salt"] == unknown2["salt"] != known["salt"]


def test_session_wrong_ticket_aborts_after_the_delay(world):
    """A wrong ticket gets ABORT not_authorized with no detail, after the floor delay; then the socket closes."""
    session, transport = new_session(world, peer="tcp4:192.0.2.1:9")
    send(session, 1, "zmqwamp", {"roles": {"caller": {}}, "authmethods": ["ticket"], "authid": "alice"})
    send(session, 5, "wrong-guess", {})
    assert received(transport) == [[4, "ticket", {}]]
    world.clock.advance(0.5)
    assert received(transport)[-1] == [3, {"message": "authentication failed"}, "wamp.error.not_authorized"]
    assert transport.closed == 1000


@pytest.mark.parametrize(
    "messages",
    [
        [[5, "s3cret-alice", {}]],  # AUTHENTICATE without HELLO
        [[1, "zmqwamp", {"roles": {"caller": {}}, "authmethods": ["ticket"], "authid": "alice"}], [48, 1, {}, "tcp://127.0.0.1:1"]],
        [[1, "zmqwamp", {"roles": {"caller": {}}, "authmethods": ["ticket"], "authid": "alice"}], [5, "x", {}], [5, "y", {}]],
    ],
)
def test_session_out_of_order_is_a_protocol_violation(world, messages):
    """AUTHENTICATE without CHALLENGE, CALL during authentication, a second AUTHENTICATE: protocol violation."""
    session, transport = new_session(world, peer="tcp4:192.0.2.1:9")
    for msg in messages:
        send(session, *msg)
    assert received(transport)[-1][0] == 3 and received(transport)[-1][2] == "wamp.error.protocol_violation"


def test_session_no_enabled_method_aborts(world):
    """Offering only methods the bridge does not serve (here anonymous) is refused at once."""
    session, transport = new_session(world, peer="tcp4:192.0.2.1:9")
    send(session, 1, "zmqwamp", {"roles": {"caller": {}}})
    assert received(transport)[-1][2] == "wamp.error.not_authorized"
    assert logins(world, "none", "refused") == 1


# -- issue 21, item 6: values UTF-8 cannot carry ----------------------------------------------------------------

LONE = "\ud800"  # what JSON's "\ud800" escape decodes to


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


@pytest.mark.parametrize("method", ["ticket", "wampcra"])
def test_a_hello_with_a_lone_surrogate_authid_is_refused(world, method, log_events):
    """ABORT not_authorized 'the authid is not valid Unicode text', one info line, no traceback."""
    session, transport = new_session(world, peer="tcp4:192.0.2.1:9")
    send(session, 1, "zmqwamp", {"roles": {"caller": {}}, "authmethods": [method], "authid": "al" + LONE})
    assert received(transport) == [[3, {"message": "the authid is not valid Unicode text"}, "wamp.error.not_authorized"]]
    assert logins(world, method, "refused") == 1
    text = [formatEvent(e) for e in log_events]
    assert [line for line in text if "not valid Unicode" in line] == [
        f"login refused: the authid is not valid Unicode text (a lone surrogate): method={method} peer=tcp4:192.0.2.1:9"
    ]
    assert not any(e.get("log_failure") for e in log_events)


def test_a_ticket_with_a_lone_surrogate_is_a_failed_login(world, log_events):
    """Refused after the floor delay like a wrong ticket, and counted against the address and authid."""
    session, transport = new_session(world, peer="tcp4:192.0.2.1:9")
    send(session, 1, "zmqwamp", {"roles": {"caller": {}}, "authmethods": ["ticket"], "authid": "alice"})
    send(session, 5, LONE, {})
    world.clock.advance(0.5)
    assert received(transport)[-1] == [3, {"message": "authentication failed"}, "wamp.error.not_authorized"]
    assert world.logins.throttle._counts == {("peer", "tcp4:192.0.2.1"): 1, ("authid", "alice"): 1}
    assert not any(e.get("log_failure") for e in log_events)
