"""History replays: what a SUBSCRIBE with ``get_retained`` or ``_since`` is sent before live EVENTs (issue 21).

A :class:`Replay` is one subscriber's catch-up on one subscription from the endpoint's ring
(:class:`~zmqwamp.upstream.history.MessageHistory`).  It runs in steps across reactor turns, on the hub's
:class:`Replayer`: a dedicated :class:`~twisted.internet.task.Cooperator` that steps every running
replay in turn for at most :data:`TIME_SLICE` per reactor turn, each step looking at most at
:data:`SCAN_STEP` held messages and sending at most :data:`SEND_STEP` EVENTs.  (Before issue 21 a
``_since: 0`` on a 100,000-message ring was 2.5 s of CPU in one turn.)

While its replay runs, the subscriber is a member of the subscription but not in the live
fan-out.  The ring records every message of the address, so the cursor catches up with the
messages that arrive meanwhile, and the subscriber joins live delivery in the turn the cursor
reaches the ring's end: nothing lost, nothing reordered, nothing twice.  What the replay cannot
send is reported in ``_gap`` on the next EVENT the subscriber gets (``since``: the last id it was
sent, or the one it asked for; ``first``: that EVENT's id):

- ``history``: the ring evicted past the cursor, or started again (a message too large to keep);
- ``slow_consumer``: the next EVENT would not fit in the client's outgoing buffer.  The replay
  stops there and the subscriber joins live; it can resume with ``_since`` = ``since``.

``get_retained``: the ring is scanned backwards from its end at SUBSCRIBE time for the newest
match, which is sent (``retained``), then the messages that arrived during the scan and match.

Cost is charged to who asks: every step's work (held messages looked at, at
:data:`SCAN_WEIGHT` each, plus EVENTs sent) is taken from a token bucket per client address
(:class:`ReplayBudget`, ``max_replay_per_second``); a replay whose address is over it waits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import Cooperator
from twisted.logger import Logger

from zmqwamp.clientlog import ClientLog, clip
from zmqwamp.metrics import BridgeMetrics
from zmqwamp.upstream.codec import CodecError, decode_frames
from zmqwamp.upstream.history import FRAMES, PUBLICATION, MessageHistory
from zmqwamp.upstream.reader import NoWriteHold, WriteHold
from zmqwamp.upstream.subscription import Subscription

log = Logger()

# Held messages one step looks at (about 0.4 ms), and EVENTs it sends (about 0.7 ms with JSON; measured).
SCAN_STEP = 4096
SEND_STEP = 64
# Seconds the replays may run in one reactor turn, all together; then other work (zmq, clients) goes first.
TIME_SLICE = 0.004
# What looking at one held message costs, in replayed EVENTs (the unit of max_replay_per_second).  Measured
# in memory on a 100,000-message ring of 6-byte messages, JSON: 0.10 us per held message looked at (a filter
# that matches nothing), 10.2 us per EVENT decoded, serialized, framed and queued (_since: 0).
SCAN_WEIGHT = 1 / 100

# _gap reasons a replay reports (besides "epoch" and "no_history", decided at SUBSCRIBE by the hub)
GAP_HISTORY = "history"
GAP_SLOW_CONSUMER = "slow_consumer"


class ReplaySubscriber(Protocol):
    """What a replay sends to: a session (:class:`zmqwamp.wamp.session.WampSession`), which builds the EVENT."""

    peer: str

    def send_replayed(self, subscription: int, publication: int, args: list, details: dict) -> int | None:
        """Send an EVENT if it fits in the outgoing buffer: its size, 0 if not sent (too large), None if no room."""


class ReplayBudget:
    """Replay work per client address: a token bucket of ``rate`` units per second, ``burst`` at once.

    A unit is one replayed EVENT (looking at a held message is :data:`SCAN_WEIGHT` of one).
    :meth:`charge` takes what a step cost, going into debt if need be, and says how long the
    address's replays must wait before the next step: one step over, then the rate holds.
    """

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1.0, rate if burst is None else burst)
        self._clock = clock
        self._buckets: dict[Hashable, tuple[float, float]] = {}  # key -> (tokens, when)

    def charge(self, key: Hashable, cost: float) -> float:
        """Take ``cost`` units from ``key``'s bucket; seconds to wait before its next step (0: go on)."""
        now = self._clock()
        tokens, stamp = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - stamp) * self.rate) - cost
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > 1024:
            self._forget_full(now)
        return 0.0 if tokens >= 0 else -tokens / self.rate

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that have refilled: they hold nothing a new one would not."""
        for key, (tokens, stamp) in list(self._buckets.items()):
            if tokens + (now - stamp) * self.rate >= self.burst:
                del self._buckets[key]


class Replayer:
    """What the replays of one hub share: the cooperator, the budget, the epoch, metrics and logs."""

    def __init__(
        self,
        clock: IReactorTime,
        metrics: BridgeMetrics,
        budget: ReplayBudget,
        epoch: str,
        client_log: ClientLog | None = None,
        time_slice: float = TIME_SLICE,
        scheduler: Callable[[Callable[[], None]], object] | None = None,
        write_batch: WriteHold | None = None,
    ) -> None:
        """``time_slice``, ``scheduler``: the cooperator's (tests step it one replay step at a time).

        ``write_batch``: the bridge's (:class:`~zmqwamp.upstream.reader.WriteHold`), held for each step as the
        zmq readers hold it for a batch: a step's EVENTs to one client leave in one ``send`` (one per EVENT was
        ~23 us of the ~28 us each replayed EVENT cost, measured end to end).
        """
        self.clock = clock
        self.write_batch: WriteHold = write_batch if write_batch is not None else NoWriteHold()
        self.metrics = metrics
        self.budget = budget
        self.epoch = epoch
        self.client_log = client_log if client_log is not None else ClientLog(metrics)
        self.running = 0  # replays started and not finished or stopped
        self.cooperator = Cooperator(
            terminationPredicateFactory=lambda: _deadline(time.monotonic() + time_slice),
            scheduler=scheduler or (lambda work: clock.callLater(0, work)),  # type: ignore[arg-type]
        )

    def stop(self) -> None:
        self.cooperator.stop()


def _deadline(at: float) -> Callable[[], bool]:
    return lambda: time.monotonic() >= at


class Replay:
    """One subscriber's catch-up on one subscription: made by the hub at SUBSCRIBE, started after SUBSCRIBED.

    ``since`` mode: from ``position`` (the first held message after the asked id) to the ring's
    end.  ``retained`` mode: first backwards from ``position - 1`` for the newest match, then on
    from ``position`` (the ring's end at SUBSCRIBE).  ``last_id``: what ``_gap.since`` says if the
    replay cannot send everything (the asked id, then each id sent).  ``gap``: a gap decided at
    SUBSCRIBE (``epoch``, ``history``), for the first EVENT.  ``join(replay)``: the hub puts the
    subscriber into the live fan-out (with the gap it is still owed, :attr:`gap`).
    """

    __slots__ = (
        "replayer",
        "sub",
        "subscriber",
        "ring",
        "join",
        "key",
        "generation",
        "position",
        "back",
        "last_id",
        "gap",
        "stopped",
        "finished",
        "_retained",
        "_task",
        "_wake",
        "_in_step",
        "_sent",
        "_bytes",
        "_undecodable",
        "_error",
    )

    def __init__(
        self,
        replayer: Replayer,
        sub: Subscription,
        subscriber: ReplaySubscriber,
        ring: MessageHistory,
        join: Callable[[Replay], None],
        *,
        position: int,
        last_id: int,
        retained: bool = False,
        gap: dict | None = None,
        key: Hashable = None,
    ) -> None:
        self.replayer = replayer
        self.sub = sub
        self.subscriber = subscriber
        self.ring = ring
        self.join = join
        self.key = key  # the client address charged (ReplayBudget)
        self.generation = ring.generation
        self.position = position
        self._retained = retained
        self.back: int | None = position - 1 if retained else None  # the backward scan's next position
        self.last_id = last_id
        self.gap = gap
        self.stopped = False  # by the hub: unsubscribed, session gone, revoked
        self.finished = False  # joined live
        self._task: Any = None
        self._wake: IDelayedCall | None = None
        self._in_step = False
        self._sent = 0  # EVENTs, and their bytes, not counted in the metrics yet (once per step)
        self._bytes = 0
        self._undecodable = 0
        self._error = ""

    # -- driven by the session and the hub --------------------------------------

    def start(self) -> None:
        """Run it: the session calls this right after sending SUBSCRIBED."""
        if self.stopped or self.finished or self._task is not None or self._wake is not None:
            return
        self.replayer.running += 1
        self.replayer.metrics.history_replays.inc()
        self._task = self.replayer.cooperator.cooperate(self._steps())

    def stop(self) -> None:
        """The subscriber left (or may no longer hold the subscription): no more steps."""
        if self.stopped or self.finished:
            return
        self.stopped = True
        self._end()

    # -- the steps ------------------------------------------------------------

    def _steps(self) -> Iterator[None]:
        writes = self.replayer.write_batch
        while not (self.stopped or self.finished):
            self._in_step = True
            writes.hold()
            try:
                wait = self._step()
            except Exception:
                log.failure("history replay for subscription {id} failed: joining live", id=self.sub.id)
                self._owe_gap(GAP_HISTORY)
                self._finish()
                return
            finally:
                self._in_step = False
                writes.release()
            if self.stopped or self.finished:
                return
            if wait > 0:  # the address is over its budget: wake up later, out of the cooperator meanwhile
                self._task = None
                self._wake = self.replayer.clock.callLater(wait, self._resume)
                return
            yield None

    def _resume(self) -> None:
        self._wake = None
        if not (self.stopped or self.finished):
            self._task = self.replayer.cooperator.cooperate(self._steps())

    def _step(self) -> float:
        """One step: at most SCAN_STEP held messages looked at and SEND_STEP EVENTs sent; seconds to wait."""
        ring = self.ring
        if ring.generation != self.generation:  # started again: what it held after our place is gone
            self._owe_gap(GAP_HISTORY)
            self._finish()
            return 0.0
        if self.back is not None:
            scanned, sent = self._scan_back(ring)
        else:
            scanned, sent = self._scan_on(ring)
        metrics = self.replayer.metrics
        metrics.history_scanned.inc(scanned)
        self._count_sent()
        wait = self.replayer.budget.charge(self.key, scanned * SCAN_WEIGHT + sent)
        if wait > 0:
            metrics.history_replay_throttled.inc()
        return wait

    def _count_sent(self) -> None:
        if self._sent:
            metrics = self.replayer.metrics
            metrics.history_replayed.inc(self._sent)
            metrics.events_out.inc(self._sent)
            metrics.bytes_out.inc(self._bytes)
            self._sent = self._bytes = 0

    def _scan_on(self, ring: MessageHistory) -> tuple[int, int]:
        """Forward from ``position``: send what matches; join live at the ring's end.  (Looked at, sent.)"""
        if self.position < ring.start:  # evicted past the cursor
            self._owe_gap(GAP_HISTORY)
            self.position = ring.start
        filter_ = self.sub.filter
        first = self.position
        scanned = sent = 0
        for held in ring.window(first, min(ring.end, first + SCAN_STEP)):
            scanned += 1
            if not held[FRAMES][0].startswith(filter_):
                continue
            size = self._send(held[PUBLICATION], held[FRAMES], retained=False)
            if size is None:  # no room: stop before it, join live, say so on the next EVENT
                self.position = first + scanned - 1
                self._owe_gap(GAP_SLOW_CONSUMER)
                self._finish()
                return scanned - 1, sent
            if self.stopped:
                return scanned, sent
            sent += 1 if size else 0
            if sent >= SEND_STEP:
                break
        self.position = first + scanned
        if self.position >= ring.end:
            self._finish()
        return scanned, sent

    def _scan_back(self, ring: MessageHistory) -> tuple[int, int]:
        """``get_retained``: look back from ``back`` for the newest match and send it.  (Looked at, sent.)"""
        back = self.back
        assert back is not None
        low = max(ring.start, back - SCAN_STEP + 1)  # past back (evicted meanwhile): nothing to look at
        filter_ = self.sub.filter
        scanned = 0
        for held in reversed(ring.window(low, back + 1)):
            scanned += 1
            if held[FRAMES][0].startswith(filter_):
                self.back = None
                if self._send(held[PUBLICATION], held[FRAMES], retained=True) is None:
                    self._owe_gap(GAP_SLOW_CONSUMER)
                    self._finish()
                    return scanned, 0
                return scanned, 1
        # down to low: on with the next step, or nothing older is held: no last value
        self.back = None if low <= ring.start else low - 1
        return scanned, 0

    def _send(self, publication: int, frames: tuple[bytes, ...], retained: bool) -> int | None:
        """One held message to the subscriber: its size, 0 if not sent (undecodable, too large), None if no room."""
        sub = self.sub
        try:
            args = decode_frames(frames, sub.endpoint.codec)
        except CodecError as e:
            self.replayer.metrics.dropped.labels("event_codec").inc()
            self._undecodable += 1
            self._error = self._error or str(e)
            return 0
        details: dict[str, Any] = {"retained": True} if retained else {}
        details["_epoch"] = self.replayer.epoch
        gap = self.gap
        if gap is not None:
            details["_gap"] = {**gap, "first": publication}
        size = self.subscriber.send_replayed(sub.id, publication, args, details)
        if size:
            self.gap = None
            if not retained:
                self.last_id = publication
            self._sent += 1
            self._bytes += size
        return size

    def _owe_gap(self, reason: str) -> None:
        """The subscriber may miss messages after ``last_id``: its next EVENT says so (the first reason stays)."""
        if self.gap is None:
            self.gap = {"since": self.last_id, "reason": reason}
            self.replayer.metrics.history_gaps.labels(reason).inc()

    def _finish(self) -> None:
        """Caught up (or stopped short): into the live fan-out, in this turn."""
        self.finished = True
        self._end()
        self.join(self)

    def _end(self) -> None:
        self._count_sent()
        replayer = self.replayer
        if self._task is not None or self._wake is not None:
            replayer.running -= 1
            replayer.metrics.history_replays.dec()
        if self._wake is not None:
            if self._wake.active():
                self._wake.cancel()
            self._wake = None
        task, self._task = self._task, None
        if task is not None and not self._in_step:
            task.stop()  # from outside its own step: out of the cooperator now (within it, the step returns)
        if self._undecodable:
            replayer.client_log.emit(
                self.subscriber,
                log.warn,
                "history replay to {peer}: {n} held message(s) from {endpoint} not decodable with codec {codec}, "
                "not sent ({error})",
                peer=getattr(self.subscriber, "peer", "?"),
                n=self._undecodable,
                endpoint=clip(self.sub.endpoint.name),
                codec=self.sub.endpoint.codec,
                error=self._error,
            )
            self._undecodable = 0
