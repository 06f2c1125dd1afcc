"""zmqwamp.auth.login: HELLO -> CHALLENGE -> AUTHENTICATE -> WELCOME or ABORT through the portal (a users file for
alice, ``memory:`` for bob) and the throttle, on a clock in memory: what a client is told, when, and what is logged.
The order of the messages themselves: tests/unit/wamp/test_session.py.
"""

from __future__ import annotations

import pytest
from autobahn.wamp import auth as client_auth
from twisted.cred import strcred
from twisted.logger import formatEvent

from zmqwamp.auth.cred import build_portal, make_challenge
from zmqwamp.auth.throttle import LoginThrottle
from zmqwamp.auth.users import UsersFileChecker, make_record, write_users
from zmqwamp.testing import fired, make_world, new_session, pending, received, send

from memory import LONE, client_signature, sync

SECRETS = ["s3cret-alice", "pw-bob", "wrong-guess"]


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


def hello_wampcra(router, authid):
    session, transport = new_session(router)
    send(session, 1, "zmqwamp", {"roles": {"caller": {}}, "authmethods": ["wampcra"], "authid": authid})
    [[kind, method, extra]] = received(transport)
    assert (kind, method) == (4, "wampcra")
    return session, transport, extra


# -- the conversation --------------------------------------------------------------------------------------------------


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


def test_session_no_enabled_method_aborts(world):
    """Offering only methods the bridge does not serve (here anonymous) is refused at once."""
    session, transport = new_session(world, peer="tcp4:192.0.2.1:9")
    send(session, 1, "zmqwamp", {"roles": {"caller": {}}})
    assert received(transport)[-1][2] == "wamp.error.not_authorized"
    assert logins(world, "none", "refused") == 1


# -- refusals: when, and what is logged --------------------------------------------------------------------------------


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


def test_session_wrong_ticket_aborts_after_the_delay(world):
    """A wrong ticket gets ABORT not_authorized with no detail, after the floor delay; then the socket closes."""
    session, transport = new_session(world, peer="tcp4:192.0.2.1:9")
    send(session, 1, "zmqwamp", {"roles": {"caller": {}}, "authmethods": ["ticket"], "authid": "alice"})
    send(session, 5, "wrong-guess", {})
    assert received(transport) == [[4, "ticket", {}]]
    world.clock.advance(0.5)
    assert received(transport)[-1] == [3, {"message": "authentication failed"}, "wamp.error.not_authorized"]
    assert transport.closed == 1000


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


# -- issue 21, item 6: values UTF-8 cannot carry -----------------------------------------------------------------------


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
