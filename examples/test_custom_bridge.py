"""Tests of custom_bridge.py's hooks and checker, in memory, with zmqwamp.testing: no bridge process, no service
to connect to, no reactor to run.  A template for testing your own Bridge subclass.

    pytest examples/test_custom_bridge.py      (``make test-unit`` runs it)

``bridge_world(bridge)`` puts the bridge's ``zmq_allowed`` hook, its checkers and its configuration on the
bridge's own session code; ``joined`` logs a client in (WAMP ticket), ``send`` sends a WAMP message as that client
would (``[48, request, options, uri, args]`` is a CALL, ``[32, request, options, uri]`` a SUBSCRIBE) and
``received`` decodes what the bridge sent it.  A CALL the hook allows reaches ``world.forwarder`` (the ZeroMQ side,
faked); ``publish`` hands the bridge a message as the PUB service would send it.
"""

from __future__ import annotations

import pytest
from autobahn.wamp import auth as wamp_auth
from twisted.cred import strcred

from zmqwamp.testing import (
    bridge_world,
    events,
    handshake,
    joined,
    new_session,
    publish,
    received,
    send,
    websocket_factory,
)

from custom_bridge import DemoUsers, MyBridge

REP = "tcp://127.0.0.1:9999"  # what --allow allows: examples/echo_rep.py
PUB = "tcp://127.0.0.1:9000"  # and examples/counter_pub.py
CALL, SUBSCRIBE, HELLO, AUTHENTICATE = 48, 32, 1, 5
WELCOME, ABORT, CHALLENGE, ERROR, RESULT, SUBSCRIBED = 2, 3, 4, 8, 50, 33


@pytest.fixture
def world():
    """MyBridge as custom_bridge.main() makes it, with its demo accounts, on the in-memory core."""
    bridge = MyBridge(allow=[REP, PUB], origins=["https://app.example.com"], checkers=[DemoUsers()])
    world = bridge_world(bridge)
    world.test["bridge"] = bridge
    yield world
    world.close()


# -- the checker ------------------------------------------------------------------------------------------------------


def test_the_demo_accounts_log_in_with_their_role():
    """DemoUsers: alice is an admin, bob a user; WELCOME says so."""
    world = bridge_world(MyBridge(allow=[REP], checkers=[DemoUsers()]))
    try:
        session, channel = new_session(world)
        send(session, HELLO, "zmqwamp", {"roles": {"caller": {}}, "authmethods": ["ticket"], "authid": "alice"})
        assert received(channel) == [[CHALLENGE, "ticket", {}]]
        send(session, AUTHENTICATE, "alice-secret", {})
        welcome = received(channel)[-1]
        assert welcome[0] == WELCOME and (welcome[2]["authid"], welcome[2]["authrole"]) == ("alice", "admin")
        bob, _ = joined(world, authid="bob", ticket="bob-secret")  # the same in one line
        assert bob.avatar.authrole == "user"
    finally:
        world.close()


def test_a_wrong_ticket_or_an_unknown_user_is_refused(world):
    """A wrong ticket and an unknown authid get the same ABORT, and the connection is closed."""
    for authid, ticket in [("alice", "bob-secret"), ("mallory", "alice-secret")]:
        session, channel = new_session(world)
        send(session, HELLO, "zmqwamp", {"roles": {"caller": {}}, "authmethods": ["ticket"], "authid": authid})
        send(session, AUTHENTICATE, ticket, {})
        assert received(channel)[-1] == [ABORT, {"message": "authentication failed"}, "wamp.error.not_authorized"]
        assert channel.closed == 1000 and not session.is_open


def test_the_demo_accounts_log_in_with_wampcra_too(world):
    """DemoUsers checks WAMP-CRA signatures as well (checkPassword), as autobahn's clients compute them."""
    session, channel = new_session(world)
    send(session, HELLO, "zmqwamp", {"roles": {"caller": {}}, "authmethods": ["wampcra"], "authid": "bob"})
    [(kind, method, extra)] = received(channel)
    assert (kind, method) == (CHALLENGE, "wampcra")
    send(session, AUTHENTICATE, wamp_auth.compute_wcs("bob-secret", extra["challenge"]).decode(), {})
    assert received(channel)[-1][0] == WELCOME and session.avatar.authid == "bob"


# -- zmq_allowed ------------------------------------------------------------------------------------------------------


def test_everyone_may_call_what_allow_allows_and_nothing_else(world):
    """bob's CALL to the allowed REP service reaches ZeroMQ and its reply comes back; a CALL elsewhere is refused."""
    bob, channel = joined(world, authid="bob", ticket="bob-secret")
    send(bob, CALL, 1, {}, REP, ["hello"])
    [request] = world.forwarder.requests
    assert (request.address, request.frames) == (REP, [b"hello"])
    request.deferred.callback([b"hello, bob"])  # what the REP service answers
    assert received(channel) == [[RESULT, 1, {}, ["hello, bob"]]]
    send(bob, CALL, 2, {}, "tcp://10.0.0.1:9999", ["hello"])
    assert received(channel)[-1][:5] == [ERROR, CALL, 2, {}, "wamp.error.not_authorized"]
    assert len(world.forwarder.requests) == 1  # nothing more was sent


def test_a_user_subscribes_under_a_filter_of_their_own_an_admin_to_anything(world):
    """bob may subscribe to 'bob.*' only (not 'alice.*', not everything); alice, an admin, to everything."""
    bob, bob_channel = joined(world, authid="bob", ticket="bob-secret")
    alice, alice_channel = joined(world, authid="alice", ticket="alice-secret")
    send(bob, SUBSCRIBE, 1, {"filter": "bob."}, PUB)
    send(bob, SUBSCRIBE, 2, {"filter": "alice."}, PUB)
    send(bob, SUBSCRIBE, 3, {}, PUB)
    send(alice, SUBSCRIBE, 4, {}, PUB)
    replies = received(bob_channel)
    assert [reply[0] for reply in replies] == [SUBSCRIBED, ERROR, ERROR]
    assert {reply[4] for reply in replies[1:]} == {"wamp.error.not_authorized"}
    assert received(alice_channel)[0][0] == SUBSCRIBED
    publish(world, PUB, b"bob.inbox 1")  # the PUB service sends a message
    publish(world, PUB, b"carol.inbox 1")
    assert [event[4] for event in events(bob_channel)] == [["bob.inbox 1"]]
    assert [event[4] for event in events(alice_channel)] == [["bob.inbox 1"], ["carol.inbox 1"]]


def test_an_authid_with_a_dot_may_not_subscribe():
    """'john.smith.' would be inside john's 'john.': such an authid is refused every subscription (with any checker)."""
    bridge = MyBridge(allow=[PUB], checkers=[strcred.makeChecker("memory:john.smith:pw:john:pw")])
    world = bridge_world(bridge)
    try:
        smith, smith_channel = joined(world, authid="john.smith", ticket="pw")
        john, john_channel = joined(world, authid="john", ticket="pw")
        send(smith, SUBSCRIBE, 1, {"filter": "john.smith.inbox"}, PUB)
        send(john, SUBSCRIBE, 1, {"filter": "john.inbox"}, PUB)
        assert received(smith_channel)[0][4] == "wamp.error.not_authorized"
        assert received(john_channel)[0][0] == SUBSCRIBED
    finally:
        world.close()


# -- websocket_allowed ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "peer, origin, answer",
    [
        ("127.0.0.1", None, 101),  # loopback, no Origin: a non-browser client
        ("10.1.2.3", "https://app.example.com", 101),  # a private address, a listed Origin
        ("8.8.8.8", None, 403),  # a public address: refused whatever it sends (Python's ipaddress counts the
        ("2a00:1450:4001::1", "https://app.example.com", 403),  # documentation ranges as private: not those)
        ("192.168.1.9", "https://evil.example", 403),  # inside, but an Origin not listed (--origin)
    ],
)
def test_clients_outside_our_network_are_refused_before_the_upgrade(world, peer, origin, answer):
    """websocket_allowed: loopback and private addresses only, then the Origin allowlist; a refusal is HTTP 403."""
    factory = websocket_factory(world, world.test["bridge"].websocket_allowed)
    _, transport = handshake(factory, "wamp.2.json", origin=origin, peer=peer)
    assert transport.value().startswith(b"HTTP/1.1 %d " % answer)
