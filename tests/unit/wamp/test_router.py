"""Revocation (issue 13, item 17): what a reload or a credential's expiry takes away, it takes away at once.

* a reload that removes a user's rule revokes that user's open subscriptions
  (WAMP subscription revocation: UNSUBSCRIBED with request 0);
* a session ends when its credential expires (a JWT's ``exp``);
* the ``jwt:`` checker refuses tokens that live longer than ``max_lifetime``.

On a ``MemoryReactorClock``. SIGHUP, JWT expiry and lifetimes against a real bridge:
tests/e2e/test_revocation.py.
"""

from __future__ import annotations

import json
import time

import jwt
import pytest
from twisted.application.internet import TimerService
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent
from twisted.python.failure import Failure
from zope.interface import implementer

from zmqwamp import Bridge
from zmqwamp.auth.cred import Identity, TicketCredentials, build_portal
from zmqwamp.auth.jwtcheck import JwtChecker, JwtConfigError, checker_from_argstring
from zmqwamp.auth.policy import UserRule
from zmqwamp.auth.users import UsersFileChecker, make_record, new_decoy_secret, read_users_file, write_users
from zmqwamp.service.config import BridgeConfig
from zmqwamp.testing import World, fired, make_world, new_session, pending, send
from zmqwamp.upstream.endpoints import Endpoint, EndpointResolver
from zmqwamp.wamp.errors import SESSION_EXPIRED, SESSION_REVOKED

from memory import sync
from minws import EVENT, SUBSCRIBED, UNSUBSCRIBED

PUB = "tcp://127.0.0.1:9000"
REP = "tcp://127.0.0.1:9999"
JWT_SECRET = "revocation-jwt-secret-that-is-long-enough-0123"
REVOCABLE = {"subscriber": {"features": {"subscription_revocation": True}}, "caller": {}}
PLAIN = {"subscriber": {}, "caller": {}}


def revoked(metrics, what: str) -> float:
    return metrics.registry.get_sample_value("zmqwamp_revoked_total", {"what": what}) or 0


# -- in memory -------------------------------------------------------------------------


@implementer(ICredentialsChecker)
class IdentityChecker:
    """Accepts any ticket; the identity (and its expiry) is the test's."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self):
        self.expires = None

    def requestAvatarId(self, credentials):
        return succeed(Identity(credentials.username.decode(), "user", "test", expires=self.expires))


@pytest.fixture
def world():
    """A bridge core with a real hub (on an in-memory reactor), a checker, and an authorization hook the test steers."""
    allowed: dict = {}  # authid -> True, False or a Deferred (default: True)
    checker = IdentityChecker()

    def authorize(session, action, endpoint, options):
        return allowed.get(session.authid, True)

    world = make_world(
        portal=build_portal([checker], anonymous=False),
        resolver=EndpointResolver({"ticks": Endpoint(PUB, kind="sub", alias="ticks")}),
        authorize=authorize,
    )
    world.test.update(allowed=allowed, checker=checker)
    yield world
    world.close()


def login(world, authid: str, roles=REVOCABLE):
    session, transport = new_session(world, peer=f"tcp4:192.0.2.1:{len(world.sessions) + 1}")
    send(session, 1, "zmqwamp", {"roles": roles, "authmethods": ["ticket"], "authid": authid})
    send(session, 5, "any-ticket", {})
    assert session.is_open, messages(transport)
    return session, transport


def messages(transport) -> list:
    return [json.loads(payload) for payload, _ in transport.sent if isinstance(payload, bytes)]


def subscribe(session, transport, topic=PUB, options=None) -> int:
    send(session, 32, 7, options or {}, topic)
    reply = messages(transport)[-1]
    assert reply[0] == SUBSCRIBED, reply
    return reply[2]


def publish(router, address=PUB, payload=b"tick"):
    router.hub._message(address, [payload])


def events(transport) -> int:
    return sum(1 for item in transport.sent if isinstance(item, tuple) and isinstance(item[0], bytes) and json.loads(item[0])[0] == EVENT)


def test_welcome_announces_subscription_revocation(world):
    session, transport = login(world, "alice")
    welcome = messages(transport)[-1]
    assert welcome[2]["roles"]["broker"]["features"]["subscription_revocation"] is True


def test_a_reload_revokes_what_the_hook_now_denies(world):
    """alice's subscription is revoked (UNSUBSCRIBED 0 with the id and reason) and gets no more EVENTs;
    bob's, on the same subscription, goes on; counted and the hub keeps the zmq subscription for bob."""
    alice, a_transport = login(world, "alice")
    bob, b_transport = login(world, "bob")
    sid = subscribe(alice, a_transport)
    assert subscribe(bob, b_transport) == sid
    world.test["allowed"]["alice"] = False
    assert fired(world.router.recheck_subscriptions()) == 1
    assert messages(a_transport)[-1] == [UNSUBSCRIBED, 0, {"subscription": sid, "reason": "wamp.error.not_authorized"}]
    sent_before = len(a_transport.sent)
    publish(world)
    assert len(a_transport.sent) == sent_before
    assert events(b_transport) == 1
    assert revoked(world.metrics, "subscription") == 1
    send(alice, 34, 8, sid)  # the client did not hear (or raced): its UNSUBSCRIBE is an ordinary error
    assert messages(a_transport)[-1][:5] == [8, 34, 8, {}, "wamp.error.no_such_subscription"]


def test_a_client_that_did_not_announce_revocation_just_stops_getting_events(world):
    """WAMP forbids UNSUBSCRIBED 0 to a subscriber that did not announce subscription_revocation."""
    alice, transport = login(world, "alice", roles=PLAIN)
    subscribe(alice, transport)
    sent_before = len(transport.sent)
    world.test["allowed"]["alice"] = False
    assert fired(world.router.recheck_subscriptions()) == 1
    publish(world)
    assert len(transport.sent) == sent_before
    assert alice.is_open and world.hub.subscription_count() == 0


def test_a_deferred_answer_is_waited_for(world):
    """The hook may answer with a Deferred: the subscription goes when it fires with False, not before."""
    alice, transport = login(world, "alice")
    subscribe(alice, transport)
    answer = Deferred()
    world.test["allowed"]["alice"] = answer
    result = world.router.recheck_subscriptions()
    publish(world)
    assert events(transport) == 1
    answer.callback(False)
    assert fired(result) == 1
    publish(world)
    assert events(transport) == 1


def test_a_failing_hook_revokes(world):
    """Deny by default: a hook that raises (or fails its Deferred) on re-check revokes the subscription."""
    alice, transport = login(world, "alice")
    subscribe(alice, transport)
    world.router.authorize = lambda *a: 1 / 0
    assert fired(world.router.recheck_subscriptions()) == 1
    assert messages(transport)[-1][0] == UNSUBSCRIBED


def test_a_session_that_left_meanwhile_is_left_alone(world):
    """A session that closes while its re-check is pending is not sent anything and counts as nothing revoked."""
    alice, transport = login(world, "alice")
    subscribe(alice, transport)
    answer = Deferred()
    world.test["allowed"]["alice"] = answer
    result = world.router.recheck_subscriptions()
    send(alice, 6, {}, "wamp.close.goodbye_and_out")
    sent_before = len(transport.sent)
    answer.callback(False)
    assert fired(result) == 0 and len(transport.sent) == sent_before


def test_a_removed_alias_is_revoked(world):
    """A subscription to an alias that the reload removed (or pointed elsewhere) is revoked."""
    alice, transport = login(world, "alice")
    sid = subscribe(alice, transport, "ticks")
    assert fired(world.router.recheck_subscriptions()) == 0
    world.router.resolver.aliases = {"ticks": Endpoint("tcp://127.0.0.1:9001", kind="sub", alias="ticks")}
    assert fired(world.router.recheck_subscriptions()) == 1
    assert messages(transport)[-1][2]["subscription"] == sid


def test_router_reload_takes_the_new_aliases_in_one_call(world):
    """Router.reload(aliases): the resolver knows the new aliases, their histories and keep_open connections are set
    up, a new policy generation begins and open subscriptions are asked again (an alias moved elsewhere is revoked)."""
    alice, transport = login(world, "alice")
    sid = subscribe(alice, transport, "ticks")
    generation = world.router.policy_generation
    moved = Endpoint("tcp://127.0.0.1:9001", kind="sub", alias="ticks", history=5, keep_open=True)
    assert fired(world.router.reload({"ticks": moved})) == 1
    assert messages(transport)[-1][:2] == [UNSUBSCRIBED, 0] and messages(transport)[-1][2]["subscription"] == sid
    assert world.router.resolver.resolve("ticks").endpoint == moved
    assert world.hub.addresses == [moved.address]  # kept open at once; the old one closed with its last subscriber
    assert [name for name, *_ in world.hub.history_held()] == ["ticks"]
    assert world.router.policy_generation == generation + 1


def test_router_start_sets_up_the_configured_aliases():
    """Router.start (the bridge calls it once the reactor runs): the aliases' histories and keep_open connections."""
    kept = Endpoint(PUB, kind="sub", alias="ticks", history=5, keep_open=True)
    world = make_world(resolver=EndpointResolver({"ticks": kept}))
    try:
        assert world.hub.addresses == [] and list(world.hub.history_held()) == []
        world.router.start()
        assert world.hub.addresses == [PUB] and [name for name, *_ in world.hub.history_held()] == ["ticks"]
    finally:
        world.close()


def test_bridge_reload_replaces_the_rules_and_revokes():
    """Bridge.reload gives the realm's rulebook the new rules (no reaching into the portal) and re-checks."""
    rule = UserRule(endpoints=(PUB,), authids=("alice",), actions=("subscribe",))
    other = UserRule(endpoints=(PUB,), authids=("bob",), actions=("subscribe",))
    bridge = Bridge(allow=[PUB], anonymous=False, rules=[rule, other], checkers=[IdentityChecker()])
    clock = MemoryReactorClock()
    service = bridge.make_service(clock)
    try:
        alice, transport = login(World(bridge.context, clock, bridge.context.router.hub._zmq), "alice")
        subscribe(alice, transport)
        bridge.config_loader = lambda: BridgeConfig(allow=[PUB], rules=[other])
        bridge.reload()
        assert bridge.context.logins.portal.realm.rulebook is bridge.rulebook and bridge.rulebook.rules == (other,)
        assert messages(transport)[-1][0] == UNSUBSCRIBED
    finally:
        bridge.context.router.hub.close()
        bridge.context.router.hub._zmq.shutdown()
        del service


def test_a_session_ends_when_its_credential_expires(world):
    """A credential valid for 5 more seconds: at 5 s the call in flight gets ERROR canceled, then GOODBYE
    zmqwamp.close.session_expired, and close 1000 once the client's GOODBYE is in; counted and logged; not a
    moment before."""
    world.test["checker"].expires = time.time() + 5
    session, transport = login(world, "alice")
    send(session, 48, 11, {}, REP, ["in flight"])
    assert len(world.forwarder.requests) == 1
    world.clock.advance(4.9)
    assert session.is_open
    world.clock.advance(0.2)
    *_, error, goodbye = messages(transport)
    assert error[:5] == [8, 48, 11, {}, "wamp.error.canceled"]
    assert goodbye == [6, {"message": "the session's credential has expired"}, SESSION_EXPIRED]
    assert session.state == "closed" and transport.closed is None  # waiting for the client's GOODBYE
    send(session, 6, {}, "wamp.close.goodbye_and_out")
    assert transport.closed == 1000
    assert revoked(world.metrics, "session") == 1


def test_a_session_that_ends_first_cancels_its_expiry_timer(world):
    """No timer is left behind by a session that closes before its credential expires (nor for one without expiry)."""
    world.test["checker"].expires = time.time() + 60
    session, _ = login(world, "alice")
    assert len(world.clock.getDelayedCalls()) == 1
    send(session, 6, {}, "wamp.close.goodbye_and_out")
    assert world.clock.getDelayedCalls() == []
    world.test["checker"].expires = None
    login(world, "bob")
    assert world.clock.getDelayedCalls() == []


def token(**claims):
    body = {"sub": "dave", "aud": "zmqwamp-e2e", "exp": int(time.time()) + 60, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, JWT_SECRET, algorithm="HS256")


def test_jwt_identity_carries_the_expiry_and_lifetime_is_capped():
    """The identity expires at exp (+ leeway); tokens with exp more than max_lifetime away, or more than
    max_lifetime after their iat, are refused."""
    checker = JwtChecker(JWT_SECRET.encode(), audience="zmqwamp-e2e", leeway=2, max_lifetime=3600)
    exp = int(time.time()) + 60
    identity = fired(checker.requestAvatarId(TicketCredentials("", token(exp=exp))))
    assert identity.expires == exp + 2
    now = int(time.time())
    for refused in (token(exp=now + 100 * 365 * 86400), token(exp=now + 3700), token(iat=now - 7200, exp=now + 60)):
        with pytest.raises(Exception) as e:
            fired(checker.requestAvatarId(TicketCredentials("", refused)))
        assert type(e.value).__name__ == "UnauthorizedLogin"
    assert JwtChecker(JWT_SECRET.encode(), audience="a").max_lifetime == 86400


def test_jwt_max_lifetime_argument(tmp_path):
    key = tmp_path / "k"
    key.write_text(JWT_SECRET)
    assert checker_from_argstring(f"secret_file={key},audience=a,max_lifetime=600").max_lifetime == 600
    for bad in ("0", "-1", "soon"):
        with pytest.raises(JwtConfigError, match="max_lifetime"):
            checker_from_argstring(f"secret_file={key},audience=a,max_lifetime={bad}")


# -- issue 21, items 8 and 12: a reload that turns anonymous off, a users file that removes or changes a user -----


@pytest.fixture
def running():
    """Start a Bridge on a MemoryReactorClock: ``running(bridge)`` -> (World, service); shut down afterwards."""
    started = []

    def start(bridge):
        clock = MemoryReactorClock()
        service = bridge.make_service(clock)
        clock.run()  # callWhenRunning: the history; the users-file watcher starts with the service
        service.startService()
        started.append((bridge, service))
        return World(bridge.context, clock, bridge.context.router.hub._zmq), service

    yield start
    for bridge, service in started:
        for child in list(service):
            if isinstance(child, TimerService):  # the users-file watcher
                child.stopService()
        bridge.context.router.hub.close()
        bridge.context.router.hub._zmq.shutdown()


def anonymous_session(world, roles=REVOCABLE):
    session, transport = new_session(world, peer=f"tcp4:192.0.2.9:{len(world.sessions) + 1}")
    send(session, 1, "zmqwamp", {"roles": roles})
    return session, transport


def test_a_reload_that_turns_anonymous_off_ends_anonymous_sessions(running, log_events):
    """anonymous true -> false: open anonymous sessions get GOODBYE zmqwamp.close.session_revoked (their
    subscriptions go with them), a new anonymous HELLO gets ABORT; a ticket session stays.  Counted, logged.
    Before: the portal kept its anonymous checker and the sessions went on ('configuration reloaded')."""
    bridge = Bridge(allow=[PUB], anonymous=True, checkers=[IdentityChecker()])
    world, _ = running(bridge)
    anon, a_transport = anonymous_session(world)
    assert anon.is_open
    subscribe(anon, a_transport)
    alice, alice_transport = login(world, "alice")
    bridge.config_loader = lambda: BridgeConfig(allow=[PUB], anonymous=False)
    bridge.reload()
    assert messages(a_transport)[-1] == [6, {"message": "anonymous access was turned off"}, SESSION_REVOKED]
    assert anon.state == "closed" and alice.is_open and world.hub.subscription_count() == 0
    assert revoked(world.metrics, "session") == 1
    late, late_transport = anonymous_session(world)
    assert messages(late_transport)[-1][2] == "wamp.error.not_authorized" and not late.is_open
    text = [formatEvent(e) for e in log_events]
    assert any("anonymous access turned off, 1 anonymous session(s) ended" in line for line in text), text
    assert any("configuration reloaded" in line and "anonymous off" in line for line in text), text
    bridge.config_loader = lambda: BridgeConfig(allow=[PUB], anonymous=True)
    bridge.reload()
    again, _ = anonymous_session(world)
    assert again.is_open


def test_a_reload_warns_about_what_it_does_not_apply(running, log_events):
    """A changed setting a reload cannot apply (a limit, the realm) is named, not passed over in silence."""
    bridge = Bridge(allow=[PUB], checkers=[IdentityChecker()])
    running(bridge)
    bridge.config_loader = lambda: BridgeConfig(allow=[PUB], max_sessions=5, realm="other")
    bridge.reload()
    text = [formatEvent(e) for e in log_events]
    assert "reload: realm, max_sessions changed; they take effect only at a restart" in text, text


@pytest.fixture
def users(tmp_path):
    path = tmp_path / "users"
    write_users(path, {a: make_record(a, f"pw-{a}", role, iterations=1000) for a, role in
                       [("alice", "user"), ("bob", "user"), ("carol", "staff")]}, new_decoy_secret())
    return path


def ticket_login(world, authid: str, secret: str, roles=REVOCABLE):
    session, transport = new_session(world, peer=f"tcp4:192.0.2.1:{len(world.sessions) + 1}")
    send(session, 1, "zmqwamp", {"roles": roles, "authmethods": ["ticket"], "authid": authid})
    send(session, 5, secret, {})
    assert session.is_open, messages(transport)
    return session, transport


def edit(path, change) -> None:
    """Change the users file as the CLI does (written anew, atomically)."""
    users_file = read_users_file(path)
    users = dict(users_file.users)
    change(users)
    write_users(path, users, users_file.decoy_secret)


def test_users_removed_or_changed_in_the_file_lose_their_sessions(running, users, log_events):
    """Within a second of the edit: alice (removed), bob (role changed) and carol (password changed) get GOODBYE
    zmqwamp.close.session_revoked with the reason; their subscriptions end with them; dave (unchanged) stays.
    Before: their sessions and subscriptions went on until they left."""
    checker = UsersFileChecker(users, run=sync)
    bridge = Bridge(allow=[PUB], checkers=[checker])
    world, _ = running(bridge)
    edit(users, lambda u: u.update(dave=make_record("dave", "pw-dave", iterations=1000)))
    world.clock.advance(1)
    sessions = {a: ticket_login(world, a, f"pw-{a}") for a in ("alice", "bob", "carol", "dave")}
    for session, transport in sessions.values():
        subscribe(session, transport)

    def change(u):
        del u["alice"]
        u["bob"] = make_record("bob", "pw-bob", "staff", iterations=1000)
        u["carol"] = make_record("carol", "new-pw", "staff", iterations=1000)

    edit(users, change)
    world.clock.advance(1)
    said = {a: messages(t)[-1] for a, (_, t) in sessions.items()}
    assert said["alice"] == [6, {"message": "the user was removed from the users file"}, SESSION_REVOKED]
    assert said["bob"] == [6, {"message": "the user's role changed"}, SESSION_REVOKED]
    assert said["carol"] == [6, {"message": "the user's password was reset"}, SESSION_REVOKED]
    assert said["dave"][0] == SUBSCRIBED and sessions["dave"][0].is_open
    assert world.hub.subscription_count() == 1 and revoked(world.metrics, "session") == 3
    text = [formatEvent(e) for e in log_events]
    assert any("ended: the user's role changed (user -> staff)" in line for line in text), text
    assert any("zmqwamp-users: 3 user(s) removed or changed, 3 session(s) ended" in line for line in text), text
    assert ticket_login(world, "bob", "pw-bob")[0].avatar.authrole == "staff"


def test_sighup_reads_the_users_file_at_once(running, users):
    """No need to wait for the next look: SIGHUP (reload) re-reads it, with or without a config file."""
    checker = UsersFileChecker(users, run=sync)
    bridge = Bridge(allow=[PUB], checkers=[checker])
    world, _ = running(bridge)
    alice, transport = ticket_login(world, "alice", "pw-alice")
    edit(users, lambda u: u.pop("alice"))
    bridge.reload()
    assert not alice.is_open and messages(transport)[-1][2] == SESSION_REVOKED


def test_a_login_checked_while_the_file_changed_does_not_open(users):
    """alice's key was being derived from her old record when the file changed (and the change was announced,
    ending her other sessions): that login is refused, not opened with the old role after the fact."""
    running_derivations = []

    def run(f, *args):
        d = Deferred()
        running_derivations.append((d, f, args))
        return d

    checker = UsersFileChecker(users, run=run)
    result = pending(checker.requestAvatarId(TicketCredentials("alice", "pw-alice")))
    edit(users, lambda u: u.update(alice=make_record("alice", "pw-alice", "admin", iterations=1000)))
    checker.refresh()
    d, f, args = running_derivations[0]
    d.callback(f(*args))  # the right ticket for the old record
    assert isinstance(result[0], Failure) and result[0].check(UnauthorizedLogin)
    again = pending(checker.requestAvatarId(TicketCredentials("alice", "pw-alice")))
    d, f, args = running_derivations[1]
    d.callback(f(*args))
    assert again[0].authrole == "admin"


def test_a_broken_users_file_is_logged_once(running, users, log_events):
    """Looked at every second: a broken edit is logged once (and the last good version kept), not every second."""
    checker = UsersFileChecker(users, run=sync)
    world, _ = running(Bridge(allow=[PUB], checkers=[checker]))
    alice, _ = ticket_login(world, "alice", "pw-alice")
    users.write_text(users.read_text() + "this is not a user line\n")
    world.clock.advance(1)
    world.clock.advance(1)
    world.clock.advance(1)
    errors = [formatEvent(e) for e in log_events if "not reloaded" in formatEvent(e)]
    assert len(errors) == 1 and alice.is_open
