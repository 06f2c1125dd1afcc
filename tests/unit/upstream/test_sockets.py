"""UpstreamSockets: the one path that opens and closes every upstream ZeroMQ connection (issue 22).

A kind of connection of the test's own (PUSH, as the next ZeroMQ patterns will add) goes through it, to show that a
new kind is a small class plus one call; the forwarder's and hub's own tests cover theirs.
"""

from __future__ import annotations

import errno

import pytest
import zmq
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock

from zmqwamp.metrics import BridgeMetrics
from zmqwamp.upstream.budget import UpstreamBudget
from zmqwamp.upstream.endpoints import InvalidEndpoint
from zmqwamp.upstream.errors import BackendUnavailable, LimitExceeded
from zmqwamp.upstream.reader import BridgeZmqFactory
from zmqwamp.upstream.resolver import NameNotResolved
from zmqwamp.upstream.sockets import UpstreamConnection, UpstreamSockets

IP = "tcp://127.0.0.1:5"
NAME = "tcp://svc.example:5"


class PushConnection(UpstreamConnection):
    """A new kind: its kind, its socket type, and what waits for it (here: a record of both outcomes)."""

    kind = "push"
    socketType = zmq.PUSH

    def __init__(self, factory, address, events):
        self.events = events
        super().__init__(factory, address)

    def doRead(self):
        """Nothing to read: a PUSH socket refuses recv (ENOTSUP), which BatchedRead would call."""

    def connect(self, target):
        super().connect(target)
        self.events.append(("connected", target))

    def fail(self, reason):
        self.events.append(("failed", reason))


class Names:
    """A host resolver the test answers: IP addresses at once, names with a pending Deferred (or ``refuse``)."""

    def __init__(self):
        self.pending: dict[str, Deferred] = {}
        self.refuse = False

    def connect_address(self, address):
        if "example" not in address:
            return address
        if self.refuse:
            raise NameNotResolved("host name 'svc.example' did not resolve: known not to")
        d = self.pending[address] = Deferred()
        return d


@pytest.fixture
def up():
    """(sockets, what happened: events and lost connections, metrics)."""
    clock = MemoryReactorClock()
    zmq_factory = BridgeZmqFactory(clock)
    metrics = BridgeMetrics()
    sockets = UpstreamSockets(zmq_factory, metrics, UpstreamBudget(max_total=2), Names())
    happened: dict[str, list] = {"events": [], "lost": []}
    yield sockets, happened, metrics
    zmq_factory.shutdown()


def open_push(sockets, happened, address=IP, **kw):
    return sockets.open(PushConnection, address, None, happened["lost"].append, happened["events"], **kw)


def gauge(metrics, kind="push") -> float:
    return metrics.zmq_sockets.labels(kind)._value.get()


def test_a_new_kind_is_charged_counted_and_connected_at_once_and_close_undoes_it(up):
    """Opening charges the budget under (kind, address), counts the kind's gauge and connects an IP at once."""
    sockets, happened, metrics = up
    connection = open_push(sockets, happened)
    assert happened["events"] == [("connected", IP)] and [e.address for e in connection.endpoints] == [IP]
    assert sockets.budget.total == 1 and connection.budget_key == ("push", IP) and gauge(metrics) == 1
    sockets.close(connection, "done")
    assert connection.closed and sockets.budget.total == 0 and gauge(metrics) == 0
    sockets.close(connection)  # twice: nothing more
    assert sockets.budget.total == 0 and gauge(metrics) == 0


def test_slots_tell_apart_several_connections_of_one_kind_to_one_address(up):
    """A pool's connections to one address are charged each under its own slot."""
    sockets, happened, _ = up
    first, second = open_push(sockets, happened, slot=0), open_push(sockets, happened, slot=1)
    assert {first.budget_key, second.budget_key} == {("push", IP, 0), ("push", IP, 1)}
    assert sockets.budget.total == 2


def test_over_the_budget_no_socket_is_made(up):
    """LimitExceeded comes before the socket: nothing made, nothing counted."""
    sockets, happened, metrics = up
    open_push(sockets, happened, "tcp://127.0.0.1:1")
    open_push(sockets, happened, "tcp://127.0.0.1:2")
    with pytest.raises(LimitExceeded, match="max_zmq_sockets"):
        open_push(sockets, happened, "tcp://127.0.0.1:3")
    assert gauge(metrics) == 2 and len(happened["events"]) == 2


def test_a_socket_zeromq_refuses_is_an_invalid_endpoint_and_its_charge_is_released(up):
    """A ZMQError making the socket (too many sockets, say) raises InvalidEndpoint and leaves nothing charged."""

    class Refused(PushConnection):
        def __init__(self, factory, address, events):
            raise zmq.ZMQError(errno.EMFILE)

    sockets, happened, metrics = up
    with pytest.raises(InvalidEndpoint, match="cannot connect to tcp://127.0.0.1:5"):
        sockets.open(Refused, IP, None, happened["lost"].append, happened["events"])
    assert sockets.budget.total == 0 and gauge(metrics) == 0


def test_a_name_known_not_to_resolve_raises_backend_unavailable_and_leaves_nothing_open(up):
    """A cached failure is known at once: raised, the socket closed, nothing charged, the owner not asked."""
    sockets, happened, metrics = up
    sockets.names.refuse = True
    with pytest.raises(BackendUnavailable, match="did not resolve"):
        open_push(sockets, happened, NAME)
    assert sockets.budget.total == 0 and gauge(metrics) == 0 and happened == {"events": [], "lost": []}


def test_a_host_name_connects_once_resolved_and_what_waited_goes_then(up):
    """Not connected while the name resolves; connected to the address it resolved to, and its waiters let go."""
    sockets, happened, _ = up
    connection = open_push(sockets, happened, NAME)
    assert connection.endpoints == [] and happened["events"] == []
    sockets.names.pending[NAME].callback("tcp://127.0.0.1:5")
    assert [e.address for e in connection.endpoints] == ["tcp://127.0.0.1:5"]
    assert happened["events"] == [("connected", "tcp://127.0.0.1:5")]


def test_a_name_that_fails_later_tells_the_owner_closes_and_fails_the_waiters(up):
    """The owner forgets it first, then it is closed (budget, gauge), then its waiters fail with BackendUnavailable."""
    sockets, _, metrics = up
    seen: list = []
    connection = sockets.open(PushConnection, NAME, None, seen.append, [])
    connection.fail = lambda reason: seen.append(("failed", connection.closed, sockets.budget.total, reason))
    sockets.names.pending[NAME].errback(NameNotResolved("host name 'svc.example' did not resolve: unknown"))
    (lost, (what, closed, charged, reason)) = seen
    assert lost is connection and (what, closed, charged) == ("failed", True, 0) and gauge(metrics) == 0
    assert isinstance(reason, BackendUnavailable) and str(reason).startswith(f"cannot connect to {NAME}: host name")


def test_an_address_zeromq_cannot_connect_to_once_resolved_fails_as_a_name_would(up, monkeypatch):
    """A ZMQError connecting to the resolved address: the owner is told, the socket closed, the waiters fail."""
    sockets, happened, metrics = up
    connection = open_push(sockets, happened, NAME)

    def refuse(endpoints):
        raise zmq.ZMQError(zmq.EINVAL)

    monkeypatch.setattr(connection, "addEndpoints", refuse)
    sockets.names.pending[NAME].callback("tcp://127.0.0.1:5")
    assert happened["lost"] == [connection] and connection.closed and gauge(metrics) == 0
    [(what, reason)] = happened["events"]
    assert what == "failed" and "cannot connect to tcp://127.0.0.1:5" in str(reason)


def test_a_connection_its_owner_closed_while_resolving_hears_nothing_of_the_answer(up):
    """Closed meanwhile (nobody waits any more): the name's answer, good or bad, changes nothing."""
    sockets, happened, metrics = up
    resolved, failed = open_push(sockets, happened, NAME), open_push(sockets, happened, "tcp://other.example:5")
    sockets.close(resolved)
    sockets.close(failed)
    sockets.names.pending[NAME].callback("tcp://127.0.0.1:5")
    sockets.names.pending["tcp://other.example:5"].errback(NameNotResolved("no"))
    assert happened == {"events": [], "lost": []} and sockets.budget.total == 0 and gauge(metrics) == 0
