"""Shared subscriptions: ZeroMQ SUB sockets fanned out to WAMP subscribers.

One txZMQ SUB connection per endpoint address.  Each distinct (endpoint, filter)
pair is one :class:`Subscription` with one WAMP subscription id, the same for
every session (as the WAMP spec asks of brokers); ZeroMQ is subscribed to the
filter while at least one session is.  An alias and the raw address (or two
aliases of one address) are different endpoints, each with its own codec and
slow-consumer policy: different subscriptions over the same SUB socket.  A message is decoded once per codec and
serialized once per WAMP serializer; the same bytes go to every subscriber.
When nothing is subscribed to an address, its socket is closed.

Opening a SUB socket charges the subscribing session in the
:class:`~zmqwamp.limits.UpstreamBudget`, and a tcp host name is resolved by
:class:`~zmqwamp.names.HostResolver` first (the SUBSCRIBEs wait for it).  An
address holds at most ``max_filters`` distinct filters, whoever subscribed them:
libzmq keeps each in a trie in the SUB socket and in the PUB, and closing a SUB
socket whose filter was a few hundred kB long crashed the process (SIGSEGV in the
reaper thread); the router caps each filter's length.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

import zmq
from autobahn.wamp.message import Event
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from txzmq import ZmqEndpoint, ZmqEndpointType, ZmqSubConnection

from zmqwamp.codec import CodecError, decode_frames
from zmqwamp.endpoints import Endpoint, InvalidEndpoint
from zmqwamp.forwarder import BackendUnavailable
from zmqwamp.limits import LimitExceeded, UpstreamBudget
from zmqwamp.metrics import BridgeMetrics
from zmqwamp.names import HostResolver, NameNotResolved
from zmqwamp.zmqread import BatchedRead, BridgeZmqFactory

log = Logger()

# WAMP ids are integers in [1, 2**53]; sequential is allowed for router-scope ids.
_MAX_ID = 2**53


class Subscriber(Protocol):
    def send_event(self, event: Event, prepared: dict[str, Any]) -> int:
        """Send ``event``; ``prepared`` caches its frames per serializer across subscribers.

        Returns the payload bytes sent (0 if not sent), which the hub counts.
        """


@dataclass(eq=False)
class Subscription:
    id: int
    endpoint: Endpoint
    filter: bytes
    subscribers: set = field(default_factory=set)


class UpstreamSubConnection(BatchedRead, ZmqSubConnection):
    """A SUB socket whose messages, read in batches, go to the hub as they are (every frame)."""

    # Bound what ZeroMQ buffers from a fast publisher while we are busy.
    highWaterMark = 10000

    def __init__(self, factory: BridgeZmqFactory, address: str, on_message) -> None:
        """Not connected yet: :meth:`connect` (once the host name, if any, is resolved)."""
        self.address = address
        self._on_message = on_message
        # SUBSCRIBEs answered when the socket is connected: (subscriber, subscription, Deferred); None once connected
        self.waiting: list[tuple[Any, Subscription, Deferred]] | None = []
        super().__init__(factory)

    def connect(self, target: str) -> None:
        self.addEndpoints([ZmqEndpoint(ZmqEndpointType.connect, target)])

    def messageReceived(self, message: list[bytes]) -> None:
        self._on_message(self.address, message)


class SubscriptionHub:
    def __init__(
        self,
        zmq_factory: BridgeZmqFactory,
        metrics: BridgeMetrics,
        budget: UpstreamBudget | None = None,
        names: HostResolver | None = None,
        max_filters: int = 1024,
    ) -> None:
        self._zmq = zmq_factory
        self._metrics = metrics
        self._budget = budget if budget is not None else UpstreamBudget()
        self._names = names if names is not None else HostResolver(zmq_factory.reactor, metrics=metrics)
        self.max_filters = max_filters
        self._connections: dict[str, UpstreamSubConnection] = {}
        # address -> (endpoint, filter) -> Subscription
        self._by_address: dict[str, dict[tuple[Endpoint, bytes], Subscription]] = {}
        self._filters: dict[str, Counter[bytes]] = {}  # address -> filter -> its subscriptions (one per endpoint)
        self._by_id: dict[int, Subscription] = {}
        self._ids = itertools.count(1)
        self._publications = itertools.count(1)

    @property
    def addresses(self) -> list[str]:
        return sorted(self._connections)

    def subscription_count(self) -> int:
        return len(self._by_id)

    def subscriptions(self) -> list[Subscription]:
        """Every subscription with a subscriber (for re-checking them after a reload)."""
        return list(self._by_id.values())

    def subscribe(self, subscriber: Subscriber, endpoint: Endpoint, filter_: bytes) -> Subscription | Deferred:
        """``subscriber`` joins the Subscription for (endpoint, filter): now, or a Deferred while the name resolves.

        Raises (or the Deferred fails with) :class:`~zmqwamp.limits.LimitExceeded`,
        :class:`~zmqwamp.forwarder.BackendUnavailable` (the name did not resolve)
        or :class:`~zmqwamp.endpoints.InvalidEndpoint`.
        """
        address = endpoint.address
        subs = self._by_address.get(address)
        if subs is None:
            subs = self._open(address, subscriber)
        sub = subs.get((endpoint, filter_))
        if sub is None:
            filters = self._filters[address]
            if filter_ not in filters and len(filters) >= self.max_filters:
                raise LimitExceeded(
                    "max_filters_per_endpoint",
                    f"{self.max_filters} distinct filters are already subscribed at this endpoint",
                )
            sub = Subscription(next(self._ids) % _MAX_ID, endpoint, filter_)
            subs[(endpoint, filter_)] = sub
            self._by_id[sub.id] = sub
            filters[filter_] += 1
            self._connections[address].subscribe(filter_)
        sub.subscribers.add(subscriber)
        connection = self._connections[address]
        if connection.waiting is not None:
            d: Deferred = Deferred()
            connection.waiting.append((subscriber, sub, d))
            return d
        return sub

    def _open(self, address: str, owner) -> dict:
        """The rare path: charge ``owner``, make the SUB socket, connect it (after resolving a host name)."""
        self._budget.charge(("sub", address), owner)
        try:
            connection = UpstreamSubConnection(self._zmq, address, self._message)
        except zmq.ZMQError as e:
            self._budget.release(("sub", address))
            raise InvalidEndpoint(f"cannot connect to {address}: {e.strerror}") from None
        self._connections[address] = connection
        subs = self._by_address[address] = {}
        self._filters[address] = Counter()
        self._metrics.zmq_sockets.labels("sub").inc()
        try:
            target = self._names.connect_address(address)
            if not isinstance(target, Deferred):
                self._connected(target, connection)
        except (NameNotResolved, zmq.ZMQError) as e:
            self._close_connection(address)
            if isinstance(e, NameNotResolved):
                raise BackendUnavailable(f"cannot connect to {address}: {e}") from None
            raise InvalidEndpoint(f"cannot connect to {address}: {e.strerror}") from None
        if isinstance(target, Deferred):
            target.addCallbacks(self._resolved, self._unresolved, callbackArgs=(connection,), errbackArgs=(connection,))
            log.info("zmq SUB connection to {address} opened (resolving its host name)", address=address)
        else:
            log.info("zmq SUB connection to {address} opened", address=address)
        return subs

    def _connected(self, target: str, connection: UpstreamSubConnection) -> None:
        connection.connect(target)
        waiting, connection.waiting = connection.waiting or [], None
        for _, sub, d in waiting:
            d.callback(sub)

    def _resolved(self, target: str, connection: UpstreamSubConnection) -> None:
        if self._connections.get(connection.address) is not connection:
            return  # every subscriber left while its name was being resolved
        try:
            self._connected(target, connection)
        except zmq.ZMQError as e:
            self._unresolved(Failure(BackendUnavailable(f"cannot connect to {target}: {e.strerror}")), connection)
            return
        log.info("zmq SUB connection to {address} connected to {target}", address=connection.address, target=target)

    def _unresolved(self, failure: Failure, connection: UpstreamSubConnection) -> None:
        """The socket cannot connect: the SUBSCRIBEs waiting for it fail, and it closes.

        Every subscriber of a connection not connected yet is one of its waiters (none
        has its subscription id yet), so dropping theirs closes the socket.
        """
        if self._connections.get(connection.address) is not connection:
            return
        waiting, connection.waiting = connection.waiting or [], None
        reason = BackendUnavailable(f"cannot connect to {connection.address}: {failure.getErrorMessage()}")
        for subscriber, sub, _ in waiting:
            if subscriber in sub.subscribers:
                sub.subscribers.discard(subscriber)
                if not sub.subscribers:
                    self._drop(sub)
        for _, _, d in waiting:
            d.errback(reason)

    def unsubscribe(self, subscriber: Subscriber, subscription_id: int) -> bool:
        """Remove ``subscriber``; False if it was not subscribed under that id."""
        sub = self._by_id.get(subscription_id)
        if sub is None or subscriber not in sub.subscribers:
            return False
        sub.subscribers.discard(subscriber)
        if not sub.subscribers:
            self._drop(sub)
        return True

    def _drop(self, sub: Subscription) -> None:
        address = sub.endpoint.address
        del self._by_id[sub.id]
        subs = self._by_address[address]
        del subs[(sub.endpoint, sub.filter)]
        filters = self._filters[address]
        filters[sub.filter] -= 1
        if not filters[sub.filter]:
            del filters[sub.filter]
        if subs:
            self._connections[address].unsubscribe(sub.filter)
            return
        self._close_connection(address)
        log.info("zmq SUB connection to {address} closed (no subscribers)", address=address)

    def _close_connection(self, address: str) -> None:
        del self._by_address[address]
        del self._filters[address]
        self._connections.pop(address).shutdown()
        self._metrics.zmq_sockets.labels("sub").dec()
        self._budget.release(("sub", address))

    def _message(self, address: str, frames: list[bytes]) -> None:
        self._metrics.events_in.inc()
        subs = self._by_address.get(address)
        if not subs:
            return
        first = frames[0]
        publication = next(self._publications) % _MAX_ID
        decoded: dict[str, list] = {}
        for sub in list(subs.values()):
            if not first.startswith(sub.filter):
                continue
            codec = sub.endpoint.codec
            args = decoded.get(codec)
            if args is None:
                try:
                    args = decoded[codec] = decode_frames(frames, codec)
                except CodecError as e:
                    self._metrics.dropped.labels("event_codec").inc()
                    log.warn("event from {address} dropped: {error}", address=address, error=str(e))
                    continue
            event = Event(sub.id, publication, args=args)
            prepared: dict[str, Any] = {}
            delivered = size = 0
            for subscriber in list(sub.subscribers):
                sent = subscriber.send_event(event, prepared)
                if sent:
                    delivered += 1
                    size += sent
            # counted once per zmq message and subscription, not per delivery (hot path)
            if delivered:
                self._metrics.events_out.inc(delivered)
                self._metrics.bytes_out.inc(size)

    def close(self) -> None:
        for address in list(self._connections):
            self._close_connection(address)
        self._by_id.clear()
