"""The batched data path in memory: frames held for a batch, straight-to-socket writes, the fallback.

WriteBatch, FrameWriter and plain_tcp driven with plain calls on a fake TCP connection.
The capped zmq reads and the flood against a real bridge are in tests/e2e/test_batching.py.
"""

from __future__ import annotations

import pytest
from twisted.internet import tcp
from twisted.logger import LogLevel

from zmqwamp import internals
from zmqwamp.transport import writer as wire
from zmqwamp.transport.websocket import WampServerProtocol
from zmqwamp.transport.writer import CORK_LIMIT, FrameWriter, WriteBatch, plain_tcp


def errors(events: list) -> list:
    """The critical events and those carrying a failure (what a write or read that broke logs)."""
    return [e for e in events if e.get("log_level") is LogLevel.critical or e.get("log_failure") is not None]


# -- WriteBatch -------------------------------------------------------------
class Conn:
    def __init__(self, log: list, name: str, fail: bool = False) -> None:
        self.log, self.name, self.fail, self.peer = log, name, fail, name

    def flush(self) -> None:
        self.log.append(self.name)
        if self.fail:
            raise RuntimeError("boom")


def test_write_batch_flushes_once_at_the_outer_release():
    """A write batch flushes each connection once, at the outer release of nested holds."""
    log: list = []
    writes = WriteBatch()
    writes.hold()
    writes.hold()  # nested (a read that triggers another read)
    writes.add(Conn(log, "a"))
    writes.add(Conn(log, "b"))
    writes.release()
    assert log == [] and writes.holding == 1
    writes.release()
    assert log == ["a", "b"] and writes.holding == 0
    writes.hold()
    writes.release()
    assert log == ["a", "b"], "a connection is flushed once per batch it wrote in"


def test_write_batch_one_failure_does_not_keep_the_others(log_events):
    """A connection whose flush fails is logged once and the others are flushed all the same."""
    log: list = []
    writes = WriteBatch()
    writes.hold()
    writes.add(Conn(log, "a", fail=True))
    writes.add(Conn(log, "b"))
    writes.release()
    assert log == ["a", "b"]
    assert len(errors(log_events)) == 1 and "sending frames to" in errors(log_events)[0]["log_format"]


# -- the write path (zmqwamp.transport.writer, and autobahn's writes through WampServerProtocol) -------------------------------------------------
class FakeSocket:
    def __init__(self, take: int | None = None, error: Exception | None = None) -> None:
        self.sent: list[bytes] = []
        self.wire: list[bytes] = []  # in order: what the socket took, then (later) what the transport buffered
        self.take, self.error = take, error

    def send(self, data: bytes) -> int:
        if self.error is not None:
            raise self.error
        n = len(data) if self.take is None else min(self.take, len(data))
        self.sent.append(bytes(data[:n]))
        self.wire.append(bytes(data[:n]))
        return n


class FakeTCP:
    """What FrameWriter looks at in twisted.internet.tcp.Connection (wire.TCP_INTERNALS)."""

    def __init__(self, socket: FakeSocket) -> None:
        self.socket = socket
        self._tempDataLen = 0
        self.offset = 0
        self.dataBuffer = b""
        self.connected = True
        self.disconnecting = False


class FakeTransport:
    def __init__(self, tcp: FakeTCP) -> None:
        self.tcp = tcp
        self.written: list[bytes] = []
        self.disconnecting = False

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))
        self.tcp.socket.wire.append(bytes(data))
        self.tcp._tempDataLen += len(data)  # buffered, as Twisted's transport would


def make_protocol(socket: FakeSocket) -> tuple[WampServerProtocol, FakeTransport, WriteBatch]:
    """A WampServerProtocol whose writer sends to ``socket`` (as if plain TCP), for its own and autobahn's writes."""
    proto = WampServerProtocol()
    writes = WriteBatch()
    fake_tcp = FakeTCP(socket)
    proto.transport = FakeTransport(fake_tcp)
    proto._writer = FrameWriter(proto.transport, fake_tcp, writes)
    proto.send_queue = []  # what autobahn's sendData looks at
    proto.logOctets = False
    return proto, proto.transport, writes


def test_write_outside_a_batch_goes_to_the_socket_at_once():
    """Outside a batch each frame goes to the socket at once, not through the transport."""
    sock = FakeSocket()
    proto, transport, _ = make_protocol(sock)
    proto._writer.write(b"one")
    proto._writer.write(b"two")
    assert sock.sent == [b"one", b"two"] and transport.written == []


def test_writes_in_a_batch_go_out_in_one_send_at_its_end():
    """Frames written during a batch leave in one send when it ends."""
    sock = FakeSocket()
    proto, transport, writes = make_protocol(sock)
    writes.hold()
    proto._writer.write(b"one")
    proto._writer.write(b"two")
    assert sock.sent == []
    writes.release()
    assert sock.sent == [b"onetwo"] and transport.written == []


def test_what_the_kernel_does_not_take_goes_to_the_transport_and_keeps_the_order():
    """What the kernel does not take goes to Twisted's transport, and later frames queue behind it, in order."""
    sock = FakeSocket(take=4)
    proto, transport, writes = make_protocol(sock)
    proto._writer.write(b"0123456789")
    assert sock.sent == [b"0123"] and transport.written == [b"456789"]
    proto._writer.write(b"next")  # the transport now holds data: this must queue behind it
    assert sock.sent == [b"0123"] and transport.written == [b"456789", b"next"]


@pytest.mark.parametrize("error", [BlockingIOError(11, "again"), BrokenPipeError(32, "broken pipe")])
def test_socket_errors_leave_the_frame_to_the_transport(error):
    """A socket error (EAGAIN, EPIPE) leaves the frame to Twisted's transport."""
    proto, transport, _ = make_protocol(FakeSocket(error=error))
    proto._writer.write(b"frame")
    assert transport.written == [b"frame"]


def test_closing_transport_gets_frames_through_twisted():
    """Once the transport is closing, frames go through Twisted, not to the socket."""
    sock = FakeSocket()
    proto, transport, _ = make_protocol(sock)
    transport.disconnecting = True
    proto._writer.write(b"late")
    assert sock.sent == [] and transport.written == [b"late"]


def test_autobahn_writes_go_after_the_frames_held_for_the_batch():
    """A close frame written by autobahn mid-batch must not overtake the frames before it."""
    sock = FakeSocket()
    proto, transport, writes = make_protocol(sock)
    writes.hold()
    proto._writer.write(b"event1")
    proto._writer.write(b"event2")
    proto.sendData(b"close-frame")
    writes.release()
    assert b"".join(sock.wire) == b"event1event2close-frame"


def test_autobahn_writes_outside_a_batch_go_to_the_socket_at_once():
    """E.g. ABORT then the close frame: both on the wire before the client can answer the ABORT."""
    sock = FakeSocket()
    proto, transport, _ = make_protocol(sock)
    proto._writer.write(b"abort")
    proto.sendData(b"close-frame")
    assert sock.sent == [b"abort", b"close-frame"] and transport.written == []


def test_a_large_batch_is_sent_once_past_the_cork_limit():
    """Held frames go out as soon as they pass CORK_LIMIT, not only at the batch's end."""
    sock = FakeSocket()
    proto, _, writes = make_protocol(sock)
    frame = b"x" * (CORK_LIMIT // 4 + 1)
    writes.hold()
    for _ in range(4):
        proto._writer.write(frame)
    assert sock.sent == [frame * 4], "past CORK_LIMIT the held frames go at once"
    proto._writer.write(b"tail")
    writes.release()
    assert sock.sent == [frame * 4, b"tail"]


def bare_tcp_connection(without: str = "") -> tcp.Connection:
    """A twisted tcp.Connection with what the writer reads set, less the attribute ``without``."""
    connection = tcp.Connection.__new__(tcp.Connection)
    connection.TLS = False
    values = {"_tempDataLen": 0, "offset": 0, "dataBuffer": b"", "socket": None, "connected": 1, "disconnecting": False}
    for name, value in values.items():
        if name != without:
            setattr(connection, name, value)
    return connection


def test_plain_tcp_takes_a_tcp_connection_with_the_internals_it_reads():
    """plain_tcp takes a plain tcp.Connection with the internals it reads, and nothing else (not TLS, not another transport)."""
    connection = bare_tcp_connection()
    assert plain_tcp(connection) is connection
    connection.TLS = True
    assert plain_tcp(connection) is None, "TLS: frames must go through the TLS layer"
    assert plain_tcp(FakeTransport(FakeTCP(FakeSocket()))) is None, "not a tcp.Connection"


def test_a_twisted_without_the_internals_falls_back_to_transport_write(monkeypatch, log_events):
    """A Twisted whose tcp.Connection lacks one of the internals (here: one renamed in a future release):
    frames go through transport.write, logged once per process."""
    missing = "_renamed_in_a_future_twisted"
    monkeypatch.setattr(wire, "TCP_INTERNALS", (*wire.TCP_INTERNALS, missing))
    monkeypatch.setattr(internals, "_warned", set())
    assert plain_tcp(bare_tcp_connection(without=missing)) is None
    assert plain_tcp(bare_tcp_connection(without=missing)) is None
    seen = [e for e in log_events if e.get("what") == "this Twisted's tcp.Connection"]
    assert len(seen) == 1 and missing in seen[0]["missing"]
    sock = FakeSocket()
    transport = FakeTransport(FakeTCP(sock))
    writer = FrameWriter(transport, None, WriteBatch())
    writer.write(b"frame")
    assert transport.written == [b"frame"] and sock.sent == [] and not writer.direct
