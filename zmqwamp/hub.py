"""Shared subscriptions: ZeroMQ SUB sockets fanned out to WAMP subscribers.

One txZMQ SUB connection per endpoint address.  Each distinct (endpoint, filter)
pair is one :class:`Subscription` with one WAMP subscription id, the same for
every session (as the WAMP spec asks of brokers); ZeroMQ is subscribed to the
filter while at least one session is.  An alias and the raw address (or two
aliases of one address) are different endpoints, each with its own codec and
slow-consumer policy: different subscriptions over the same SUB socket.  A message is decoded once per codec and
serialized once per WAMP serializer; the same bytes go to every subscriber.
When nothing is subscribed to an address, its socket is closed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Protocol

import zmq
from autobahn.wamp.message import Event
from twisted.logger import Logger
from txzmq import ZmqEndpoint, ZmqEndpointType, ZmqFactory, ZmqSubConnection

from zmqwamp.codec import CodecError, decode_frames
from zmqwamp.endpoints import Endpoint, InvalidEndpoint
from zmqwamp.flow import PendingWrites
from zmqwamp.metrics import BridgeMetrics
from zmqwamp.zmqread import BatchedRead

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

    def __init__(self, factory: ZmqFactory, address: str, on_message, writes: PendingWrites | None = None) -> None:
        self.address = address
        self._on_message = on_message
        self.writes = writes
        super().__init__(factory, ZmqEndpoint(ZmqEndpointType.connect, address))

    def messageReceived(self, message: list[bytes]) -> None:
        self._on_message(self.address, message)


class SubscriptionHub:
    def __init__(self, zmq_factory: ZmqFactory, metrics: BridgeMetrics, writes: PendingWrites | None = None) -> None:
        self._zmq = zmq_factory
        self._metrics = metrics
        self._writes = writes
        self._connections: dict[str, UpstreamSubConnection] = {}
        # address -> (endpoint, filter) -> Subscription
        self._by_address: dict[str, dict[tuple[Endpoint, bytes], Subscription]] = {}
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

    def subscribe(self, subscriber: Subscriber, endpoint: Endpoint, filter_: bytes) -> Subscription:
        address = endpoint.address
        subs = self._by_address.get(address)
        if subs is None:
            try:
                connection = UpstreamSubConnection(self._zmq, address, self._message, self._writes)
            except zmq.ZMQError as e:
                raise InvalidEndpoint(f"cannot connect to {address}: {e.strerror}") from None
            self._connections[address] = connection
            subs = self._by_address[address] = {}
            self._metrics.zmq_sockets.labels("sub").inc()
            log.info("zmq SUB connection to {address} opened", address=address)
        sub = subs.get((endpoint, filter_))
        if sub is None:
            sub = Subscription(next(self._ids) % _MAX_ID, endpoint, filter_)
            subs[(endpoint, filter_)] = sub
            self._by_id[sub.id] = sub
            self._connections[address].subscribe(filter_)
        sub.subscribers.add(subscriber)
        return sub

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
        connection = self._connections[address]
        if subs:
            connection.unsubscribe(sub.filter)
            return
        del self._by_address[address]
        del self._connections[address]
        connection.shutdown()
        self._metrics.zmq_sockets.labels("sub").dec()
        log.info("zmq SUB connection to {address} closed (no subscribers)", address=address)

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
        for connection in self._connections.values():
            connection.shutdown()
            self._metrics.zmq_sockets.labels("sub").dec()
        self._connections.clear()
        self._by_address.clear()
        self._by_id.clear()
