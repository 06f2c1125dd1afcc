"""autobahn-python's own Twisted client against the bridge's WebSocket factory, in memory.

The client and the server are the real protocol stacks (autobahn's WAMP client session and
WebSocket client; the bridge's WampServerFactory, session and router), joined by Twisted's
in-memory transports (twisted.test.iosim, what autobahn.twisted.testing's memory agent uses),
with txaio on Twisted as in twistd. The ZeroMQ side is the world's FakeForwarder and hub.
"""

from __future__ import annotations

import pytest
from autobahn.twisted.wamp import ApplicationSession
from autobahn.twisted.websocket import WampWebSocketClientFactory
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.serializer import JsonSerializer, MsgPackSerializer
from autobahn.wamp.types import ComponentConfig
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.test.iosim import FakeTransport, connect

from zmqwamp.service.bridge import websocket_options
from zmqwamp.service.config import BridgeConfig
from zmqwamp.testing import fired
from zmqwamp.transport.websocket import WampServerFactory

from memory import PUB

REP = "tcp://127.0.0.1:9999"
BRIDGE = IPv4Address("TCP", "127.0.0.1", 8080)
CLIENT = IPv4Address("TCP", "127.0.0.1", 40000)
NO_TIMERS = {"autoPingInterval": 0, "openHandshakeTimeout": 0, "closeHandshakeTimeout": 0}


class Client(ApplicationSession):
    def onJoin(self, details):
        self.config.extra["joined"].callback(details)


def autobahn_session(world, serializer=None):
    """An autobahn-python session joined to the bridge in memory, and the pump that carries their bytes."""
    server_factory = WampServerFactory(world.context, lambda request: True, websocket_options(BridgeConfig()), world.zmq_factory.write_batch)
    server_factory.setProtocolOptions(**NO_TIMERS)
    joined: Deferred = Deferred()
    sessions: list[Client] = []

    def make_session():
        sessions.append(Client(ComponentConfig("zmqwamp", {"joined": joined})))
        return sessions[-1]

    client_factory = WampWebSocketClientFactory(
        make_session, url="ws://localhost:8080/ws", serializers=[serializer or JsonSerializer()]
    )
    client_factory.setProtocolOptions(**NO_TIMERS)
    server = server_factory.buildProtocol(CLIENT)
    client = client_factory.buildProtocol(BRIDGE)
    pump = connect(
        server,
        FakeTransport(server, isServer=True, hostAddress=BRIDGE, peerAddress=CLIENT),
        client,
        FakeTransport(client, isServer=False, hostAddress=CLIENT, peerAddress=BRIDGE),
    )
    details = fired(joined)
    return sessions[0], details, pump


@pytest.mark.parametrize("serializer", [JsonSerializer, MsgPackSerializer])
def test_call_reaches_the_forwarder_and_the_reply_resolves_the_call(world, serializer):
    session, details, pump = autobahn_session(world, serializer())
    assert details.realm == "zmqwamp" and details.authid
    call = session.call(REP, {"myrequest": "hello"})
    pump.flush()
    [(address, frames, timeout, reply)] = world.forwarder.requests
    assert address == REP and frames == [b'{"myrequest":"hello"}'] and timeout > 0
    reply.callback([b'{"answer":42}'])
    pump.flush()
    assert fired(call) == {"answer": 42}


def test_a_denied_endpoint_is_an_application_error(world):
    session, _, pump = autobahn_session(world)
    call = session.call("tcp://10.0.0.1:9999", "x")
    pump.flush()
    failure = []
    call.addErrback(failure.append)
    assert failure and failure[0].check(ApplicationError)
    assert failure[0].value.error == "wamp.error.not_authorized"
    assert world.forwarder.requests == []


def test_subscribe_gets_what_the_pub_sends_and_welcome_announces_retention(world):
    session, details, pump = autobahn_session(world)
    assert session._router_roles["broker"].event_retention is True  # WELCOME's roles, as autobahn parsed them
    got: list = []
    subscribed = session.subscribe(got.append, PUB)
    pump.flush()
    assert fired(subscribed).active
    world.hub._message(PUB, [b"tick 1"])  # what the SUB socket reads from the PUB
    pump.flush()
    assert got == ["tick 1"]
