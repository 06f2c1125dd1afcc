"""Shared request connections: WAMP CALLs in, ZeroMQ requests out.

One txZMQ request connection (a DEALER that puts a message id and an empty
delimiter in front of each request, so plain ``zmq.REP`` servers answer it) per
endpoint address, shared by every session, with any number of requests in
flight.  Each request has a deadline; when it passes, the request id is
forgotten (so a stuck backend cannot wedge the socket, txZMQ #77) and a reply
arriving later is dropped.  Timeouts and late or malformed replies are counted
(``zmqwamp_calls_total{outcome="timeout"}``, ``zmqwamp_dropped_total{reason=
"reply_late"}``) and logged per upstream address: the first at once, then one
summary line per interval (:class:`~zmqwamp.clientlog.RepeatSummary`), since a
client decides how many there are (2,000 CALLs with a 1 ms ``timeout`` wrote
1,846 warnings in 2.9 s, one per timeout and one per late reply).  A connection
with nothing in flight is closed after ``idle_close`` seconds.

Opening a connection is the rare path, and where the checks are: it goes through
:class:`~zmqwamp.upstream.sockets.UpstreamSockets` (the socket charged to the calling session,
a tcp host name resolved before the socket connects: requests wait in the connection's
outbox meanwhile, their deadlines running).  At a limit of the budget, the least recently
used idle connection is closed to make room (:meth:`RequestForwarder._reclaim_idle`).  A call
on an open connection does none of this.
"""

from __future__ import annotations

import itertools
import os
import stat
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import zmq
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from zmqwamp.clientlog import RepeatSummary
from zmqwamp.metrics import BridgeMetrics
from zmqwamp.upstream.errors import BackendUnavailable, CallTimedOut
from zmqwamp.upstream.reader import BridgeZmqFactory, cython_socket_method
from zmqwamp.upstream.sockets import UpstreamConnection, UpstreamSockets

log = Logger()


# The request frames are bytes: pyzmq's Cython send without the sugar layer's
# checks (send_multipart checks every part's type, then calls the sugar
# Socket.send per part): ~2 us less per request.  The frames go out the same.
_send = cython_socket_method("send")


_MORE = zmq.NOBLOCK | zmq.SNDMORE


class _NotConnected:
    """Stands in for the flush call of a connection whose host name is being resolved: requests wait."""

    @staticmethod
    def cancel() -> None:
        pass


_NOT_CONNECTED = _NotConnected()


class UpstreamRequestConnection(UpstreamConnection):
    """A DEALER with request ids: each request is ``[id, b"", *frames]``, as a REQ socket would send.

    Leaner than txZMQ's ZmqREQConnection on the hot path: ids are a counter
    (never reused, so a late reply can never match a later request), requests
    are sent in batches (see :meth:`_flush`) with pyzmq's plain ``send`` per
    frame, and replies are read in batches (:class:`~zmqwamp.upstream.reader.BatchedRead`).
    """

    kind = "req"
    socketType = zmq.DEALER
    # Bound what ZeroMQ queues for a backend that is down; sends past it fail fast.
    highWaterMark = 1000
    # Replies per reactor wakeup.  A batch's frames go out when it ends, so the first
    # reply of a batch waits for the others: small batches keep the tail short (p99
    # at 64 calls in flight: ~4 ms with 16, ~4.5-5 ms with 256; noisy), and most go
    # to different sessions anyway, so a bigger batch saves few sends.
    max_batch = 16

    def __init__(self, factory: BridgeZmqFactory, address: str, on_unmatched: Callable[[str, str], None]) -> None:
        """Not connected yet (:meth:`connect`): requests wait in the outbox."""
        self._on_unmatched = on_unmatched
        self._requests: dict[bytes, Deferred] = {}
        self._next_id = itertools.count(1)
        self._outbox: list[tuple[bytes, Sequence[bytes]]] = []  # (id, frames) not sent yet
        self._flush_call: IDelayedCall | _NotConnected | None = _NOT_CONNECTED  # sendMsg queues; connect() sends
        self._reactor = factory.reactor
        # Deadlines, one FIFO per timeout value: requests with the same timeout
        # expire in the order they were sent, so each FIFO needs one timer (for its
        # oldest request), not one per request.  Answered requests leave their
        # entry behind; it is dropped when it reaches the front.
        self._deadlines: dict[float, deque[tuple[float, bytes]]] = {}
        self._deadline_timers: dict[float, Any] = {}
        super().__init__(factory, address)

    def connect(self, target: str) -> None:
        """Connect the socket to ``target`` (the resolved address) and send the requests that waited for it."""
        super().connect(target)
        self._flush_call = None
        if self._outbox:
            self._flush()

    def fail(self, reason: BackendUnavailable) -> None:
        """Fail every request still waiting (the connection could not be made)."""
        requests, self._requests = self._requests, {}
        for d in requests.values():
            d.errback(reason)

    def _forget(self, msg_id: bytes) -> None:
        self._requests.pop(msg_id, None)

    def sendMsg(self, frames: Sequence[bytes], timeout: float) -> Deferred:
        """Queue a request, sent at the end of this reactor iteration.

        The Deferred fires with the reply frames, or fails with
        :class:`CallTimedOut` after ``timeout`` seconds, or with
        :class:`BackendUnavailable` if ZeroMQ refuses it (queue full).
        Cancelling it forgets the request (and if it was not sent yet, it never is).
        """
        msg_id = next(self._next_id).to_bytes(8, "big")
        d: Deferred = Deferred(canceller=lambda _: self._forget(msg_id))
        requests = self._requests
        requests[msg_id] = d
        self._outbox.append((msg_id, frames))
        reactor = self._reactor
        if self._flush_call is None:
            self._flush_call = reactor.callLater(0, self._flush)
        fifo = self._deadlines.get(timeout)
        if fifo is None:
            fifo = self._deadlines[timeout] = deque()
        else:
            while fifo and fifo[0][1] not in requests:  # answered: forget its deadline
                fifo.popleft()
        fifo.append((reactor.seconds() + timeout, msg_id))
        if timeout not in self._deadline_timers:
            self._deadline_timers[timeout] = reactor.callLater(timeout, self._expire, timeout)
        return d

    def _expire(self, timeout: float) -> None:
        """Fail the requests of this FIFO whose deadline has passed; wait for the next one."""
        del self._deadline_timers[timeout]
        fifo = self._deadlines[timeout]
        requests = self._requests
        now = self._reactor.seconds()
        while fifo and (fifo[0][0] <= now or fifo[0][1] not in requests):
            _, msg_id = fifo.popleft()
            d = requests.pop(msg_id, None)
            if d is not None:
                d.errback(CallTimedOut(f"no reply from {self.address} within {timeout:g}s"))
                if self.factory is None:  # shut down by a callback
                    return
        if timeout in self._deadline_timers:  # a callback sent a new request, which set the timer
            return
        if fifo:
            self._deadline_timers[timeout] = self._reactor.callLater(fifo[0][0] - now, self._expire, timeout)
        else:
            del self._deadlines[timeout]

    def _flush(self) -> None:
        """Send the queued requests back to back.

        Why batch: a zmq send that finds the I/O thread asleep wakes it (a syscall
        and, on a busy machine, a context switch).  Sent one by one between the
        CALLs of a reactor iteration, nearly every request paid that; sent back
        to back, most do not (measured: ~12 us against ~4 us per request).
        """
        self._flush_call = None
        outbox, self._outbox = self._outbox, []
        socket = self.socket
        for msg_id, frames in outbox:
            if msg_id not in self._requests:
                continue  # cancelled before it was sent
            parts = (msg_id, b"", *frames)
            last = len(parts) - 1
            try:
                for i, part in enumerate(parts):
                    _send(socket, part, _MORE if i < last else zmq.NOBLOCK)
            except zmq.ZMQError as e:  # at the first part: the whole request was refused
                self._requests.pop(msg_id).errback(BackendUnavailable(f"cannot send to {self.address}: {e.strerror}"))
        # as txZMQ after a send: the zmq FD may not signal replies already waiting, so read now
        self.doRead()

    def shutdown(self) -> None:
        if self._flush_call is not None:
            self._flush_call.cancel()
            self._flush_call = None
        for timer in self._deadline_timers.values():
            timer.cancel()
        self._deadline_timers.clear()
        self._deadlines.clear()
        super().shutdown()

    def messageReceived(self, message: list[bytes]) -> None:
        if len(message) < 2 or message[1] != b"":
            self._on_unmatched(self.address, "malformed")
            return
        d = self._requests.pop(message[0], None)
        if d is None:
            self._on_unmatched(self.address, "late")
            return
        d.callback(message[2:])


def _ipc_listening(path: str) -> bool:
    """Is something bound at this ipc path?  (A missing socket file would only show as a timeout.)"""
    if path.startswith("@"):  # Linux abstract namespace: no file to look at
        return True
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


class RequestForwarder:
    """Every shared REQ connection: one per address, opened by the first request, closed once idle."""

    def __init__(
        self,
        zmq_factory: BridgeZmqFactory,
        metrics: BridgeMetrics,
        idle_close: float = 30.0,
        sockets: UpstreamSockets | None = None,
    ) -> None:
        """``sockets``: the bridge's (its budget, host names); None: one of its own."""
        self._clock = zmq_factory.reactor
        self._metrics = metrics
        self._idle_close = idle_close
        self.sockets = sockets if sockets is not None else UpstreamSockets(zmq_factory, metrics)
        self.sockets.budget.reclaim = self._reclaim_idle
        self._connections: dict[str, UpstreamRequestConnection] = {}
        self._inflight: dict[str, int] = {}
        self._idle_timers: dict = {}  # address -> its idle-close timer, oldest idle first
        self._repeats = RepeatSummary(self._clock)  # timeouts, late and malformed replies, per address

    @property
    def addresses(self) -> list[str]:
        return sorted(self._connections)

    def is_open(self, address: str) -> bool:
        return address in self._connections

    def request(self, address: str, frames: list[bytes], timeout: float, owner=None) -> Deferred:
        """Send ``frames`` to ``address``; fire with the reply frames.

        Fails with :class:`CallTimedOut` after ``timeout`` seconds, with
        :class:`BackendUnavailable` if ZeroMQ refuses it (raised at once for a
        missing ipc socket) or the host name does not resolve; cancelling the
        returned Deferred forgets the request.  ``owner`` (the session) is charged
        for the connection if this request opens it: raises
        :class:`~zmqwamp.upstream.errors.LimitExceeded` if it may not.
        """
        if address.startswith("ipc://") and not _ipc_listening(address[len("ipc://") :]):
            raise BackendUnavailable(f"cannot send to {address}: no socket there (is the service running?)")
        connection = self._connection(address, owner)
        return connection.sendMsg(frames, timeout).addBoth(self._release, address)

    def _connection(self, address: str, owner) -> UpstreamRequestConnection:
        timer = self._idle_timers.pop(address, None)
        if timer is not None and timer.active():
            timer.cancel()
        connection = self._connections.get(address)
        if connection is None:
            connection = self._open(address, owner)
        self._inflight[address] = self._inflight.get(address, 0) + 1
        return connection

    def _open(self, address: str, owner) -> UpstreamRequestConnection:
        """The rare path (see :mod:`zmqwamp.upstream.sockets`): charged to ``owner``, connected once resolved."""
        connection = self.sockets.open(UpstreamRequestConnection, address, owner, self._lost, self._unmatched_reply)
        self._connections[address] = connection
        return connection

    def _lost(self, connection: UpstreamRequestConnection) -> None:
        """Its host name did not resolve: forget it (the sockets close it and fail its requests)."""
        if self._connections.get(connection.address) is connection:
            del self._connections[connection.address]

    def _discard(self, address: str, why: str | None = None) -> None:
        """Close the connection to ``address`` and stop charging for it."""
        self.sockets.close(self._connections.pop(address), why)

    def _reclaim_idle(self, counts: Callable[[tuple], bool]) -> bool:
        """Close the least recently used idle connection that ``counts``; False if there is none (the budget's hook)."""
        for address in self._idle_timers:
            if counts(("req", address)):
                timer = self._idle_timers.pop(address)
                if timer.active():
                    timer.cancel()
                self._close(address, "to make room")
                return True
        return False

    def _release(self, result, address: str):
        """A request to ``address`` is over (``result`` passes through): count it, close the connection once idle."""
        if isinstance(result, Failure) and result.check(CallTimedOut):
            self._repeats.emit(
                ("timeout", address),
                log.warn,
                "call to {address} timed out: {error}",
                "{n} more calls to {address} timed out in the last {seconds}s",
                address=address,
                error=result.getErrorMessage(),
            )
        left = self._inflight[address] - 1
        self._inflight[address] = left
        if left == 0:
            self._idle_timers[address] = self._clock.callLater(self._idle_close, self._close, address)
        return result

    def _close(self, address: str, why: str = "idle") -> None:
        self._idle_timers.pop(address, None)
        if self._inflight.get(address):
            return
        self._inflight.pop(address, None)
        if address in self._connections:
            self._discard(address, why)

    def _unmatched_reply(self, address: str, why: str) -> None:
        self._metrics.dropped.labels(f"reply_{why}").inc()
        if why == "late":
            self._repeats.emit(
                ("late", address),
                log.warn,
                "late reply from {address} dropped: its call had already timed out or been cancelled",
                "{n} more late replies from {address} dropped in the last {seconds}s",
                address=address,
            )
        else:
            self._repeats.emit(
                ("malformed", address),
                log.warn,
                "malformed reply from {address} dropped (no request envelope)",
                "{n} more malformed replies from {address} dropped in the last {seconds}s",
                address=address,
            )

    def close(self) -> None:
        """Close every connection (pending requests fail with CancelledError)."""
        for address in list(self._connections):
            for d in list(self._connections[address]._requests.values()):
                d.cancel()
            self._discard(address)
        for timer in self._idle_timers.values():
            if timer.active():
                timer.cancel()
        self._idle_timers.clear()
        self._inflight.clear()
        self._repeats.stop()
