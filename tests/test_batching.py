"""The batched data path: capped zmq reads, frames held for a batch, straight-to-socket writes.

Unit tests drive each piece with plain calls (an inproc zmq socket and a clock
in memory, a fake TCP connection); the end-to-end test floods a real bridge
from a PUB faster than it can fan out, and checks that a call still gets its
reply and every subscriber its events in order.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import zmq
from twisted.internet import tcp
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, globalLogPublisher
from txzmq import ZmqConnection, ZmqEndpoint, ZmqEndpointType

from zmqwamp import internals, wire
from zmqwamp.websocket import WampServerProtocol
from zmqwamp.wire import CORK_LIMIT, FrameWriter, WriteBatch, plain_tcp
from zmqwamp.zmqread import BatchedRead, BridgeZmqFactory

from harness import start_bridge, start_rep
from minws import ABORT, EVENT, RESULT, WSClient
from probes import start_fastpub


@pytest.fixture
def errors():
    seen = []

    def observer(event):
        if event.get("log_level") is LogLevel.critical or event.get("log_failure") is not None:
            seen.append(event)

    globalLogPublisher.addObserver(observer)
    yield seen
    globalLogPublisher.removeObserver(observer)


# -- WriteBatch -------------------------------------------------------------
class Conn:
    def __init__(self, log: list, name: str, fail: bool = False) -> None:
        self.log, self.name, self.fail, self.peer = log, name, fail, name

    def flush(self) -> None:
        self.log.append(self.name)
        if self.fail:
            raise RuntimeError("boom")


def test_write_batch_flushes_once_at_the_outer_release():
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


def test_write_batch_one_failure_does_not_keep_the_others(errors):
    log: list = []
    writes = WriteBatch()
    writes.hold()
    writes.add(Conn(log, "a", fail=True))
    writes.add(Conn(log, "b"))
    writes.release()
    assert log == ["a", "b"]
    assert len(errors) == 1 and "sending frames to" in errors[0]["log_format"]


# -- BatchedRead -----------------------------------------------------------------
class Sink(BatchedRead, ZmqConnection):
    socketType = zmq.PULL
    max_batch = 10

    def __init__(self, factory, address, fail_on=None) -> None:
        self.address = address
        self.writes = factory.write_batch
        self.got: list[list[bytes]] = []
        self.held: list[int] = []
        self.fail_on = fail_on
        super().__init__(factory, ZmqEndpoint(ZmqEndpointType.bind, address))

    def messageReceived(self, message):
        self.held.append(self.writes.holding)
        if message[0] == self.fail_on:
            raise ValueError("bad message")
        self.got.append(message)


@pytest.fixture
def zmq_world():
    clock = MemoryReactorClock()
    factory = BridgeZmqFactory(clock, CountingWrites())
    yield factory, clock
    factory.shutdown()


def push(factory, address, n):
    sock = factory.context.socket(zmq.PUSH)
    sock.connect(address)
    for i in range(n):
        sock.send_multipart([b"%d" % i, b"second frame"])
    return sock


class CountingWrites(WriteBatch):
    __slots__ = ("releases",)

    def __init__(self) -> None:
        super().__init__()
        self.releases = 0

    def release(self) -> None:
        self.releases += 1
        super().release()


def test_batched_read_caps_each_wakeup_and_schedules_the_rest(zmq_world):
    factory, clock = zmq_world
    writes = factory.write_batch
    sink = Sink(factory, "inproc://batched-cap")
    sock = push(factory, "inproc://batched-cap", 25)
    try:
        start = writes.releases
        sink.doRead()
        assert len(sink.got) == 10, "one wakeup reads at most max_batch messages"
        assert sink.read_scheduled is not None and sink.read_scheduled.getTime() == clock.seconds()
        clock.advance(0)  # runs the scheduled read, and the one it schedules in turn
        assert len(sink.got) == 25
        assert writes.releases - start == 3, "three batches: 10, 10 and 5"
        assert sink.read_scheduled is None, "an emptied socket waits for its FD again"
        assert [m[0] for m in sink.got] == [b"%d" % i for i in range(25)]
        assert all(m[1] == b"second frame" for m in sink.got), "multipart messages are read whole"
        assert set(sink.held) == {1} and writes.holding == 0, "writes are held during the batch, released after"
    finally:
        sock.close(0)
        sink.shutdown()


def test_batched_read_logs_a_failing_message_and_goes_on(zmq_world, errors):
    factory, clock = zmq_world
    writes = factory.write_batch
    sink = Sink(factory, "inproc://batched-fail", fail_on=b"3")
    sock = push(factory, "inproc://batched-fail", 6)
    try:
        sink.doRead()
        assert [m[0] for m in sink.got] == [b"0", b"1", b"2", b"4", b"5"]
        assert len(errors) == 1 and writes.holding == 0
    finally:
        sock.close(0)
        sink.shutdown()


# -- the write path (zmqwamp.wire, and autobahn's writes through WampServerProtocol) -------------------------------------------------
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
    sock = FakeSocket()
    proto, transport, _ = make_protocol(sock)
    proto._writer.write(b"one")
    proto._writer.write(b"two")
    assert sock.sent == [b"one", b"two"] and transport.written == []


def test_writes_in_a_batch_go_out_in_one_send_at_its_end():
    sock = FakeSocket()
    proto, transport, writes = make_protocol(sock)
    writes.hold()
    proto._writer.write(b"one")
    proto._writer.write(b"two")
    assert sock.sent == []
    writes.release()
    assert sock.sent == [b"onetwo"] and transport.written == []


def test_what_the_kernel_does_not_take_goes_to_the_transport_and_keeps_the_order():
    sock = FakeSocket(take=4)
    proto, transport, writes = make_protocol(sock)
    proto._writer.write(b"0123456789")
    assert sock.sent == [b"0123"] and transport.written == [b"456789"]
    proto._writer.write(b"next")  # the transport now holds data: this must queue behind it
    assert sock.sent == [b"0123"] and transport.written == [b"456789", b"next"]


@pytest.mark.parametrize("error", [BlockingIOError(11, "again"), BrokenPipeError(32, "broken pipe")])
def test_socket_errors_leave_the_frame_to_the_transport(error):
    proto, transport, _ = make_protocol(FakeSocket(error=error))
    proto._writer.write(b"frame")
    assert transport.written == [b"frame"]


def test_closing_transport_gets_frames_through_twisted():
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
    connection = bare_tcp_connection()
    assert plain_tcp(connection) is connection
    connection.TLS = True
    assert plain_tcp(connection) is None, "TLS: frames must go through the TLS layer"
    assert plain_tcp(FakeTransport(FakeTCP(FakeSocket()))) is None, "not a tcp.Connection"


def test_a_twisted_without_the_internals_falls_back_to_transport_write(monkeypatch):
    """A Twisted whose tcp.Connection lacks one of the internals (here: one renamed in a future release):
    frames go through transport.write, logged once per process."""
    missing = "_renamed_in_a_future_twisted"
    monkeypatch.setattr(wire, "TCP_INTERNALS", (*wire.TCP_INTERNALS, missing))
    seen = []

    def observer(event):
        if event.get("what") == "this Twisted's tcp.Connection":
            seen.append(event)

    monkeypatch.setattr(internals, "_warned", set())
    globalLogPublisher.addObserver(observer)
    try:
        assert plain_tcp(bare_tcp_connection(without=missing)) is None
        assert plain_tcp(bare_tcp_connection(without=missing)) is None
    finally:
        globalLogPublisher.removeObserver(observer)
    assert len(seen) == 1 and missing in seen[0]["missing"]
    sock = FakeSocket()
    transport = FakeTransport(FakeTCP(sock))
    writer = FrameWriter(transport, None, WriteBatch())
    writer.write(b"frame")
    assert transport.written == [b"frame"] and sock.sent == [] and not writer.direct


# -- end to end: a flood does not starve the bridge --------------------------------------
def test_flooding_publisher_does_not_starve_calls_and_events_stay_in_order():
    """A PUB far faster than the fan-out: calls are still answered, every subscriber's events stay in order.

    Reading a SUB socket until it is empty never ends while the publisher
    outruns the bridge; reading in capped batches returns to the reactor.
    """
    pub, pub_addr = start_fastpub(400_000, 100)  # as fast as one Python process publishes
    rep, rep_addr = start_rep()
    bridge, url = start_bridge("--anonymous", "--allow", pub_addr, "--allow", rep_addr)

    async def scenario():
        subs = []
        for _ in range(20):
            ws = await WSClient.connect(url)
            await ws.hello()
            assert (await ws.subscribe(pub_addr))[0] == 33
            subs.append(ws)
        last = [None] * len(subs)
        counts = [0] * len(subs)

        async def read(i, ws):
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                msg = await ws.recv_json(timeout=5)
                assert msg[0] == EVENT, msg
                seq = int(msg[4][0].split(" ", 2)[1])
                assert last[i] is None or seq > last[i], f"subscriber {i}: {seq} after {last[i]}"
                last[i] = seq
                counts[i] += 1

        readers = [asyncio.ensure_future(read(i, ws)) for i, ws in enumerate(subs)]
        await asyncio.sleep(1.0)  # the flood is on: the SUB socket is full
        caller = await WSClient.connect(url)
        await caller.hello()
        started = time.monotonic()
        reply = await caller.call(rep_addr, ["ping"], timeout=10)
        waited = time.monotonic() - started
        await asyncio.gather(*readers)
        for ws in subs + [caller]:
            ws.abort()
        return reply, waited, counts

    try:
        reply, waited, counts = asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        for p in (bridge, pub, rep):
            p.stop()
    print(f"call answered in {waited * 1000:.0f} ms under the flood; events per subscriber: {min(counts)}..{max(counts)}")
    assert reply[0] == RESULT and reply[3] == ["got this ping"], reply
    assert waited < 2.0, f"the call waited {waited:.1f}s behind the flood"
    assert min(counts) > 1000, counts


def test_abort_is_followed_by_its_close_frame_when_the_client_closes_at_once():
    """A client that answers ABORT with its own close frame at once (as autobahn-js does) still gets ours.

    Autobahn drops the TCP connection (abort) as soon as the client's close
    frame arrives: our close frame must be on the wire by then, not waiting
    in Twisted's buffer behind an ABORT that went straight to the socket.
    """
    bridge, url = start_bridge("--anonymous")

    async def once() -> int | None:
        ws = await WSClient.connect(url)
        ws.send_json([1, "no-such-realm", {"roles": {"caller": {}}}])
        msg = await ws.recv_json()
        assert msg[0] == ABORT and msg[2] == "wamp.error.no_such_realm", msg
        return await ws.close(1000)

    async def scenario():
        return [await once() for _ in range(200)]

    try:
        codes = asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        bridge.stop()
    assert codes == [1000] * len(codes), f"{codes.count(None)} of {len(codes)} ended without the server's close frame"
