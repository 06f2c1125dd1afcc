"""RequestForwarder: matching, deadlines, late replies, idle close (clock in memory, replies injected)."""

import pytest
from twisted.internet.defer import CancelledError
from twisted.internet.testing import MemoryReactorClock
from txzmq import ZmqFactory

from zmqwamp.forwarder import CallTimedOut, RequestForwarder
from zmqwamp.metrics import BridgeMetrics

ADDR = "tcp://127.0.0.1:1"


@pytest.fixture
def setup():
    clock = MemoryReactorClock()
    zmq_factory = ZmqFactory()
    zmq_factory.reactor = clock
    metrics = BridgeMetrics()
    forwarder = RequestForwarder(zmq_factory, clock, metrics, idle_close=30)
    yield forwarder, clock, metrics
    forwarder.close()
    zmq_factory.shutdown()


def ids(forwarder):
    return list(forwarder._connections[ADDR]._requests)


def reply(forwarder, msg_id, *frames):
    forwarder._connections[ADDR].messageReceived([msg_id, b"", *frames])


def test_replies_are_matched_to_their_requests(setup):
    forwarder, _, _ = setup
    results = {}
    for i in range(3):
        forwarder.request(ADDR, [b"%d" % i], 5).addCallback(lambda r, i=i: results.setdefault(i, r))
    pending = ids(forwarder)
    for i, msg_id in reversed(list(enumerate(pending))):
        reply(forwarder, msg_id, b"r%d" % i)
    assert results == {0: [b"r0"], 1: [b"r1"], 2: [b"r2"]}


def test_deadline_fails_the_call_and_drops_the_late_reply(setup):
    forwarder, clock, metrics = setup
    d = forwarder.request(ADDR, [b"x"], 2.0)
    [msg_id] = ids(forwarder)
    clock.advance(1.9)
    assert not d.called
    clock.advance(0.2)
    failure = []
    d.addErrback(failure.append)
    assert failure[0].check(CallTimedOut) and "within 2s" in str(failure[0].value)
    assert ids(forwarder) == []
    reply(forwarder, msg_id, b"late")
    assert metrics.dropped.labels("reply_late")._value.get() == 1


def test_late_reply_never_reaches_a_later_call(setup):
    forwarder, clock, _ = setup
    first = forwarder.request(ADDR, [b"1"], 1.0)
    first.addErrback(lambda f: None)
    [old_id] = ids(forwarder)
    clock.advance(1.5)
    second = forwarder.request(ADDR, [b"2"], 1.0)
    got = []
    second.addCallback(got.append)
    reply(forwarder, old_id, b"for the first")
    assert got == []
    [new_id] = ids(forwarder)
    reply(forwarder, new_id, b"for the second")
    assert got == [[b"for the second"]]


def test_cancel_forgets_the_request(setup):
    forwarder, _, _ = setup
    d = forwarder.request(ADDR, [b"x"], 5)
    d.cancel()
    errors = []
    d.addErrback(errors.append)
    assert errors[0].check(CancelledError)
    assert ids(forwarder) == []


def test_malformed_reply_is_dropped_and_counted(setup):
    forwarder, _, metrics = setup
    forwarder.request(ADDR, [b"x"], 5).addErrback(lambda f: None)
    forwarder._connections[ADDR].messageReceived([b"no-envelope"])
    assert metrics.dropped.labels("reply_malformed")._value.get() == 1
    assert len(ids(forwarder)) == 1


def test_idle_connection_is_closed(setup):
    forwarder, clock, metrics = setup
    d = forwarder.request(ADDR, [b"x"], 5)
    reply(forwarder, ids(forwarder)[0], b"ok")
    assert d.called and forwarder.addresses == [ADDR]
    clock.advance(29)
    forwarder.request(ADDR, [b"y"], 5).addErrback(lambda f: None)  # in use again: not closed
    clock.advance(5)  # times out
    assert forwarder.addresses == [ADDR]
    clock.advance(30)
    assert forwarder.addresses == []
    assert metrics.zmq_sockets.labels("req")._value.get() == 0


def test_refused_send_fails_the_call_as_backend_unavailable(setup, monkeypatch):
    import zmq

    from zmqwamp import forwarder as fwd

    forwarder, clock, _ = setup

    def refuse(socket, part, flags):
        raise zmq.ZMQError(zmq.EAGAIN)

    monkeypatch.setattr(fwd, "_send", refuse)
    d = forwarder.request(ADDR, [b"x"], 5)
    clock.advance(0)  # the batch is sent at the end of the reactor iteration
    failure = []
    d.addErrback(failure.append)
    assert failure[0].check(fwd.BackendUnavailable) and ADDR in str(failure[0].value)
    assert ids(forwarder) == []


def test_request_cancelled_before_its_batch_is_never_sent(setup, monkeypatch):
    from zmqwamp import forwarder as fwd

    forwarder, clock, _ = setup
    sent = []
    monkeypatch.setattr(fwd, "_send", lambda socket, part, flags: sent.append(part))
    first = forwarder.request(ADDR, [b"1"], 5)
    forwarder.request(ADDR, [b"2"], 5).addErrback(lambda f: None)
    first.addErrback(lambda f: None)
    first.cancel()
    clock.advance(0)
    assert sent[1:] == [b"", b"2"] and len(sent) == 3
