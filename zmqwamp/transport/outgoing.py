"""A bounded outgoing buffer per WebSocket connection: what to do with a slow consumer.

Twisted's transport buffers whatever is written to it, without limit.  Each
connection registers an :class:`OutgoingBuffer` as the transport's streaming
producer: the transport calls ``pauseProducing`` when its own buffer is over
``bufferSize`` (64 KiB) and ``resumeProducing`` once it has handed everything to
the kernel.  While paused, frames wait here instead, in order, and this queue
is bounded in bytes.  When a frame does not fit:

* an EVENT is handled by its endpoint's slow-consumer policy:

  - ``drop_oldest``: queued EVENTs are dropped, oldest first, to make room;
  - ``drop_newest``: the new EVENT is dropped;
  - ``close``: the connection is closed (WebSocket close 1008, reason
    ``slow consumer``);

* anything else (RESULT, ERROR, SUBSCRIBED, ...) is never dropped: queued
  EVENTs are dropped to make room, and if that is not enough the connection is
  closed the same way.

Dropped EVENTs are counted in ``zmqwamp_dropped_total{reason="slow_consumer"}``
and logged once per burst (a burst ends when the queue has drained, or at
close).  So one connection holds at most ``bufferSize`` plus one frame in the
transport, plus ``limit`` bytes here.

Dropping is O(1) amortized: the queued EVENTs are also in a second FIFO, so
the oldest one is found at once; one not at the head of the queue (a reply
waits before it) becomes a tombstone there, and the queue is compacted when
tombstones are over half of it.  Rebuilding the queue on every drop cost up
to 240 us per EVENT with a full queue of 30-55-byte EVENTs (35,000 entries).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import cast

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from zmqwamp.metrics import BridgeMetrics

log = Logger()

DROP_OLDEST = "drop_oldest"
DROP_NEWEST = "drop_newest"
CLOSE = "close"
SLOW_CONSUMER_POLICIES = (DROP_OLDEST, DROP_NEWEST, CLOSE)

# WebSocket close code and reason for a client that cannot keep up.
SLOW_CONSUMER_CLOSE_CODE = 1008
SLOW_CONSUMER_REASON = "slow consumer"


# An entry of the queue: [write, size, policy]; policy None: a frame that must be delivered.  A list, so that a
# dropped EVENT can become a tombstone (write None) where it stands.
_Entry = list

# The queues of a connection with nothing waiting: an empty tuple that stands for a deque (an empty deque is
# ~600 bytes, and most connections never queue); it has no append, so nothing can be queued into it by mistake.
_EMPTY = cast("deque[_Entry]", ())


@implementer(IPushProducer)
class OutgoingBuffer:
    """Frames waiting for a paused transport, bounded to ``limit`` bytes.

    ``send(write, size, policy)``: ``write()`` puts the frame on the transport;
    ``policy`` is the EVENT's slow-consumer policy, or None for a frame that
    must be delivered.  ``overflow(text)`` is called (once) when the connection
    must be closed.

    One per connection, so kept small: ``__slots__``, and no deque until a frame
    has to wait (an empty deque is ~600 bytes; most connections never queue).
    """

    __slots__ = (
        "limit",
        "paused",
        "closed",
        "queued_bytes",
        "_overflow",
        "_metrics",
        "_peer",
        "_clock",
        "_queue",
        "_events",
        "_tombstones",
        "_burst_dropped",
        "_burst_policy",
        "_burst_started",
    )

    def __init__(
        self,
        limit: int,
        overflow: Callable[[str], None],
        metrics: BridgeMetrics,
        peer: str = "?",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.paused = False
        self.closed = False
        self.queued_bytes = 0
        self._overflow = overflow
        self._metrics = metrics
        self._peer = peer
        self._clock = clock
        # Every frame waiting, in order (tombstones included); () while nothing waits.
        self._queue: deque[_Entry] = _EMPTY
        # The EVENTs among them (policy not None, not dropped, not written), oldest first: what makes room.
        self._events: deque[_Entry] = _EMPTY
        self._tombstones = 0  # dropped EVENTs still in _queue (write None)
        self._burst_dropped = 0
        self._burst_policy = ""
        self._burst_started = 0.0

    def __len__(self) -> int:
        """Frames waiting (dropped ones not counted)."""
        return len(self._queue) - self._tombstones

    def writes_through(self) -> bool:
        """Would :meth:`send` write a frame at once?  (Open, not paused, nothing queued.)"""
        return not self.closed and not self.paused and not self._queue

    def send(self, write: Callable[[], None], size: int, policy: str | None = None) -> None:
        if self.closed:
            return
        if not self.paused and not self._queue:
            write()
            return
        if self.queued_bytes + size > self.limit:
            if policy == CLOSE:
                self._close(f"{SLOW_CONSUMER_REASON}: outgoing buffer over {self.limit} bytes")
                return
            if policy == DROP_NEWEST:
                self._dropped(1, policy)
                return
            self._make_room(size)
            if self.queued_bytes + size > self.limit:
                if policy is None:
                    self._close(f"{SLOW_CONSUMER_REASON}: reply undeliverable, outgoing buffer over {self.limit} bytes")
                else:  # drop_oldest, and what is queued is all replies
                    self._dropped(1, policy)
                return
        if not self._queue:
            self._queue = deque()
        entry = [write, size, policy]
        self._queue.append(entry)
        if policy is not None:
            if not self._events:
                self._events = deque()
            self._events.append(entry)
        self._add(size)

    def flush(self) -> None:
        """Write everything queued now, paused or not (before a close frame)."""
        while self._queue:
            self._write_next()
        self._end_burst()

    # -- IPushProducer ------------------------------------------------------

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while self._queue and not self.paused and not self.closed:
            self._write_next()  # may call pauseProducing
        if not self._queue:
            self._end_burst()

    def stopProducing(self) -> None:
        """The connection is gone: free the queue (its EVENTs count as dropped)."""
        policies = self._clear()
        if policies:
            self._dropped(len(policies), policies[0])
        self._end_burst()
        self.closed = True

    # -- internals ----------------------------------------------------------

    def _write_next(self) -> None:
        """Take the oldest entry off the queue and write it (a tombstone is only taken off)."""
        queue = self._queue
        entry = queue.popleft()
        write, size, policy = entry
        if write is None:
            self._tombstones -= 1
        else:
            if policy is not None:
                self._events.popleft()  # the oldest EVENT waiting is this one: both queues are in order
            self._add(-size)
            write()
        if not queue and queue is self._queue:  # (write() may have closed the connection, and cleared it)
            self._queue = self._events = _EMPTY
            self._tombstones = 0

    def _clear(self) -> list[str]:
        """Empty the queue; return the policies of the EVENTs that were in it."""
        policies = [policy for _, _, policy in self._events]
        self._queue = self._events = _EMPTY
        self._tombstones = 0
        self._add(-self.queued_bytes)
        return policies

    def _make_room(self, size: int) -> None:
        """Drop queued EVENTs, oldest first, until ``size`` more bytes fit: O(1) per EVENT dropped, amortized."""
        need = self.queued_bytes + size - self.limit
        queue, events = self._queue, self._events
        freed = dropped = 0
        policy = DROP_OLDEST
        while events and freed < need:
            entry = events.popleft()
            freed += entry[1]
            dropped += 1
            policy = entry[2]
            if queue[0] is entry:
                queue.popleft()
            else:  # a reply waits before it: leave a tombstone, taken off when the queue gets there
                entry[0] = None
                self._tombstones += 1
        while queue and queue[0][0] is None:
            queue.popleft()
            self._tombstones -= 1
        if self._tombstones > len(queue) >> 1:  # compact: then at least as many drops again before the next one
            self._queue = deque(entry for entry in queue if entry[0] is not None)
            self._tombstones = 0
        if not events:
            self._events = _EMPTY
        if not self._queue:
            self._queue = _EMPTY
        if dropped:
            self._add(-freed)
            self._dropped(dropped, policy)

    def _add(self, size: int) -> None:
        if size:
            self.queued_bytes += size
            self._metrics.outgoing_buffered.inc(size)

    def _dropped(self, n: int, policy: str) -> None:
        self._metrics.dropped.labels("slow_consumer").inc(n)
        if not self._burst_dropped:
            self._burst_started = self._clock()
            self._burst_policy = policy
        self._burst_dropped += n

    def _end_burst(self) -> None:
        if self._burst_dropped:
            log.warn(
                "slow consumer {peer}: dropped {n} events ({policy}) in {seconds:.1f}s with its outgoing buffer full",
                peer=self._peer,
                n=self._burst_dropped,
                policy=self._burst_policy,
                seconds=self._clock() - self._burst_started,
            )
            self._burst_dropped = 0

    def _close(self, text: str) -> None:
        dropped = len(self._clear())
        self._metrics.dropped.labels("slow_consumer").inc(dropped)
        dropped += self._burst_dropped
        self._burst_dropped = 0
        self.closed = True
        self._metrics.limit_exceeded.labels("slow_consumer").inc()
        log.warn("slow consumer {peer}: closing ({text}); {n} events dropped", peer=self._peer, text=text, n=dropped)
        self._overflow(text)
