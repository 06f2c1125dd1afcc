"""Reading a ZeroMQ socket from the reactor: in batches, and fair to everything else.

txZMQ's ``doRead`` reads until the socket is empty, through pyzmq's sugar
layer and ``log.callWithLogger`` per message.  Both our connections (the
shared DEALER of :mod:`zmqwamp.upstream.forwarder` and the shared SUB of
:mod:`zmqwamp.upstream.hub`) read with :class:`BatchedRead` instead:

* at most ``max_batch`` messages per reactor wakeup (256; replies, 16: see
  :class:`~zmqwamp.upstream.forwarder.UpstreamRequestConnection`).  A SUB socket can hold
  up to its high-water mark (10,000 messages); reading them all at once, each
  fanned out to every subscriber, would keep the reactor from every other
  connection (calls, pings, new sessions) for seconds.  When the cap is hit,
  the rest is read in the next reactor iteration;
* pyzmq's Cython ``recv`` directly, as frames (``copy=False``): a frame says
  whether more parts follow, where ``getsockopt(RCVMORE)`` goes through an enum
  per part (a three-part reply: 1.6 us, against 2.3 us with ``RCVMORE`` and
  2.8 us with the sugar layer's ``recv_multipart``, measured on inproc);
* an exception in ``messageReceived`` is logged and reading goes on, as txZMQ does.

ZeroMQ's FD is edge-triggered: it signals again only once the socket has been
read until ``EAGAIN``.  So a batch cut short schedules its own next read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import zmq
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from txzmq import ZmqFactory

from zmqwamp.internals import private_name

log = Logger()


def cython_socket_method(name: str) -> Callable[..., Any]:
    """pyzmq's Cython ``Socket.<name>`` (in ``zmq.backend``, which pyzmq does not document), without its sugar
    layer; if this pyzmq has none, the public ``zmq.Socket.<name>``: same arguments, same frames, slower."""
    method = private_name("zmq.backend", f"Socket.{name}", f"messages go through zmq.Socket.{name} (slower)")
    return method if method is not None else getattr(zmq.Socket, name)


_recv = cython_socket_method("recv")
_NOBLOCK = zmq.NOBLOCK


class WriteHold(Protocol):
    """What the zmq side holds around a batch of messages: the bridge's WebSocket write batch.

    (:class:`zmqwamp.transport.writer.WriteBatch`: frames written while it is held leave in
    one ``send`` per connection at the outer :meth:`release`.)  The zmq side knows only this.
    """

    def hold(self) -> None: ...

    def release(self) -> None: ...


class NoWriteHold:
    """A :class:`WriteHold` that holds nothing: frames go out as they are written."""

    __slots__ = ()

    def hold(self) -> None:
        pass

    def release(self) -> None:
        pass


class BridgeZmqFactory(ZmqFactory):
    """txZMQ's factory (one zmq context for the bridge, the reactor) and the bridge's write batch.

    Every zmq reader holds the batch while it handles a batch of messages, so
    the WebSocket frames they produce go out one ``send`` per connection when
    it ends: the one object through which the zmq side hands batches to the
    WebSocket side (any :class:`WriteHold`; none given: nothing is held).
    ``max_sockets`` raises the context's socket limit (a closed socket keeps its
    slot until libzmq has reaped it).
    """

    def __init__(self, reactor: IReactorTime, write_batch: WriteHold | None = None, max_sockets: int = 0) -> None:
        super().__init__()
        self.reactor = reactor
        self.write_batch: WriteHold = write_batch if write_batch is not None else NoWriteHold()
        if max_sockets > self.context.get(zmq.MAX_SOCKETS):
            self.context.set(zmq.MAX_SOCKETS, max_sockets)


class BatchedRead:
    """Mixin for a txZMQ ``ZmqConnection`` made by a :class:`BridgeZmqFactory`: a capped, logged ``doRead``.

    The factory's write batch is held for each batch, so the WebSocket frames
    it produces go out one ``send`` per connection when it ends.
    """

    max_batch = 256
    # what this mixin uses of its ZmqConnection host
    factory: BridgeZmqFactory | None
    socket: zmq.Socket
    read_scheduled: Any
    messageReceived: Callable[[list[bytes]], None]

    def doRead(self) -> None:
        if self.read_scheduled is not None:
            if not self.read_scheduled.called:
                self.read_scheduled.cancel()
            self.read_scheduled = None
        if self.factory is None:
            return
        writes = self.factory.write_batch
        writes.hold()
        try:
            for _ in range(self.max_batch):
                if self.factory is None:  # shut down, maybe by a callback
                    return
                socket = self.socket
                try:
                    frame = _recv(socket, _NOBLOCK, False)
                except zmq.Again:  # empty: the FD is armed again
                    return
                message = [frame.bytes]
                while frame.more:  # the rest of a multipart message is already there
                    frame = _recv(socket, _NOBLOCK, False)
                    message.append(frame.bytes)
                try:
                    self.messageReceived(message)
                except Exception:
                    log.failure("message from {address} failed in its handler", address=getattr(self, "address", "?"))
            if self.factory is not None:
                self.read_scheduled = self.factory.reactor.callLater(0, self.doRead)
        finally:
            writes.release()
