"""zmqwamp.service.bridge: the wiring, in memory (issue 22: parts get what they use, nobody reaches through objects).
The hooks and reloads against sessions: tests/unit/wamp/test_revocation.py; a real bridge: tests/e2e/."""

from __future__ import annotations

import ast
import json
from dataclasses import fields
from pathlib import Path

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.web.test.requesthelper import DummyRequest

from zmqwamp import Bridge
from zmqwamp.service.bridge import websocket_options
from zmqwamp.service.config import BridgeConfig
from zmqwamp.service.lifecycle import ListeningPort
from zmqwamp.testing import World, joined, make_world, received, send
from zmqwamp.transport.guard import ConnectionGuardFactory
from zmqwamp.transport.site import BridgeSite
from zmqwamp.transport.websocket import WampServerFactory, WebSocketOptions
from zmqwamp.upstream.endpoints import Endpoint
from zmqwamp.wamp.limits import SessionLimits

from memory import PUB

PACKAGE = Path(__file__).resolve().parents[3] / "zmqwamp"


@pytest.fixture
def made():
    """``made(bridge)``: its services on a MemoryReactorClock -> (service, clock); its zmq side shut down afterwards."""
    bridges = []

    def make(bridge: Bridge):
        clock = MemoryReactorClock()
        service = bridge.make_service(clock)
        bridges.append(bridge)
        return service, clock

    yield make
    for bridge in bridges:
        assert bridge.context is not None
        bridge.context.router.hub.close()
        bridge.context.router.hub._zmq.shutdown()


def test_every_attribute_of_a_bridge_is_set_in_init(made):
    """make_service sets no attribute that __init__ did not: context and portal are None until then."""
    bridge = Bridge(allow=[PUB], anonymous=True)
    before = set(vars(bridge))
    assert bridge.context is None and bridge.portal is None
    made(bridge)
    assert set(vars(bridge)) == before
    assert bridge.context is not None and bridge.portal is not None


def test_a_reload_before_make_service_says_what_is_missing():
    """A reload of a bridge that has no services yet is a clear error, not an AttributeError on None."""
    bridge = Bridge(allow=[PUB])
    bridge.config_loader = lambda: BridgeConfig(allow=[PUB])
    with pytest.raises(RuntimeError, match=r"make_service\(\) first"):
        bridge.reload()


def test_the_aliases_are_set_up_once_the_reactor_runs_and_reloaded_through_the_router(made):
    """A keep_open history alias opens when the reactor runs (not at make_service: a --workers fork may come
    between); a reload's new aliases reach the router (resolver, hub) in one call."""
    ticks = Endpoint(PUB, kind="sub", alias="ticks", history=5, keep_open=True)
    bridge = Bridge(allow=["tcp://127.0.0.1:*"], anonymous=True, endpoints={"ticks": ticks})
    _, clock = made(bridge)
    assert bridge.context is not None
    hub = bridge.context.router.hub
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
    service, clock = made(bridge)
    assert bridge.context is not None
    [port] = [child for child in service if isinstance(child, ListeningPort)]
    assert isinstance(port.factory, ConnectionGuardFactory)
    site = port.factory.wrappedFactory
    world = World(bridge.context, clock, bridge.context.router.hub._zmq)
    session, channel = joined(world)
    send(session, 32, 1, {}, PUB)
    assert received(channel)[-1][0] == 33  # SUBSCRIBED
    health = _healthz(site)
    assert health["up"] is True and health["sessions"] == 1 and health["subscriptions"] == 1
    assert health["zmq_endpoints"] == {"req": [], "sub": [PUB]}


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
