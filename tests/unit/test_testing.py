"""zmqwamp.testing: its doubles are what they stand in for (mypy checks the same in ``make lint``), and behave as the
real thing where a test looks; its helpers build what they say; the bridge itself never imports it."""

from __future__ import annotations

import ast
import inspect
import json
from pathlib import Path

import pytest
from twisted.cred import strcred
from twisted.internet.defer import CancelledError
from twisted.internet.testing import MemoryReactorClock

import zmqwamp
from zmqwamp import Bridge, Endpoint
from zmqwamp.metrics import BridgeMetrics
from zmqwamp.testing import (
    FakeChannel,
    FakeForwarder,
    bridge_world,
    events,
    handshake,
    joined,
    make_world,
    new_session,
    open_websocket,
    pending,
    publish,
    received,
    send,
    server_frames,
    websocket_factory,
)
from zmqwamp.upstream.forwarder import RequestForwarder
from zmqwamp.upstream.reader import BridgeZmqFactory
from zmqwamp.wamp.ports import Forwarder
from zmqwamp.wamp.session import MessageChannel

from memory import PUB, REP
from minws import encode_frame

PACKAGE = Path(zmqwamp.__file__).parent


def protocol_members(protocol: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in vars(protocol).items()
        if callable(member) and not name.startswith("_")
    }


def assert_defines_the_members_of(double: type, protocol: type) -> None:
    """``double`` defines (not inherits) each method of ``protocol`` with the same parameters and defaults, and
    each of its properties."""
    wanted = protocol_members(protocol)
    assert wanted, f"{protocol.__name__} declares no members: the check below would check nothing"
    for name, signature in wanted.items():
        assert name in vars(double), f"{double.__name__} lacks {protocol.__name__}.{name}"
        got = inspect.signature(vars(double)[name])
        assert list(got.parameters) == list(signature.parameters), f"{name}: {got} is not {signature}"
        assert [p.default for p in got.parameters.values()] == [p.default for p in signature.parameters.values()], name
    for name, member in vars(protocol).items():
        if isinstance(member, property):
            assert isinstance(vars(double).get(name), property), f"{double.__name__} lacks the property {name}"


def test_fake_channel_has_every_member_of_message_channel_with_its_signature():
    """A member added to or changed in MessageChannel must be added to or changed in FakeChannel too."""
    assert MessageChannel in FakeChannel.__mro__  # declared, so mypy checks it
    assert_defines_the_members_of(FakeChannel, MessageChannel)


def test_fake_forwarder_has_every_member_of_the_forwarder_port_with_its_signature():
    """A member added to or changed in wamp.ports.Forwarder must be added to or changed in FakeForwarder too."""
    assert Forwarder in FakeForwarder.__mro__
    assert_defines_the_members_of(FakeForwarder, Forwarder)


def test_a_session_on_the_fake_channel_answers_through_it(world):
    """What a session sends reaches the fake channel, and a close is recorded with its code."""
    session, channel = joined(world)
    send(session, 48, 1, {}, "tcp://127.0.0.1:9999", ["x"])
    request = world.forwarder.requests[-1]
    request.deferred.callback([b"reply"])
    assert received(channel) == [[50, 1, {}, ["reply"]]]
    send(session, 999)
    assert channel.closed is not None


def conversation(world, say, heard) -> list:
    """One client's session as a test drives it: every message it got, with the ids that differ from run to run
    (WELCOME's session id) blanked.  ``say(message)`` sends a message, ``heard()`` returns what came back so far."""
    say([1, "zmqwamp", {"roles": {"caller": {}, "subscriber": {}}}])
    say([48, 1, {}, REP, ["hello"]])
    world.forwarder.requests[-1].deferred.callback([b"world"])
    say([48, 2, {}, "tcp://10.0.0.1:1", ["x"]])  # denied by make_world's hook
    say([32, 3, {}, PUB])
    publish(world, PUB, b"tick 1")
    say([34, 4, heard()[-2][2]])  # UNSUBSCRIBE what SUBSCRIBED (before the EVENT) gave
    say([6, {}, "wamp.close.normal"])
    messages = heard()
    messages[0][1] = "session id"
    return messages


def test_the_fake_channel_gets_what_the_real_websocket_sends():
    """The same conversation on a FakeChannel and on the bridge's real WebSocket protocol: the same messages
    (WELCOME, RESULT, ERROR, SUBSCRIBED, EVENT, UNSUBSCRIBED, GOODBYE) and the same close code."""
    fake_world, real_world = make_world(), make_world()
    try:
        session, channel = new_session(fake_world)

        def say_fake(message):
            session.message_received(json.dumps(message).encode(), False)

        on_fake = conversation(fake_world, say_fake, lambda: received(channel))

        proto, transport = open_websocket(websocket_factory(real_world), "wamp.2.json")

        def say_real(message):
            proto.dataReceived(encode_frame(1, json.dumps(message).encode()))

        def heard_real():
            return [json.loads(payload) for opcode, payload in server_frames(transport.value()) if opcode == 1]

        on_real = conversation(real_world, say_real, heard_real)
        assert [m[0] for m in on_fake] == [2, 50, 8, 33, 36, 35, 6]
        assert on_fake == on_real
        [(_, close)] = [(op, payload) for op, payload in server_frames(transport.value()) if op == 8]
        assert channel.closed == int.from_bytes(close[:2], "big") == 1000
    finally:
        fake_world.close()
        real_world.close()


def test_the_fake_forwarder_opens_replies_and_closes_as_the_real_one():
    """A request opens its address; its Deferred fires with the reply frames; close() cancels what still waits
    and closes every address: the same on the FakeForwarder and on the real RequestForwarder."""
    zmq_factory = BridgeZmqFactory(MemoryReactorClock())
    real = RequestForwarder(zmq_factory, BridgeMetrics(), idle_close=30)

    def answer_real(frames):
        connection = real._connections[REP]
        connection.messageReceived([next(iter(connection._requests)), b"", *frames])

    def answer_fake(frames):
        next(r for r in fake.requests if not r.deferred.called).deferred.callback(frames)

    fake = FakeForwarder()
    try:
        for forwarder, answer in ((real, answer_real), (fake, answer_fake)):
            assert forwarder.addresses == [] and not forwarder.is_open(REP)
            first = pending(forwarder.request(REP, [b"one"], 5.0))
            assert forwarder.addresses == [REP] and forwarder.is_open(REP)
            answer([b"reply"])
            assert first == [[b"reply"]]
            waiting = pending(forwarder.request(REP, [b"two"], 5.0))
            forwarder.close()
            assert waiting[0].check(CancelledError)
            assert forwarder.addresses == [] and not forwarder.is_open(REP)
    finally:
        real.close()
        zmq_factory.shutdown()


def test_the_bridge_never_imports_zmqwamp_testing():
    """No module of the package (zmqwamp.testing aside) nor the twistd plugins imports it: running a bridge does
    not need it, and a bridge's behaviour cannot depend on it."""
    plugins = PACKAGE.parent / "twisted" / "plugins"
    importers = []
    for path in [*PACKAGE.rglob("*.py"), *plugins.glob("*.py")]:
        if path == PACKAGE / "testing.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            if isinstance(node, ast.ImportFrom) and node.module == "zmqwamp":
                names += [f"zmqwamp.{alias.name}" for alias in node.names]
            importers += [f"{path.name}: {name}" for name in names if name.startswith("zmqwamp.testing")]
    assert importers == []
    assert "testing" not in zmqwamp._PUBLIC.values()


class Choosy(Bridge):
    """bob may not call; everyone else may do what --allow allows."""

    def zmq_allowed(self, session, action, endpoint, options):
        return session.authid != "bob" and super().zmq_allowed(session, action, endpoint, options)


def test_bridge_world_takes_the_bridges_hook_checkers_and_aliases():
    """bridge_world(bridge): the bridge's zmq_allowed, its checkers (anonymous off), its realm and its aliases."""
    echo = Endpoint("tcp://127.0.0.1:5555", kind="req", alias="echo")
    bridge = Choosy(
        allow=["tcp://127.0.0.1:*"], realm="office", endpoints={"echo": echo},
        checkers=[strcred.makeChecker("memory:alice:pw-alice:bob:pw-bob")],
    )
    world = bridge_world(bridge)
    try:
        assert world.logins.realm == "office"
        alice, alice_channel = joined(world, authid="alice", ticket="pw-alice")
        bob, bob_channel = joined(world, authid="bob", ticket="pw-bob")
        send(alice, 48, 1, {}, "echo", ["hi"])
        send(bob, 48, 2, {}, "echo", ["hi"])
        send(alice, 48, 3, {}, "tcp://10.0.0.1:5555", ["hi"])  # not under --allow
        assert [(r.address, r.frames) for r in world.forwarder.requests] == [(echo.address, [b"hi"])]
        assert received(bob_channel)[-1][4] == received(alice_channel)[-1][4] == "wamp.error.not_authorized"
        with pytest.raises(AssertionError, match="no WELCOME"):
            joined(world)  # anonymous is off
        with pytest.raises(AssertionError, match="no WELCOME"):
            joined(world, authid="alice", ticket="wrong")
    finally:
        world.close()


def test_handshake_asks_websocket_allowed_with_the_requests_origin_peer_and_scheme(world):
    """The hook gets autobahn's request with the Origin, the client's address and whether it used TLS; True
    upgrades (101), anything else is a 403."""
    asked = []

    def allowed(request):
        asked.append((request.origin, request.peer, request.secure))
        return request.origin != "https://evil.example"

    factory = websocket_factory(world, allowed)
    _, upgraded = handshake(factory, "wamp.2.json", origin="https://app.example", peer="10.1.2.3", secure=True)
    _, refused = handshake(factory, "wamp.2.json", origin="https://evil.example", peer="2001:db8::1")
    assert upgraded.value().startswith(b"HTTP/1.1 101 ") and refused.value().startswith(b"HTTP/1.1 403 ")
    assert asked == [
        ("https://app.example", "tcp4:10.1.2.3:40000", True),
        ("https://evil.example", "tcp6:2001:db8::1:40000", False),
    ]


def test_publish_delivers_to_the_subscribers_and_gives_the_publication_id(world):
    """publish(world, address, *frames): the hub's fan-out, as from its SUB socket; ids count per address."""
    session, channel = joined(world)
    send(session, 32, 1, {"filter": "tick"}, PUB)
    sid = received(channel)[0][2]
    assert [publish(world, PUB, b"tick 1", b"more"), publish(world, PUB, b"tock"), publish(world, PUB, b"tick 2")] == [1, 2, 3]
    assert events(channel) == [[36, sid, 1, {}, ["tick 1", "more"]], [36, sid, 3, {}, ["tick 2"]]]
