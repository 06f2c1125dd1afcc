"""Frames to the kernel: the write path of every WebSocket connection.

Twisted's ``transport.write`` only buffers: the bytes go out once the reactor
has polled the socket as writable, which costs two ``epoll_ctl`` calls and a
dispatch per connection and reactor iteration (over half the CPU of a fan-out,
measured).  So a :class:`FrameWriter` sends a frame straight to the socket when
the transport has nothing buffered, and hands Twisted only what the kernel does
not take (or an error): later frames then see a non-empty buffer and queue
behind it, so the order, the producer pausing of :mod:`zmqwamp.transport.outgoing` and the
error handling stay Twisted's.

While a batch of zmq messages is handled (the zmq readers hold the
:class:`WriteBatch`), each connection keeps its frames and sends them in one
``send`` when the batch ends: at high rates that is most of the cost of a
delivery.  A connection keeps at most :data:`CORK_LIMIT` bytes; past that they
go at once.

Reading a ``tcp.Connection``'s buffer state needs Twisted internals
(:data:`TCP_INTERNALS`).  They are checked once per connection; a Twisted
without them, a TLS connection, or any transport that is not plain TCP under
pass-through wrappers gets every frame through ``transport.write`` (logged once
per process for missing internals).
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet import tcp
from twisted.logger import Logger

from zmqwamp.internals import lacks

log = Logger()

# Frames one connection holds for the end of a batch: past this, sent at once.
CORK_LIMIT = 64 * 1024

# What FrameWriter reads of a twisted.internet.tcp.Connection to know its buffer is empty.
TCP_INTERNALS = ("_tempDataLen", "offset", "dataBuffer", "socket", "connected", "disconnecting")


class Flushable(Protocol):
    def flush(self) -> None: ...


class WriteBatch:
    """Frames held while a batch of zmq messages is handled, sent together when it ends.

    The zmq readers (:class:`~zmqwamp.upstream.reader.BatchedRead`) hold it around each
    batch; a :class:`FrameWriter` written to meanwhile keeps its frames and adds
    itself here, and the release sends each writer's frames in one ``send``.
    Outside a batch, frames go out at once.  One per bridge: the WebSocket
    factory and the zmq factory (:class:`~zmqwamp.upstream.reader.BridgeZmqFactory`)
    share it.
    """

    __slots__ = ("holding", "_writers")

    def __init__(self) -> None:
        self.holding = 0
        self._writers: list[Flushable] = []

    def add(self, writer: Flushable) -> None:
        self._writers.append(writer)

    def hold(self) -> None:
        self.holding += 1

    def release(self) -> None:
        self.holding -= 1
        if self.holding or not self._writers:
            return
        writers, self._writers = self._writers, []
        for writer in writers:
            try:
                writer.flush()
            except Exception:  # one connection's failure must not keep the others' frames
                log.failure("sending frames to {peer} failed", peer=getattr(writer, "peer", "?"))


def plain_tcp(transport: Any, wrappers: tuple[type, ...] = ()) -> tcp.Connection | None:
    """The ``twisted.internet.tcp.Connection`` under ``transport``, if frames may go straight to its socket.

    ``wrappers`` pass writes through unchanged (the connection guard, the PROXY
    protocol wrapper): looked under.  None for TLS (frames must go through the
    TLS layer), for anything else, and when this Twisted's ``tcp.Connection``
    lacks one of :data:`TCP_INTERNALS`.
    """
    while wrappers and isinstance(transport, wrappers):
        transport = transport.transport  # type: ignore[attr-defined]  # ProtocolWrapper's, under all of them
    if not isinstance(transport, tcp.Connection) or getattr(transport, "TLS", False):
        return None  # TLS: listenSSL wraps, startTLS sets .TLS
    if lacks(
        transport,
        TCP_INTERNALS,
        "this Twisted's tcp.Connection",
        "WebSocket frames go through transport.write (slower)",
    ):
        return None
    return transport


class FrameWriter:
    """One connection's frames to the kernel: at once, or with the others of a batch.

    ``transport`` is what the WebSocket protocol writes to; ``tcp`` the plain TCP
    connection under it (:func:`plain_tcp`), or None to write everything
    through ``transport``.
    """

    __slots__ = ("peer", "_transport", "_tcp", "_batch", "_corked", "_corked_size")

    def __init__(
        self, transport: Any, tcp_connection: tcp.Connection | None, batch: WriteBatch, peer: str = "?"
    ) -> None:
        self.peer = peer
        self._transport = transport
        self._tcp = tcp_connection
        self._batch = batch
        self._corked: list[bytes] | None = None
        self._corked_size = 0

    @property
    def direct(self) -> bool:
        """Do frames go straight to the socket (plain TCP, internals present)?"""
        return self._tcp is not None

    @property
    def holding(self) -> bool:
        """Are frames held for the end of a batch?"""
        return self._corked is not None

    def write(self, data: bytes) -> None:
        """Send a frame now, or with the others of this batch of zmq messages."""
        if self._tcp is None:
            self._transport.write(data)
            return
        corked = self._corked
        if corked is not None:
            corked.append(data)
            self._corked_size += len(data)
            if self._corked_size >= CORK_LIMIT:
                self.flush()
        elif self._batch.holding:
            self._corked = [data]
            self._corked_size = len(data)
            self._batch.add(self)
        else:
            self._send(data)

    def flush(self) -> None:
        """Send what :meth:`write` holds, in one ``send``."""
        corked = self._corked
        if corked is not None:
            self._corked = None
            self._send(corked[0] if len(corked) == 1 else b"".join(corked))

    def discard(self) -> None:
        """The connection is gone: what is held is not sent."""
        self._corked = None

    def _send(self, data: bytes) -> None:
        """Straight to the socket when the transport has nothing buffered; else to the transport."""
        tcp_connection = self._tcp
        if (
            tcp_connection is not None
            and not tcp_connection._tempDataLen
            and tcp_connection.offset == len(tcp_connection.dataBuffer)
            and tcp_connection.connected
            and not tcp_connection.disconnecting
            and not self._transport.disconnecting
        ):
            try:
                sent = tcp_connection.socket.send(data)
            except OSError:  # EAGAIN; or an error the transport will find and report itself
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        self._transport.write(data)
