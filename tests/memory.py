"""The unit suite's own helpers, beside zmqwamp.testing (the in-memory bridge core, fake channel and forwarder,
sessions, the WebSocket side: public, for anyone's tests, and the suite imports them from there):

* :data:`REP`, :data:`PUB`: the addresses the tests use (``make_world``'s default hook allows them);
* the HTTP side: :class:`SiteWorld` (a site and connection guard on a StringTransport, with a :class:`FakeStatus`),
  :func:`request`, :func:`status`;
* logins and sessions: :class:`IdentityChecker`, :func:`client_signature`, :data:`REVOCABLE`, :func:`subscribed`,
  :func:`revoked`;
* the hub: :func:`configure`, :func:`publish_each`, :class:`SlowNames`, :func:`run_replays`;
* users files: :func:`sync`, :func:`edit_users`.
"""

from __future__ import annotations

from typing import Any

from autobahn.wamp import auth as client_auth
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.web.resource import Resource
from twisted.web.static import Data
from zope.interface import implementer

from zmqwamp.auth.cred import Challenge, Identity
from zmqwamp.auth.users import read_users_file, write_users
from zmqwamp.peers import ClientAddresses
from zmqwamp.testing import World, publish, received, send
from zmqwamp.transport.guard import ConnectionGuardFactory
from zmqwamp.transport.site import BridgeSite, BridgeStatus, HealthResource, HostCheck, LocalOnly
from zmqwamp.upstream.endpoints import Endpoint

from minws import SUBSCRIBED

REP = "tcp://127.0.0.1:9999"
PUB = "tcp://127.0.0.1:9000"


# -- the HTTP side ----------------------------------------------------------------------------------------------------


class FakeStatus:
    """What ``/healthz`` shows (the site's :class:`~zmqwamp.transport.site.BridgeStatus`): set ``stopping``."""

    stopping = False

    def details(self) -> dict[str, Any]:
        return {
            "sessions": 2,
            "calls_in_flight": 3,
            "subscriptions": 4,
            "zmq_endpoints": {"req": ["tcp://10.9.9.9:2"], "sub": ["tcp://10.9.9.9:1"]},
        }


class SiteWorld:
    """The HTTP side in memory: a BridgeSite with /data, /local (local clients only) and /healthz behind a
    ConnectionGuardFactory, on a MemoryReactorClock; ``connect`` gives a connection on a StringTransport."""

    def __init__(self, *, counter=None, trusted=(), allow_hosts=(), timeout=2.0, header="x-forwarded-for"):
        self.clock = MemoryReactorClock()
        self.refused: list[str] = []
        root = Resource()
        root.putChild(b"data", Data(b"hello", "text/plain"))
        root.putChild(b"local", LocalOnly(Data(b"secret", "text/plain")))
        self.status: BridgeStatus = FakeStatus()
        root.putChild(b"healthz", HealthResource(self.status))
        self.site = BridgeSite(root, hosts=HostCheck(allow_hosts), on_refused=self.refused.append, reactor=self.clock)
        self.counter = counter
        self.factory = ConnectionGuardFactory(
            self.site, timeout, self.clock, counter, ClientAddresses(trusted, header), on_limit=self.refused.append
        )

    def connect(self, peer="10.1.2.3", local="127.0.0.1"):
        guard = self.factory.buildProtocol(None)
        transport = StringTransport(IPv4Address("TCP", local, 8080), IPv4Address("TCP", peer, 40000))
        guard.makeConnection(transport)
        return guard, transport


def request(path="/data", method="GET", host="127.0.0.1:8080", headers=()) -> bytes:
    """An HTTP/1.1 request's bytes (a client's, to SiteWorld.connect's guard)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status(data: bytes) -> int:
    """The status code of the (first) HTTP response in ``data``."""
    return int(data.split(b" ", 2)[1])


# -- logins and sessions ----------------------------------------------------------------------------------------------


@implementer(ICredentialsChecker)
class IdentityChecker:
    """Accepts any ticket; the identity (and its expiry) is the test's."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self):
        self.expires = None

    def requestAvatarId(self, credentials):
        return succeed(Identity(credentials.username.decode(), "user", "test", expires=self.expires))


def client_signature(challenge: Challenge, secret: str) -> str:
    """What autobahn-python or autobahn-js sends for this CHALLENGE."""
    if challenge.method == "ticket":
        return secret
    key = secret
    extra = challenge.extra
    if "salt" in extra:
        key = client_auth.derive_key(secret, extra["salt"], extra["iterations"], extra["keylen"])
    return client_auth.compute_wcs(key, extra["challenge"]).decode("ascii")


LONE = "\ud800"  # a lone surrogate: what JSON's "\ud800" escape decodes to (UTF-8 cannot carry it)

# the roles of a client that announces subscription_revocation (told of a revoked subscription)
REVOCABLE = {"subscriber": {"features": {"subscription_revocation": True}}, "caller": {}}


def subscribed(session, channel, topic: str = PUB, options: dict | None = None) -> int:
    """SUBSCRIBE (request 7) to ``topic``; the subscription id of its SUBSCRIBED."""
    send(session, 32, 7, options or {}, topic)
    reply = received(channel)[-1]
    assert reply[0] == SUBSCRIBED, reply
    return reply[2]


def revoked(metrics, what: str) -> float:
    """zmqwamp_revoked_total for ``what`` ("subscription", "session")."""
    return metrics.registry.get_sample_value("zmqwamp_revoked_total", {"what": what}) or 0


# -- the hub ----------------------------------------------------------------------------------------------------------


def configure(world, *endpoints: Endpoint) -> None:
    """What a bridge does at start and on reload: the resolver's aliases, then the hub's histories."""
    world.router.resolver.aliases = {e.alias: e for e in endpoints}
    world.hub.configure_history(endpoints)


def publish_each(world: World, *messages: bytes, address: str = PUB) -> list[int]:
    """Hand the hub one-frame ``messages`` from ``address``, one after the other; their publication ids."""
    return [publish(world, address, message) for message in messages]


class SlowNames:
    """A host resolver (``world.hub.sockets.names``) whose answers the test gives: ``pending[i].callback(address)``."""

    def __init__(self) -> None:
        self.pending: list[Deferred] = []

    def connect_address(self, address: str) -> Deferred:
        d: Deferred = Deferred()
        self.pending.append(d)
        return d


def run_replays(world: World, max_rounds: int = 100_000) -> int:
    """Run the hub's history replays to their end, advancing the clock past their waits; the rounds it took."""
    for rounds in range(max_rounds):
        if not world.hub.replayer.running:
            return rounds
        calls = world.clock.getDelayedCalls()
        assert calls, "replays are running but nothing is scheduled"
        world.clock.advance(max(0.0, min(c.getTime() for c in calls) - world.clock.seconds()))
    raise AssertionError(f"replays still running after {max_rounds} rounds")


# -- users files ------------------------------------------------------------------------------------------------------


def sync(f, *args):
    """Run a users-file key derivation synchronously (instead of in a thread)."""
    try:
        return succeed(f(*args))
    except Exception:
        return fail()


def edit_users(path, change) -> None:
    """Change the users file as the CLI does (written anew, atomically)."""
    users_file = read_users_file(path)
    users = dict(users_file.users)
    change(users)
    write_users(path, users, users_file.decoy_secret)
