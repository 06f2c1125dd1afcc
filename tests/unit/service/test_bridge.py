"""zmqwamp.service.bridge: the public Bridge, in memory (its own services, made on a MemoryReactorClock: the ``made``
fixture of tests/unit/service/conftest.py): the wiring (issue 22: parts get what they use, nobody reaches through
objects), the two hooks' defaults, and what a reload (SIGHUP) or an edited users file takes away from open
sessions (issue 21, items 8 and 12).  The router's re-check of each subscription: tests/unit/wamp/test_router.py;
a real bridge: tests/e2e/test_revocation.py.
"""

from __future__ import annotations

import ast
import json
from dataclasses import fields
from pathlib import Path

import pytest
from twisted.logger import formatEvent
from twisted.web.test.requesthelper import DummyRequest

from zmqwamp import Bridge
from zmqwamp.auth.cred import SessionAvatar
from zmqwamp.auth.policy import UserRule
from zmqwamp.auth.users import UsersFileChecker, make_record
from zmqwamp.service.bridge import websocket_options
from zmqwamp.service.config import BridgeConfig
from zmqwamp.service.lifecycle import ListeningPort
from zmqwamp.service.sampler import INTERVAL, StatusSampler
from zmqwamp.testing import joined, make_world, new_session, received, send
from zmqwamp.transport.guard import ConnectionGuardFactory
from zmqwamp.transport.site import BridgeSite
from zmqwamp.transport.websocket import WampServerFactory, WebSocketOptions
from zmqwamp.upstream.endpoints import Endpoint
from zmqwamp.wamp.errors import SESSION_REVOKED
from zmqwamp.wamp.limits import SessionLimits

from memory import PUB, REVOCABLE, IdentityChecker, edit_users, revoked, subscribed, sync
from minws import SUBSCRIBED, UNSUBSCRIBED

PACKAGE = Path(__file__).resolve().parents[3] / "zmqwamp"


# -- the wiring --------------------------------------------------------------------------------------------------------


def test_every_attribute_of_a_bridge_is_set_in_init(made):
    """make_service sets no attribute that __init__ did not: context and portal are None until then."""
    bridge = Bridge(allow=[PUB], anonymous=True)
    before = set(vars(bridge))
    assert bridge.context is None and bridge.portal is None
    made(bridge)
    assert set(vars(bridge)) == before
    assert bridge.context is not None and bridge.portal is not None


def test_only_the_wiring_knows_the_configuration():
    """No module outside zmqwamp/service/ imports zmqwamp.service: the parts get what they use, not BridgeConfig
    (the WebSocket factory took the whole of it).  zmqwamp.testing, which builds bridges in memory, is above them."""
    importers = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "service" or str(relative) in ("__init__.py", "healthcheck.py", "users.py", "testing.py"):
            continue  # the wiring itself, and the public entry points above it
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("zmqwamp.service"):
                importers.append(f"{relative}: {node.module}")
    assert importers == []


def test_a_made_bridge_exports_its_state_and_limits_and_its_sampler_feeds_status(made):
    """The wiring of issue 25: /metrics' gauges read at scrape time are this bridge's (a subscription made through
    its sessions), zmqwamp_limit is its config's, and /status.json on its listen site comes from the sampler that
    runs among its services (a sample at start, one every INTERVAL seconds)."""
    bridge = Bridge(allow=[PUB], anonymous=True, listen=["tcp:0:interface=127.0.0.1"], max_sessions=42)
    world, service = made(bridge)
    clock = world.clock
    assert bridge.context is not None
    [sampler] = [child for child in service if isinstance(child, StatusSampler)]
    sampler.startService()
    metrics = bridge.context.metrics
    session, channel = joined(world)
    send(session, 32, 1, {}, PUB)
    assert received(channel)[-1][0] == 33  # SUBSCRIBED
    assert metrics.registry.get_sample_value("zmqwamp_subscriptions_open") == 1
    assert metrics.registry.get_sample_value("zmqwamp_limit", {"limit": "max_sessions"}) == 42
    assert metrics.registry.get_sample_value("zmqwamp_draining") == 0
    clock.advance(INTERVAL)
    [port] = [child for child in service if isinstance(child, ListeningPort)]
    request = DummyRequest([b"status.json"])
    request.client_local = True  # type: ignore[attr-defined]  # as BridgeRequest sets it for a local client
    status = json.loads(port.factory.wrappedFactory.getResourceFor(request).render(request))
    assert status["now"]["sessions"] == 1 and status["now"]["subscriptions"] == 1
    assert status["limits"]["max_sessions"] == 42 and len(status["series"]["time"]) == 2
    sampler.stopService()


def test_the_websocket_side_takes_the_options_of_the_same_names():
    """websocket_options: every field of WebSocketOptions (and of SessionLimits) is the BridgeConfig option of the
    same name, so a changed option reaches the WebSocket factory."""
    limits = {f.name for f in fields(SessionLimits)}
    changed: dict = {}
    for name in [f.name for f in fields(WebSocketOptions) if f.name != "session_limits"] + sorted(limits):
        default = getattr(BridgeConfig(), name)
        changed[name] = "close" if name == "slow_consumer" else type(default)(default * 2 + 1)
    options = websocket_options(BridgeConfig(**changed))
    for name, value in changed.items():
        assert getattr(options.session_limits if name in limits else options, name) == value, name
    world = make_world()
    factory = WampServerFactory(world.context, lambda request: True, options, world.zmq_factory.write_batch)
    assert factory.login_timeout == changed["handshake_timeout"] and factory.session_limits is options.session_limits
    assert factory.slow_consumer == "close" and factory.maxMessagePayloadSize == changed["max_message_size"]
    world.close()


def test_the_aliases_are_set_up_once_the_reactor_runs_and_reloaded_through_the_router(made):
    """A keep_open history alias opens when the reactor runs (not at make_service: a --workers fork may come
    between); a reload's new aliases reach the router (resolver, hub) in one call."""
    ticks = Endpoint(PUB, kind="sub", alias="ticks", history=5, keep_open=True)
    bridge = Bridge(allow=["tcp://127.0.0.1:*"], anonymous=True, endpoints={"ticks": ticks})
    world, _ = made(bridge)
    clock = world.clock
    hub = world.hub
    assert hub.addresses == []
    clock.run()
    assert hub.addresses == [PUB]
    moved = Endpoint("tcp://127.0.0.1:9001", kind="sub", alias="ticks", history=5, keep_open=True)
    bridge.config_loader = lambda: BridgeConfig(allow=["tcp://127.0.0.1:*"], anonymous=True, endpoints={"ticks": moved})
    bridge.reload()
    assert bridge.context.router.resolver.resolve("ticks").endpoint == moved
    assert hub.addresses == [moved.address]


def _healthz(site: BridgeSite) -> dict:
    request = DummyRequest([b"healthz"])
    request.client_local = True  # type: ignore[attr-defined]  # as BridgeRequest sets it for a local client
    return json.loads(site.getResourceFor(request).render(request))


def test_healthz_of_a_made_bridge_shows_its_sessions_and_zmq_side(made):
    """The site of a listen port answers /healthz from the bridge's status: a subscription made through the
    bridge's sessions shows there, with its zmq SUB connection."""
    bridge = Bridge(allow=[PUB], anonymous=True, listen=["tcp:0:interface=127.0.0.1"])
    world, service = made(bridge)
    [port] = [child for child in service if isinstance(child, ListeningPort)]
    assert isinstance(port.factory, ConnectionGuardFactory)
    site = port.factory.wrappedFactory
    session, channel = joined(world)
    send(session, 32, 1, {}, PUB)
    assert received(channel)[-1][0] == 33  # SUBSCRIBED
    health = _healthz(site)
    assert health["up"] is True and health["sessions"] == 1 and health["subscriptions"] == 1
    assert health["zmq_endpoints"] == {"req": [], "sub": [PUB]}


# -- the hooks' defaults -----------------------------------------------------------------------------------------------


def test_bridge_applies_global_allow_first():
    """Bridge.zmq_allowed: --allow first (deny by default), then the avatar's rules."""
    rules = (UserRule(endpoints=("tcp://127.0.0.1:5555",), authids=("alice",), actions=("call",)),)
    X = Endpoint("tcp://127.0.0.1:5555")

    class Session:
        avatar = SessionAvatar("alice", "user", "ticket", "t", rules)

    bridge = Bridge(allow=["tcp://127.0.0.1:5555"])
    assert bridge.zmq_allowed(Session(), "call", X, {})
    bridge = Bridge(allow=["tcp://127.0.0.1:6*"])
    assert not bridge.zmq_allowed(Session(), "call", X, {})


def test_default_websocket_allowed_uses_origins():
    """Bridge.websocket_allowed reads the request's Origin and Host header."""

    class Request:
        def __init__(self, origin, host):
            self.origin = origin
            self.headers = {"host": host}

    bridge = Bridge(origins="https://app.example.com")
    assert bridge.websocket_allowed(Request("https://app.example.com", "b:1"))
    assert bridge.websocket_allowed(Request("http://b:1", "b:1"))
    assert not bridge.websocket_allowed(Request("https://evil.example", "b:1"))


# -- reload: the rules, anonymous, what it does not apply --------------------------------------------------------------


def test_a_reload_before_make_service_says_what_is_missing():
    """A reload of a bridge that has no services yet is a clear error, not an AttributeError on None."""
    bridge = Bridge(allow=[PUB])
    bridge.config_loader = lambda: BridgeConfig(allow=[PUB])
    with pytest.raises(RuntimeError, match=r"make_service\(\) first"):
        bridge.reload()


def test_bridge_reload_replaces_the_rules_and_revokes(made):
    """Bridge.reload gives the realm's rulebook the new rules (no reaching into the portal) and re-checks."""
    rule = UserRule(endpoints=(PUB,), authids=("alice",), actions=("subscribe",))
    other = UserRule(endpoints=(PUB,), authids=("bob",), actions=("subscribe",))
    bridge = Bridge(allow=[PUB], anonymous=False, rules=[rule, other], checkers=[IdentityChecker()])
    world, _ = made(bridge)
    alice, transport = joined(world, roles=REVOCABLE, authid="alice", ticket="any-ticket")
    subscribed(alice, transport)
    bridge.config_loader = lambda: BridgeConfig(allow=[PUB], rules=[other])
    bridge.reload()
    assert world.logins.portal.realm.rulebook is bridge.rulebook and bridge.rulebook.rules == (other,)
    assert received(transport)[-1][0] == UNSUBSCRIBED


def anonymous_session(world, roles=REVOCABLE):
    session, transport = new_session(world, peer=f"tcp4:192.0.2.9:{len(world.sessions) + 1}")
    send(session, 1, "zmqwamp", {"roles": roles})
    return session, transport


def test_a_reload_that_turns_anonymous_off_ends_anonymous_sessions(made, log_events):
    """anonymous true -> false: open anonymous sessions get GOODBYE zmqwamp.close.session_revoked (their
    subscriptions go with them), a new anonymous HELLO gets ABORT; a ticket session stays.  Counted, logged.
    Before: the portal kept its anonymous checker and the sessions went on ('configuration reloaded')."""
    bridge = Bridge(allow=[PUB], anonymous=True, checkers=[IdentityChecker()])
    world, _ = made(bridge, start=True)
    anon, a_transport = anonymous_session(world)
    assert anon.is_open
    subscribed(anon, a_transport)
    alice, alice_transport = joined(world, roles=REVOCABLE, authid="alice", ticket="any-ticket")
    bridge.config_loader = lambda: BridgeConfig(allow=[PUB], anonymous=False)
    bridge.reload()
    assert received(a_transport)[-1] == [6, {"message": "anonymous access was turned off"}, SESSION_REVOKED]
    assert anon.state == "closed" and alice.is_open and world.hub.subscription_count() == 0
    assert revoked(world.metrics, "session") == 1
    late, late_transport = anonymous_session(world)
    assert received(late_transport)[-1][2] == "wamp.error.not_authorized" and not late.is_open
    text = [formatEvent(e) for e in log_events]
    assert any("anonymous access turned off, 1 anonymous session(s) ended" in line for line in text), text
    assert any("configuration reloaded" in line and "anonymous off" in line for line in text), text
    bridge.config_loader = lambda: BridgeConfig(allow=[PUB], anonymous=True)
    bridge.reload()
    again, _ = anonymous_session(world)
    assert again.is_open


def test_a_reload_warns_about_what_it_does_not_apply(made, log_events):
    """A changed setting a reload cannot apply (a limit, the realm) is named, not passed over in silence."""
    bridge = Bridge(allow=[PUB], checkers=[IdentityChecker()])
    made(bridge, start=True)
    bridge.config_loader = lambda: BridgeConfig(allow=[PUB], max_sessions=5, realm="other")
    bridge.reload()
    text = [formatEvent(e) for e in log_events]
    assert "reload: realm, max_sessions changed; they take effect only at a restart" in text, text


# -- users files: removed or changed users lose their sessions ---------------------------------------------------------


def test_users_removed_or_changed_in_the_file_lose_their_sessions(made, users, log_events):
    """Within a second of the edit: alice (removed), bob (role changed) and carol (password changed) get GOODBYE
    zmqwamp.close.session_revoked with the reason; their subscriptions end with them; dave (unchanged) stays.
    Before: their sessions and subscriptions went on until they left."""
    checker = UsersFileChecker(users, run=sync)
    bridge = Bridge(allow=[PUB], checkers=[checker])
    world, _ = made(bridge, start=True)
    edit_users(users, lambda u: u.update(dave=make_record("dave", "pw-dave", iterations=1000)))
    world.clock.advance(1)
    sessions = {a: joined(world, roles=REVOCABLE, authid=a, ticket=f"pw-{a}") for a in ("alice", "bob", "carol", "dave")}
    for session, transport in sessions.values():
        subscribed(session, transport)

    def change(u):
        del u["alice"]
        u["bob"] = make_record("bob", "pw-bob", "staff", iterations=1000)
        u["carol"] = make_record("carol", "new-pw", "staff", iterations=1000)

    edit_users(users, change)
    world.clock.advance(1)
    said = {a: received(t)[-1] for a, (_, t) in sessions.items()}
    assert said["alice"] == [6, {"message": "the user was removed from the users file"}, SESSION_REVOKED]
    assert said["bob"] == [6, {"message": "the user's role changed"}, SESSION_REVOKED]
    assert said["carol"] == [6, {"message": "the user's password was reset"}, SESSION_REVOKED]
    assert said["dave"][0] == SUBSCRIBED and sessions["dave"][0].is_open
    assert world.hub.subscription_count() == 1 and revoked(world.metrics, "session") == 3
    text = [formatEvent(e) for e in log_events]
    assert any("ended: the user's role changed (user -> staff)" in line for line in text), text
    assert any("zmqwamp-users: 3 user(s) removed or changed, 3 session(s) ended" in line for line in text), text
    assert joined(world, roles=REVOCABLE, authid="bob", ticket="pw-bob")[0].avatar.authrole == "staff"


def test_sighup_reads_the_users_file_at_once(made, users):
    """No need to wait for the next look: SIGHUP (reload) re-reads it, with or without a config file."""
    checker = UsersFileChecker(users, run=sync)
    bridge = Bridge(allow=[PUB], checkers=[checker])
    world, _ = made(bridge, start=True)
    alice, transport = joined(world, roles=REVOCABLE, authid="alice", ticket="pw-alice")
    edit_users(users, lambda u: u.pop("alice"))
    bridge.reload()
    assert not alice.is_open and received(transport)[-1][2] == SESSION_REVOKED


def test_a_broken_users_file_is_logged_once(made, users, log_events):
    """Looked at every second: a broken edit is logged once (and the last good version kept), not every second."""
    checker = UsersFileChecker(users, run=sync)
    world, _ = made(Bridge(allow=[PUB], checkers=[checker]), start=True)
    alice, _ = joined(world, roles=REVOCABLE, authid="alice", ticket="pw-alice")
    users.write_text(users.read_text() + "this is not a user line\n")
    world.clock.advance(1)
    world.clock.advance(1)
    world.clock.advance(1)
    errors = [formatEvent(e) for e in log_events if "not reloaded" in formatEvent(e)]
    assert len(errors) == 1 and alice.is_open
