"""The batched data path with real zmq sockets and a real bridge.

Capped zmq reads on inproc sockets (a clock in memory); then a PUB floods a real bridge
faster than it can fan out: a call still gets its reply and every subscriber its events
in order. The write side in memory is in tests/unit/transport/test_writer.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import zmq
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel
from txzmq import ZmqConnection, ZmqEndpoint, ZmqEndpointType

from zmqwamp.transport.writer import WriteBatch
from zmqwamp.upstream.reader import BatchedRead, BridgeZmqFactory

from harness import start_bridge, start_rep
from minws import ABORT, EVENT, RESULT, WSClient
from probes import start_fastpub
from waiting import eventually, timing_bound


def errors(events: list) -> list:
    """The critical events and those carrying a failure (what a write or read that broke logs)."""
    return [e for e in events if e.get("log_level") is LogLevel.critical or e.get("log_failure") is not None]


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


def test_batched_read_logs_a_failing_message_and_goes_on(zmq_world, log_events):
    factory, clock = zmq_world
    writes = factory.write_batch
    sink = Sink(factory, "inproc://batched-fail", fail_on=b"3")
    sock = push(factory, "inproc://batched-fail", 6)
    try:
        sink.doRead()
        assert [m[0] for m in sink.got] == [b"0", b"1", b"2", b"4", b"5"]
        assert len(errors(log_events)) == 1 and writes.holding == 0
    finally:
        sock.close(0)
        sink.shutdown()


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
        await eventually(lambda: min(counts) > 0, what="every subscriber getting the flood")
        await asyncio.sleep(1.0)  # the scenario: the flood has been on a while, the SUB socket is full
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
    assert min(counts) > 0, counts  # every subscriber got events (in order: checked as they came)
    timing_bound(waited < 2.0, f"the call waited {waited:.1f} s behind the flood (bound 2 s)")
    timing_bound(min(counts) > 1000, f"events per subscriber in 3 s: {min(counts)}..{max(counts)} (bound: over 1000)")


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
