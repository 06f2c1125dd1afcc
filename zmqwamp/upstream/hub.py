"""Shared subscriptions: ZeroMQ SUB sockets fanned out to WAMP subscribers.

One txZMQ SUB connection per endpoint address.  Each distinct (endpoint, filter)
pair is one :class:`~zmqwamp.upstream.subscription.Subscription` with one subscription id, the
same for every session (as the WAMP spec asks of brokers); ZeroMQ is subscribed to the
filter while at least one session is.  An alias and the raw address (or two
aliases of one address) are different endpoints, each with its own codec and
slow-consumer policy: different subscriptions over the same SUB socket.  A message is decoded once per codec and
handed to each subscriber as (subscription id, publication id, arguments, details) with a cache shared by the
subscribers of that message, in which the session keeps the EVENT it built, once per WAMP serializer: the same
bytes go to every subscriber.  When nothing is subscribed to an address, its socket is closed.

A SUB socket is opened through :class:`~zmqwamp.upstream.sockets.UpstreamSockets`: charged to the
subscribing session, a tcp host name resolved first (the SUBSCRIBEs wait for it).  An
address holds at most ``max_filters`` distinct filters, whoever subscribed them:
libzmq keeps each in a trie in the SUB socket and in the PUB, and closing a SUB
socket whose filter was a few hundred kB long crashed the process (SIGSEGV in the
reaper thread); the router caps each filter's length.

History (issues 17 and 21, docs/history.md): an alias with ``history = N`` has a
:class:`~zmqwamp.upstream.history.MessageHistory`.  While its address's connection is open, the
SUB socket is also subscribed to everything and every message of the address goes into
the ring; ``keep_open`` opens that connection at start and keeps it open with no
subscriber.  Every message gets a publication id from its address's own counter (so ids
tell a subscriber nothing about other endpoints; an address with history keeps counting
across close and reopen), and the EVENTs of history aliases carry ``_epoch`` (random, per
process).  A SUBSCRIBE with ``get_retained`` or ``_since`` makes a
:class:`~zmqwamp.upstream.replay.Replay`, which :meth:`SubscriptionHub.subscribe` returns with the
subscription and the session starts once it has sent SUBSCRIBED; until it has caught up,
that subscriber is a member of the subscription but not in the live fan-out.  A gap is
reported in the details of the next EVENT that session gets for that SUBSCRIBE (``_gap``).
"""

from __future__ import annotations

import itertools
import secrets
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from txzmq import ZmqSubConnection

from zmqwamp.clientlog import ClientLog
from zmqwamp.metrics import BridgeMetrics
from zmqwamp.upstream.budget import session_peer
from zmqwamp.upstream.codec import CodecError, decode_frames
from zmqwamp.upstream.endpoints import Endpoint, InvalidEndpoint
from zmqwamp.upstream.errors import BackendUnavailable, LimitExceeded
from zmqwamp.upstream.history import MessageHistory
from zmqwamp.upstream.reader import BridgeZmqFactory
from zmqwamp.upstream.replay import Replay, ReplayBudget, Replayer
from zmqwamp.upstream.sockets import UpstreamConnection, UpstreamSockets
from zmqwamp.upstream.subscription import Recovery, Subscriber, Subscription

log = Logger()

# WAMP ids are integers in [1, 2**53]; sequential is allowed for router-scope ids.
MAX_ID = 2**53


# Replayed EVENTs per second per client address (a held message looked at counts 1/100): what
# max_replay_per_second defaults to.  About 0.1 s of CPU per second (an EVENT ~10 us, measured), for as
# long as that address keeps asking; as much again at once.
DEFAULT_MAX_REPLAY_PER_SECOND = 10_000.0


# Seconds between two log lines about messages too large for an alias's history.
TOO_LARGE_LOG_INTERVAL = 60.0


# The details of a live EVENT of an endpoint without history: shared by every such EVENT (never changed).
NO_DETAILS: dict[str, Any] = {}


class Subscribed(NamedTuple):
    """What a SUBSCRIBE joined: the subscription, and the replay to start once SUBSCRIBED is sent (or None)."""

    subscription: Subscription
    replay: Replay | None


class UpstreamSubConnection(UpstreamConnection, ZmqSubConnection):
    """A SUB socket whose messages, read in batches, go to the hub as they are (every frame)."""

    kind = "sub"
    # Bound what ZeroMQ buffers from a fast publisher while we are busy.
    highWaterMark = 10000

    def __init__(self, factory: BridgeZmqFactory, address: str, on_message: Callable[[str, list[bytes]], None]) -> None:
        """Not connected yet: :meth:`connect` (once the host name, if any, is resolved)."""
        self._on_message = on_message
        # SUBSCRIBEs answered when the socket is connected: (Subscribed, Deferred); None once connected
        self.waiting: list[tuple[Subscribed, Deferred]] | None = []
        super().__init__(factory, address)

    def connect(self, target: str) -> None:
        """Connect, and answer the SUBSCRIBEs that waited for it."""
        super().connect(target)
        waiting, self.waiting = self.waiting or [], None
        for subscribed, d in waiting:
            d.callback(subscribed)

    def fail(self, reason: BackendUnavailable) -> None:
        """The SUBSCRIBEs that waited fail (their subscriptions went with the connection)."""
        waiting, self.waiting = self.waiting or [], None
        for _, d in waiting:
            d.errback(reason)

    def messageReceived(self, message: list[bytes]) -> None:
        self._on_message(self.address, message)


class SubscriptionHub:
    """Every shared SUB connection, its subscriptions, their fan-out, histories and replays."""

    def __init__(
        self,
        zmq_factory: BridgeZmqFactory,
        metrics: BridgeMetrics,
        sockets: UpstreamSockets | None = None,
        max_filters: int = 1024,
        max_replay_per_second: float = DEFAULT_MAX_REPLAY_PER_SECOND,
        client_log: ClientLog | None = None,
    ) -> None:
        """``sockets``: the bridge's (its budget, host names); None: one of its own."""
        self._zmq = zmq_factory
        self._metrics = metrics
        self.sockets = sockets if sockets is not None else UpstreamSockets(zmq_factory, metrics)
        self.max_filters = max_filters
        self._connections: dict[str, UpstreamSubConnection] = {}
        # address -> (endpoint, filter) -> Subscription
        self._by_address: dict[str, dict[tuple[Endpoint, bytes], Subscription]] = {}
        self._filters: dict[str, Counter[bytes]] = {}  # address -> filter -> its subscriptions (one per endpoint)
        self._by_id: dict[int, Subscription] = {}
        self._ids = itertools.count(1)
        # address -> the last publication id handed out there; one per zmq message, increasing (2**53 ids:
        # centuries).  One counter per address, so that ids tell nothing of other endpoints' traffic (issue
        # 21); made when the address opens, kept after it closes if it has a history (coverage needs ids that
        # go on increasing), else dropped.
        self._last_ids: dict[str, int] = {}
        self.epoch = secrets.token_hex(8)  # tells this process's publication ids from another's
        reactor = zmq_factory.reactor
        self.replayer = Replayer(
            reactor,
            metrics,
            ReplayBudget(max_replay_per_second, clock=reactor.seconds),
            self.epoch,
            client_log,
            write_batch=zmq_factory.write_batch,
        )
        self._histories: dict[Endpoint, MessageHistory] = {}  # the configured history aliases
        self._recording: dict[str, list[tuple[Endpoint, MessageHistory]]] = {}  # open address -> its rings
        self._kept: set[str] = set()  # addresses of keep_open aliases: open with no subscriber
        self._too_large_logged: dict[Endpoint, float] = {}
        metrics.watch_history(self.history_held)

    @property
    def addresses(self) -> list[str]:
        return sorted(self._connections)

    def subscription_count(self) -> int:
        return len(self._by_id)

    def subscriptions(self) -> list[Subscription]:
        """Every subscription with a subscriber (for re-checking them after a reload)."""
        return list(self._by_id.values())

    def last_publication(self, address: str) -> int:
        """The last publication id handed out for a message of ``address`` (0: none yet, or forgotten)."""
        return self._last_ids.get(address, 0)

    def subscribe(
        self, subscriber: Subscriber, endpoint: Endpoint, filter_: bytes, recovery: Recovery | None = None
    ) -> Subscribed | Deferred:
        """``subscriber`` joins the Subscription for (endpoint, filter): now, or a Deferred while the name resolves.

        With a ``recovery``, the :class:`Subscribed` has the :class:`~zmqwamp.upstream.replay.Replay` the
        session starts once it has sent SUBSCRIBED (None if there is nothing to replay); the
        subscriber joins the live fan-out when the replay has caught up.  A subscriber that
        already holds the subscription gets it again (WAMP: the same id); with a recovery, its
        live delivery pauses for the new replay, unless its replay still runs:
        :class:`~zmqwamp.upstream.errors.LimitExceeded` ``replay_in_progress`` then.

        Raises (or the Deferred fails with) :class:`~zmqwamp.upstream.errors.LimitExceeded`,
        :class:`~zmqwamp.upstream.errors.BackendUnavailable` (the name did not resolve)
        or :class:`~zmqwamp.upstream.endpoints.InvalidEndpoint`.
        """
        address = endpoint.address
        subs = self._by_address.get(address)
        if subs is None:
            subs = self._open(address, subscriber)
        sub = subs.get((endpoint, filter_))
        if sub is not None and recovery is not None and subscriber in sub.replays:
            raise LimitExceeded(
                "replay_in_progress",
                "this session's replay for that subscription is still running: SUBSCRIBE again once it is done",
            )
        if sub is None:
            filters = self._filters[address]
            if filter_ not in filters and len(filters) >= self.max_filters:
                raise LimitExceeded(
                    "max_filters_per_endpoint",
                    f"{self.max_filters} distinct filters are already subscribed at this endpoint",
                )
            sub = Subscription(next(self._ids) % MAX_ID, endpoint, filter_, history=self._histories.get(endpoint))
            subs[(endpoint, filter_)] = sub
            self._by_id[sub.id] = sub
            filters[filter_] += 1
            self._connections[address].subscribe(filter_)
        subscribed = Subscribed(sub, self._add_member(sub, subscriber, recovery))
        connection = self._connections[address]
        if connection.waiting is not None:
            d: Deferred = Deferred()
            connection.waiting.append((subscribed, d))
            return d
        return subscribed

    def _add_member(self, sub: Subscription, subscriber: Subscriber, recovery: Recovery | None) -> Replay | None:
        """Into the live fan-out, or (with a recovery that has something to replay) into ``sub.replays``."""
        if subscriber in sub.replays:  # a plain SUBSCRIBE again while its replay runs: nothing changes
            return None
        if recovery is None:
            sub.subscribers.add(subscriber)
            return None
        sub.subscribers.discard(subscriber)  # asked again: the new replay decides what comes next
        sub.gaps.pop(subscriber, None)
        replay = self._make_replay(sub, subscriber, recovery)
        if replay is None:
            sub.subscribers.add(subscriber)
        else:
            sub.replays[subscriber] = replay
        return replay

    def _open(self, address: str, owner) -> dict:
        """The rare path (see :mod:`zmqwamp.upstream.sockets`): charged to ``owner``, connected once resolved."""
        connection = self.sockets.open(UpstreamSubConnection, address, owner, self._lost, self._message)
        self._connections[address] = connection
        subs = self._by_address[address] = {}
        self._filters[address] = Counter()
        self._last_ids.setdefault(address, 0)
        self._record_address(address)
        return subs

    def _lost(self, connection: UpstreamSubConnection) -> None:
        """Its host name did not resolve: its subscriptions go (the sockets close it and fail the SUBSCRIBEs).

        Every member of a subscription on a connection not connected yet is one of its
        waiters (none has its subscription id yet).  A keep_open address opens again
        with its next subscriber (or reload).
        """
        address = connection.address
        if self._connections.get(address) is not connection:
            return
        for sub in self._by_address[address].values():
            for replay in sub.replays.values():
                replay.stop()
            del self._by_id[sub.id]
        self._forget(address)
        if address in self._kept:
            log.error(
                "keep_open: cannot connect the zmq SUB connection to {address}: its host name did not resolve",
                address=address,
            )

    def unsubscribe(self, subscriber: Subscriber, subscription_id: int) -> bool:
        """Remove ``subscriber``; False if it was not subscribed under that id."""
        sub = self._by_id.get(subscription_id)
        if sub is None:
            return False
        replay = sub.replays.pop(subscriber, None)
        if replay is not None:
            replay.stop()
        elif subscriber in sub.subscribers:
            sub.subscribers.discard(subscriber)
        else:
            return False
        sub.gaps.pop(subscriber, None)
        if not sub.subscribers and not sub.replays:
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
        if subs or address in self._kept:
            self._connections[address].unsubscribe(sub.filter)
            return
        self._close_connection(address, "no subscribers")

    def _close_connection(self, address: str, why: str | None = None) -> None:
        self.sockets.close(self._forget(address), why)

    def _forget(self, address: str) -> UpstreamSubConnection:
        """Drop what the hub keeps for an open ``address`` (not its subscriptions); its connection, to close."""
        last = self._last_ids[address]
        for _, ring in self._recording.pop(address, ()):
            ring.restart(last)  # frees what it held; coverage starts again at the next open
        if not any(e.address == address for e in self._histories):
            del self._last_ids[address]  # no history: its ids need not go on increasing
        del self._by_address[address]
        del self._filters[address]
        return self._connections.pop(address)

    def _message(self, address: str, frames: list[bytes]) -> None:
        self._metrics.events_in.inc()
        subs = self._by_address.get(address)
        recording = self._recording.get(address)
        if not subs and recording is None:
            return
        last_ids = self._last_ids
        publication = last_ids[address] = last_ids[address] + 1
        if recording is not None:
            self._record(recording, publication, frames)
        if not subs:
            return
        first = frames[0]
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
            details = NO_DETAILS if sub.history is None else {"_epoch": self.epoch}
            subscribers = sub.subscribers
            if sub.gaps:  # rare: sessions whose first EVENT since SUBSCRIBE reports a gap
                subscribers = self._send_gaps(sub, publication, args)
            prepared: dict = {}
            sid = sub.id
            delivered = size = 0
            for subscriber in list(subscribers):
                sent = subscriber.send_event(sid, publication, args, details, prepared)
                if sent:
                    delivered += 1
                    size += sent
            # counted once per zmq message and subscription, not per delivery (hot path)
            if delivered:
                self._metrics.events_out.inc(delivered)
                self._metrics.bytes_out.inc(size)

    # -- history ------------------------------------------------------------

    def configure_history(self, endpoints: Iterable[Endpoint]) -> None:
        """Take the aliases of a configuration (at start, and on a reload): their rings and keep_open connections.

        An alias whose history settings are unchanged keeps its ring (and what it
        holds); a changed one starts a new, empty ring (its subscriptions are
        revoked on reload anyway, the alias being a different endpoint now).  A
        ring whose address is open starts recording at once.  A keep_open address
        is opened; one no longer kept open closes if nobody is subscribed to it.
        """
        histories = {
            e: self._histories.get(e) or MessageHistory(e.history, e.history_bytes) for e in endpoints if e.history
        }
        kept = {id(ring) for ring in histories.values()}
        for endpoint, ring in self._histories.items():
            if id(ring) not in kept:  # dropped: replays still reading it see a new generation (a gap)
                ring.restart(self._last_ids.get(endpoint.address, 0))
        self._histories = histories
        for address in list(self._connections):
            self._record_address(address)
        for endpoint in set(self._too_large_logged) - set(histories):
            del self._too_large_logged[endpoint]
        keep = {e.address for e in histories if e.keep_open}
        gone, self._kept = self._kept - keep, keep
        for address in sorted(keep):
            if address not in self._connections:
                self._keep_open(address)
        for address in sorted(gone):
            if address in self._connections and not self._by_address[address]:
                self._close_connection(address, "no longer keep_open")

    def _keep_open(self, address: str) -> None:
        """Open a keep_open address's connection, charged to nobody; a failure is logged (a subscriber retries)."""
        try:
            self._open(address, None)
        except (LimitExceeded, BackendUnavailable, InvalidEndpoint) as e:
            log.error("keep_open: cannot open the zmq SUB connection to {address}: {error}", address=address, error=e)

    def _record_address(self, address: str) -> None:
        """Make the rings of ``address``'s history aliases record (its connection is open); subscribe it to all."""
        old = self._recording.get(address, [])
        held = dict(old)
        rings = []
        started = False
        for endpoint, ring in self._histories.items():
            if endpoint.address != address:
                continue
            if held.get(endpoint) is not ring:
                # Coverage starts with the next message.  An id of its own stands for what the
                # address published while nothing recorded it, so that a _since from before is a gap.
                if not started:
                    self._last_ids[address] += 1
                    started = True
                ring.restart(self._last_ids[address])
            rings.append((endpoint, ring))
        connection = self._connections[address]
        if rings and not old:
            connection.subscribe(b"")  # libzmq counts subscriptions: this one is the rings' own
        elif old and not rings:
            connection.unsubscribe(b"")
        if rings:
            self._recording[address] = rings
        else:
            self._recording.pop(address, None)

    def _record(self, recording: list[tuple[Endpoint, MessageHistory]], publication: int, frames: list[bytes]) -> None:
        for endpoint, ring in recording:
            if not ring.add(publication, frames):
                self._too_large(endpoint, ring, frames)

    def _too_large(self, endpoint: Endpoint, ring: MessageHistory, frames: list[bytes]) -> None:
        self._metrics.history_too_large.labels(endpoint.name).inc()
        now = self._zmq.reactor.seconds()
        if now - self._too_large_logged.get(endpoint, -TOO_LARGE_LOG_INTERVAL) >= TOO_LARGE_LOG_INTERVAL:
            self._too_large_logged[endpoint] = now
            log.warn(
                "a message of {size} bytes from {endpoint} is over its history_bytes ({limit}): not kept, "
                "and the history starts again after it ({count} such message(s) so far)",
                size=sum(len(f) for f in frames),
                endpoint=endpoint.name,
                limit=ring.max_bytes,
                count=ring.too_large,
            )

    def history_held(self) -> Iterator[tuple[str, int, int]]:
        """(alias, messages held, bytes held) of every history alias, for /metrics."""
        for endpoint, ring in self._histories.items():
            yield endpoint.name, len(ring), ring.bytes

    def _make_replay(self, sub: Subscription, subscriber: Subscriber, recovery: Recovery) -> Replay | None:
        """The replay a SUBSCRIBE asked for (None: nothing to replay), and the gap decided now.

        ``_since`` (wins over ``get_retained``): the held messages after it that match, found
        by binary search; if the ring does not reach back to it, or the id is from another
        process (``_epoch``: then everything held is sent), the first EVENT says so in
        ``_gap``; an id above any this address handed out cannot be told: a ``history`` gap,
        nothing replayed; no history: a ``no_history`` gap on the first live EVENT.
        ``get_retained``: the newest held message that matches, scanned for backwards.
        """
        ring = sub.history
        last = self._last_ids.get(sub.endpoint.address, 0)
        since = recovery.since
        if since is not None:
            if ring is None:
                sub.gaps[subscriber] = self._gap(since, "no_history")
                return None
            gap = None
            if recovery.epoch is not None and recovery.epoch != self.epoch:
                gap, position = self._gap(since, "epoch"), ring.start
            elif since > last:
                gap, position = self._gap(since, "history"), ring.end
            else:
                position = ring.position_after(since)
                if not ring.covers(since):
                    gap = self._gap(since, "history")
            return Replay(
                self.replayer,
                sub,
                subscriber,
                ring,
                self._caught_up,
                position=position,
                last_id=since,
                gap=gap,
                key=session_peer(subscriber),
            )
        if recovery.retained and ring is not None:
            return Replay(
                self.replayer,
                sub,
                subscriber,
                ring,
                self._caught_up,
                position=ring.end,
                last_id=last,
                retained=True,
                key=session_peer(subscriber),
            )
        return None

    def _gap(self, since: int, reason: str) -> dict:
        self._metrics.history_gaps.labels(reason).inc()
        return {"since": since, "reason": reason}

    def _caught_up(self, replay: Replay) -> None:
        """A replay reached the ring's end (or stopped short): its subscriber joins the live fan-out now."""
        sub, subscriber = replay.sub, replay.subscriber
        if sub.replays.get(subscriber) is not replay:
            return  # unsubscribed meanwhile
        del sub.replays[subscriber]
        sub.subscribers.add(subscriber)
        if replay.gap is not None:
            sub.gaps[subscriber] = replay.gap

    def _send_gaps(self, sub: Subscription, publication: int, args: list) -> set:
        """Send this live message to the subscribers owed a ``_gap``; the others, to send it to as usual.

        Only if it fits in the client's outgoing buffer: a gap owed because the buffer was full
        must not be dropped by the slow-consumer policy.  Otherwise this message is skipped for
        that subscriber (within the gap it is still owed, counted as a slow-consumer drop).
        """
        details: dict[str, Any] = {} if sub.history is None else {"_epoch": self.epoch}
        owed = list(sub.gaps.items())
        for subscriber, gap in owed:
            gapped = {**details, "_gap": {**gap, "first": publication}}
            sent = subscriber.send_replayed(sub.id, publication, args, gapped)
            if sent is None:
                self._metrics.dropped.labels("slow_consumer").inc()
            elif sent:
                del sub.gaps[subscriber]
                self._metrics.events_out.inc()
                self._metrics.bytes_out.inc(sent)
        return sub.subscribers.difference(subscriber for subscriber, _ in owed)

    def close(self) -> None:
        for sub in self._by_id.values():
            for replay in list(sub.replays.values()):
                replay.stop()
        self.replayer.stop()
        for address in list(self._connections):
            self._close_connection(address)
        self._by_id.clear()
