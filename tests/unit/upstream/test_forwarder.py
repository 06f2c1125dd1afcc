"""RequestForwarder: matching, deadlines, late replies, idle close (clock in memory, replies injected)."""

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.testing import MemoryReactorClock

from zmqwamp.metrics import BridgeMetrics
from zmqwamp.upstream.budget import UpstreamBudget
from zmqwamp.upstream.errors import BackendUnavailable, CallTimedOut, LimitExceeded
from zmqwamp.upstream.forwarder import RequestForwarder
from zmqwamp.upstream.reader import BridgeZmqFactory
from zmqwamp.upstream.resolver import NameNotResolved
from zmqwamp.upstream.sockets import UpstreamSockets

ADDR = "tcp://127.0.0.1:1"


@pytest.fixture
def setup():
    clock = MemoryReactorClock()
    zmq_factory = BridgeZmqFactory(clock)
    metrics = BridgeMetrics()
    forwarder = RequestForwarder(zmq_factory, metrics, idle_close=30)
    yield forwarder, clock, metrics
    forwarder.close()
    zmq_factory.shutdown()


def ids(forwarder):
    return list(forwarder._connections[ADDR]._requests)


def reply(forwarder, msg_id, *frames):
    forwarder._connections[ADDR].messageReceived([msg_id, b"", *frames])


def test_replies_are_matched_to_their_requests(setup):
    """Replies in any order reach the request each answers, by the envelope id on the shared DEALER."""
    forwarder, _, _ = setup
    results = {}
    for i in range(3):
        forwarder.request(ADDR, [b"%d" % i], 5).addCallback(lambda r, i=i: results.setdefault(i, r))
    pending = ids(forwarder)
    for i, msg_id in reversed(list(enumerate(pending))):
        reply(forwarder, msg_id, b"r%d" % i)
    assert results == {0: [b"r0"], 1: [b"r1"], 2: [b"r2"]}


def test_deadline_fails_the_call_and_drops_the_late_reply(setup):
    """At its deadline a request fails with CallTimedOut and is forgotten; its late reply is dropped and counted."""
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
    """A reply to a request that timed out never answers a later request to the same address."""
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
    """Cancelling a request fails it with CancelledError and forgets it."""
    forwarder, _, _ = setup
    d = forwarder.request(ADDR, [b"x"], 5)
    d.cancel()
    errors = []
    d.addErrback(errors.append)
    assert errors[0].check(CancelledError)
    assert ids(forwarder) == []


def test_malformed_reply_is_dropped_and_counted(setup):
    """A reply without the envelope is dropped and counted; the requests waiting stay."""
    forwarder, _, metrics = setup
    forwarder.request(ADDR, [b"x"], 5).addErrback(lambda f: None)
    forwarder._connections[ADDR].messageReceived([b"no-envelope"])
    assert metrics.dropped.labels("reply_malformed")._value.get() == 1
    assert len(ids(forwarder)) == 1


def test_idle_connection_is_closed(setup):
    """A connection is closed idle_close seconds after its last request ended (not while one waits), and its gauge drops."""
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
    """A send ZeroMQ refuses (EAGAIN: its queue is full) fails the request with BackendUnavailable naming the address."""
    import zmq

    from zmqwamp.upstream import forwarder as fwd

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
    """A request cancelled before the end of the reactor turn is left out of the batch sent then."""
    from zmqwamp.upstream import forwarder as fwd

    forwarder, clock, _ = setup
    sent = []
    monkeypatch.setattr(fwd, "_send", lambda socket, part, flags: sent.append(part))
    first = forwarder.request(ADDR, [b"1"], 5)
    forwarder.request(ADDR, [b"2"], 5).addErrback(lambda f: None)
    first.addErrback(lambda f: None)
    first.cancel()
    clock.advance(0)
    assert sent[1:] == [b"", b"2"] and len(sent) == 3


def conn(forwarder):
    return forwarder._connections[ADDR]


def test_requests_with_one_timeout_share_one_timer_and_expire_each_at_its_deadline(setup):
    """Requests with the same timeout share one timer, yet each fails at its own deadline, and nothing is left after."""
    forwarder, clock, _ = setup
    failed = {}
    for i in range(5):
        forwarder.request(ADDR, [b"%d" % i], 2.0).addErrback(lambda f, i=i: failed.setdefault(i, (clock.seconds(), f)))
        clock.advance(0.5)  # sent at 0, 0.5, 1.0, 1.5, 2.0 (and the batches go out)
    assert len(conn(forwarder)._deadline_timers) == 1, "one timer per timeout value, not per request"
    assert sorted(failed) == [0, 1]  # now t=2.5: the first two are due
    clock.pump([0.5] * 4)
    assert sorted(failed) == [0, 1, 2, 3, 4]
    for i, (when, failure) in failed.items():
        assert when == pytest.approx(0.5 * i + 2.0) and failure.check(CallTimedOut)
    assert conn(forwarder)._deadline_timers == {} and conn(forwarder)._deadlines == {}


def test_different_timeouts_expire_independently(setup):
    """A short timeout fires on time behind a longer one."""
    forwarder, clock, _ = setup
    failed = []
    forwarder.request(ADDR, [b"long"], 10.0).addErrback(lambda f: failed.append("long"))
    forwarder.request(ADDR, [b"short"], 1.0).addErrback(lambda f: failed.append("short"))
    clock.advance(1.0)
    assert failed == ["short"], "a short timeout is not held up behind a long one"
    clock.advance(9.0)
    assert failed == ["short", "long"]


def test_answered_requests_do_not_pile_up_in_the_deadline_queue(setup):
    """1,000 answered requests leave at most two entries in the deadline queue, and no timer once the connection closes."""
    forwarder, clock, _ = setup
    got = []
    for _i in range(1000):
        forwarder.request(ADDR, [b"x"], 30.0).addCallback(got.append)
        [msg_id] = ids(forwarder)
        reply(forwarder, msg_id, b"ok")
    assert len(got) == 1000
    assert len(conn(forwarder)._deadlines[30.0]) <= 2, "entries of answered requests are dropped as new ones come"
    clock.advance(31)  # the oldest deadline passes, and the idle connection closes
    assert forwarder.addresses == [] and [c for c in clock.getDelayedCalls() if c.active()] == []


def test_a_timeout_callback_that_sends_again_keeps_one_timer(setup):
    """A request sent again from a timeout's errback keeps one timer for that timeout, and none once done."""
    forwarder, clock, _ = setup
    outcomes = []

    def retry(failure):
        outcomes.append("timeout")
        if len(outcomes) < 3:
            forwarder.request(ADDR, [b"again"], 1.0).addErrback(retry)

    forwarder.request(ADDR, [b"first"], 1.0).addErrback(retry)
    for _ in range(3):
        clock.advance(1.0)
        assert len(conn(forwarder)._deadline_timers) <= 1
    assert outcomes == ["timeout"] * 3
    clock.advance(5)
    assert outcomes == ["timeout"] * 3 and conn(forwarder)._deadline_timers == {}


# -- opening connections: the budget and host names (issue 13) --------------------------------


class StubNames:
    """A HostResolver whose lookups the test answers: names give a pending Deferred."""

    def __init__(self):
        self.pending = {}

    def connect_address(self, address):
        from zmqwamp.upstream.endpoints import ip_version, split_tcp

        hostport = split_tcp(address)
        if hostport is None or ip_version(hostport[0]) is not None:
            return address
        d = self.pending[address] = Deferred()
        return d


class Session:
    def __init__(self, peer="tcp4:127.0.0.1:1000"):
        self.peer = peer


@pytest.fixture
def limited():
    clock = MemoryReactorClock()
    zmq_factory = BridgeZmqFactory(clock)
    metrics = BridgeMetrics()
    budget = UpstreamBudget(max_per_session=3, max_per_peer=3, max_total=3)
    names = StubNames()
    forwarder = RequestForwarder(zmq_factory, metrics, idle_close=30, sockets=UpstreamSockets(zmq_factory, metrics, budget, names))
    yield forwarder, clock, metrics, budget, names
    forwarder.close()
    zmq_factory.shutdown()


def answer(forwarder, address, d):
    connection = forwarder._connections[address]
    connection.messageReceived([list(connection._requests)[0], b"", b"ok"])
    assert d.called


def test_connections_are_charged_until_they_close(limited):
    """Opening charges the caller; calls on an open connection cost nothing; the idle close releases it."""
    forwarder, clock, _, budget, _ = limited
    me = Session()
    for _ in range(3):
        answer(forwarder, "tcp://127.0.0.1:1", forwarder.request("tcp://127.0.0.1:1", [b"x"], 5, me))
    assert budget.charged(me) == 1
    clock.advance(31)
    assert forwarder.addresses == [] and budget.total == 0


def test_at_the_limit_the_least_recently_used_idle_connection_makes_room(limited):
    """Total 3: a 4th endpoint closes the idle connection used longest ago; busy ones are never closed;
    when none is idle, LimitExceeded."""
    forwarder, clock, metrics, _, _ = limited
    a, b, c, d, e = (f"tcp://127.0.0.1:{p}" for p in (1, 2, 3, 4, 5))
    for address in (a, b, c):
        answer(forwarder, address, forwarder.request(address, [b"x"], 5))
    answer(forwarder, a, forwarder.request(a, [b"again"], 5))  # a is now the most recently used
    forwarder.request(d, [b"x"], 5).addErrback(lambda f: None)
    assert forwarder.addresses == [a, c, d]  # b went
    forwarder.request(c, [b"busy"], 5).addErrback(lambda f: None)
    forwarder.request(e, [b"x"], 5).addErrback(lambda f: None)
    assert forwarder.addresses == [c, d, e]  # a went (idle); c and d have calls waiting
    with pytest.raises(LimitExceeded, match="max_zmq_sockets"):
        forwarder.request("tcp://127.0.0.1:6", [b"x"], 5)
    assert metrics.zmq_sockets.labels("req")._value.get() == 3


def test_a_session_at_its_cap_is_refused_while_another_is_not(limited):
    """A session at max_endpoints_per_session gets LimitExceeded for a new address, not for an open one; another session is not held back."""
    forwarder, _, _, budget, _ = limited
    budget.max_per_session, budget.max_total = 2, 10
    me, other = Session(), Session("tcp4:127.0.0.2:1")
    for port in (1, 2):
        forwarder.request(f"tcp://127.0.0.1:{port}", [b"x"], 5, me).addErrback(lambda f: None)
    with pytest.raises(LimitExceeded, match="max_endpoints_per_session"):
        forwarder.request("tcp://127.0.0.1:3", [b"x"], 5, me)
    forwarder.request("tcp://127.0.0.1:1", [b"x"], 5, me).addErrback(lambda f: None)  # open already: free
    forwarder.request("tcp://127.0.0.1:3", [b"x"], 5, other).addErrback(lambda f: None)
    assert forwarder.addresses == ["tcp://127.0.0.1:1", "tcp://127.0.0.1:2", "tcp://127.0.0.1:3"]


def test_a_host_name_being_resolved_holds_its_requests_not_anyone_elses(limited):
    """Requests to a name wait in its connection (deadlines running) while requests to other endpoints go out;
    once the name resolves, the socket connects to the address and the waiting requests are sent."""
    from zmqwamp.upstream import forwarder as fwd

    forwarder, clock, _, _, names = limited
    sent = []
    original = fwd._send
    fwd._send = lambda socket, part, flags: sent.append(part)
    try:
        waiting = forwarder.request("tcp://svc.example:7", [b"to the name"], 5)
        other = forwarder.request(ADDR, [b"to another"], 5)
        clock.advance(0)
        assert sent[-1] == b"to another" and b"to the name" not in sent
        names.pending["tcp://svc.example:7"].callback("tcp://127.0.0.1:7")
        assert sent[-1] == b"to the name"
        connection = forwarder._connections["tcp://svc.example:7"]
        assert [e.address for e in connection.endpoints] == ["tcp://127.0.0.1:7"]
        assert not waiting.called and not other.called
    finally:
        fwd._send = original
    waiting.addErrback(lambda f: None)
    other.addErrback(lambda f: None)


def test_a_name_that_does_not_resolve_fails_its_requests_and_closes(limited):
    """A host name that does not resolve fails its requests with BackendUnavailable and closes its connection and its charge."""
    forwarder, clock, metrics, budget, names = limited
    d = forwarder.request("tcp://nope.example:7", [b"x"], 5, Session())
    names.pending["tcp://nope.example:7"].errback(NameNotResolved("host name 'nope.example' did not resolve: unknown"))
    failure = []
    d.addErrback(failure.append)
    assert failure[0].check(BackendUnavailable) and "did not resolve" in str(failure[0].value)
    assert forwarder.addresses == [] and budget.total == 0 and metrics.zmq_sockets.labels("req")._value.get() == 0
    clock.advance(31)  # the idle timer finds nothing to close
    assert forwarder.addresses == []


@pytest.mark.parametrize("ended_by", ["timeout", "cancel"])
def test_timeouts_and_late_replies_are_summarised_per_address(setup, log_events, ended_by):
    """Issue 21 item 6: 2,000 CALLs with a 1 ms timeout to a 50 ms REP wrote 1,846 warnings in 2.9 s (a timeout and a
    late reply each); CALL then CANCEL the same.  Now: the first of each at once, then one count per interval;
    every one still counted in the metrics."""
    from twisted.logger import formatEvent

    forwarder, clock, metrics = setup
    for _ in range(900):  # (the DEALER queues 1,000 for a REP that is not there)
        d = forwarder.request(ADDR, [b"x"], 0.001)
        d.addErrback(lambda f: None)
        [msg_id] = ids(forwarder)
        if ended_by == "cancel":
            d.cancel()
        else:
            clock.advance(0.002)
        reply(forwarder, msg_id, b"late")
    clock.advance(20)
    lines = [formatEvent(e) for e in log_events if e["log_namespace"] == "zmqwamp.upstream.forwarder"]

    def counted(first: str, more: str) -> tuple[int, int]:
        """(lines, occurrences) of one kind: its first line, and the counts of its summaries."""
        firsts = [line for line in lines if line.startswith(first)]
        summaries = [int(line.split()[0]) for line in lines if line.split()[0].isdigit() and more in line]
        return len(firsts) + len(summaries), len(firsts) + sum(summaries)

    assert counted("late reply from", "more late replies from") == (2, 900), lines  # 1.8 s of them: one interval
    timeouts = counted("call to tcp://127.0.0.1:1 timed out", "more calls to")
    assert timeouts == ((2, 900) if ended_by == "timeout" else (0, 0)), lines
    assert len(lines) <= 5, lines  # and the connection's open line
    assert metrics.dropped.labels("reply_late")._value.get() == 900
