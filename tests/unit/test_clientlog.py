"""zmqwamp.clientlog: client-chosen values clipped in log lines, and log lines rate-limited per client and in total."""

from __future__ import annotations

from twisted.logger import formatEvent

from zmqwamp.clientlog import BURST, CLIP, ClientLog, clip
from zmqwamp.metrics import BridgeMetrics


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Client:
    log_budget = None


def test_clip_keeps_short_values_and_cuts_long_ones():
    """clip() leaves short values alone and cuts anything else (text, bytes, structures) to CLIP characters and an ellipsis."""
    assert clip("tcp://127.0.0.1:9999") == "tcp://127.0.0.1:9999"
    long = "x" * 1_000_000
    assert clip(long) == "x" * CLIP + "…"
    assert clip(b"\x00" * 500, 4) == "b'\\x00\\x00\\x00\\x00'…"
    assert clip(None) == "None" and clip(42) == "42"
    assert len(clip({"k" * 500: ["v" * 500] * 500})) <= CLIP + 1


def test_clip_escapes_what_could_forge_a_line():
    """A newline (or an ANSI escape, or U+2028) in a topic must not start a log line of its own."""
    assert clip("a\nsession 1 open: authid=admin") == "a\\nsession 1 open: authid=admin"
    assert clip("\x1b[2J\u2028") == "\\x1b[2J\\u2028"
    assert clip("zürich") == "zürich"


def lines(n, log, owner, clock=None, step=0.0):
    logged = []
    for i in range(n):
        log.emit(owner, lambda fmt, **kw: logged.append(formatEvent({"log_format": fmt, **kw})), "line {i}", i=i)
        if clock is not None:
            clock.now += step
    return logged


def test_a_client_gets_a_burst_then_one_line_per_second_and_is_told_what_it_lost():
    """A client's lines: a burst, then max_log_lines_per_second; the next line logged says how many were not, and they are counted."""
    metrics, clock, client = BridgeMetrics(), Clock(), Client()
    log = ClientLog(metrics, rate=1.0, total_rate=1000.0, clock=clock)
    assert len(lines(1000, log, client)) == BURST
    assert metrics.registry.get_sample_value("zmqwamp_log_suppressed_total") == 1000 - BURST
    clock.now += 1.0
    assert lines(1, log, client) == [f"line 0 ({1000 - BURST} earlier lines about this client not logged)"]
    clock.now += 1.0
    assert lines(1, log, client) == ["line 0"]
    assert len(lines(41, log, client, clock, 0.25)) == 10  # 10 s at 4 lines/s: one per second


def test_clients_have_separate_budgets():
    """Each client has a budget of its own: one client's flood does not silence another."""
    log = ClientLog(BridgeMetrics(), rate=1.0, total_rate=1000.0, clock=Clock())
    a, b = Client(), Client()
    assert len(lines(50, log, a)) == BURST and len(lines(50, log, b)) == BURST


def test_all_clients_together_are_bounded_and_told_once(log_events):
    """1000 clients with a full burst each: no more than the total rate gets through; one line says how many did not."""
    metrics, clock = BridgeMetrics(), Clock()
    log = ClientLog(metrics, rate=1.0, total_rate=100.0, clock=clock)
    logged = sum(len(lines(BURST, log, Client())) for _ in range(1000))
    assert logged == 100
    assert metrics.registry.get_sample_value("zmqwamp_log_suppressed_total") == 1000 * BURST - 100
    clock.now += 1.0
    log_events.clear()
    assert len(lines(1, log, Client())) == 1
    assert [formatEvent(e) for e in log_events] == [
        f"{1000 * BURST - 100} log lines caused by clients were not logged: over max_log_lines_per_second_total"
    ]


def test_lines_without_a_client_share_only_the_total():
    """Lines about no client in particular are bounded by the total rate only."""
    log = ClientLog(BridgeMetrics(), rate=1.0, total_rate=20.0, clock=Clock())
    assert len(lines(100, log, None)) == 20


def test_a_client_that_goes_is_summed_up(log_events):
    """A client that goes having lost lines gets one line saying how many; one that lost none, no line."""
    clock, client = Clock(), Client()
    log = ClientLog(BridgeMetrics(), rate=1.0, total_rate=1000.0, clock=clock)
    lines(25, log, client)
    log_events.clear()
    log.gone(client, "tcp4:127.0.0.1:5555")
    log.gone(Client(), "tcp4:127.0.0.1:5556")  # nothing lost: nothing to say
    assert [formatEvent(e) for e in log_events] == [
        f"{25 - BURST} log lines about tcp4:127.0.0.1:5555 were not logged: over max_log_lines_per_second"
    ]


# -- lines that repeat (issue 21, item 6) -------------------------------------------------------


def test_a_repeated_line_is_logged_once_then_summarised_per_interval(log_events):
    """A repeated kind of line is logged once, then one summary per interval it repeated in (without the line's other fields); quiet, it is forgotten."""
    from twisted.internet.testing import MemoryReactorClock
    from twisted.logger import Logger

    from zmqwamp.clientlog import RepeatSummary

    clock, out = MemoryReactorClock(), Logger(namespace="test.repeats")
    repeats = RepeatSummary(clock, interval=10.0)

    def late(address):
        return repeats.emit(
            ("late", address), out.warn, "late reply from {address}", "{n} more late replies from {address} in the last {seconds}s",
            address=address, secret="not in the summary",
        )

    assert late("tcp://a:1") and not any(late("tcp://a:1") for _ in range(1845))
    assert late("tcp://b:1")  # another kind: its own first line
    clock.advance(4)
    late("tcp://a:1")
    clock.advance(6)  # the interval ends: one summary per kind that repeated
    lines = [formatEvent(e) for e in log_events if e["log_namespace"] == "test.repeats"]
    assert lines == ["late reply from tcp://a:1", "late reply from tcp://b:1", "1846 more late replies from tcp://a:1 in the last 10.0s"]
    assert "secret" not in log_events[-1]
    clock.advance(10)  # a quiet interval: nothing logged, the kind forgotten
    clock.advance(10)
    assert late("tcp://a:1")  # so the next one is a first line again
    assert len([e for e in log_events if e["log_namespace"] == "test.repeats"]) == 4
    assert not clock.getDelayedCalls() or all(c.getTime() <= clock.seconds() + 10 for c in clock.getDelayedCalls())
    repeats.stop()
    assert not clock.getDelayedCalls()


def test_repeat_kinds_are_bounded(log_events):
    """Past max_kinds kinds of repeated lines, the others are counted together in one summary line."""
    from twisted.internet.testing import MemoryReactorClock
    from twisted.logger import Logger

    from zmqwamp.clientlog import RepeatSummary

    clock, out = MemoryReactorClock(), Logger(namespace="test.repeats")
    repeats = RepeatSummary(clock, interval=10.0, max_kinds=3)
    logged = sum(repeats.emit(i, out.info, "kind {i}", "{n} more of kind {i}", i=i) for i in range(1000))
    assert logged == 3
    clock.advance(10)
    assert "997 more log lines of 3+ other kinds not logged in the last 10.0s" in [formatEvent(e) for e in log_events]


def test_lines_about_clients_without_a_session_are_limited_per_address():
    """A refused upgrade or request has no session, and each comes on a new connection: the line's peer address
    (the per-peer key: port dropped, an IPv6 /64) is the client."""
    log = ClientLog(BridgeMetrics(), rate=1.0, total_rate=1000.0, clock=Clock())
    logged = []

    def refused(peer):
        log.emit(None, lambda fmt, **kw: logged.append(peer), "refused {peer}", peer=peer)

    for port in range(100):
        refused(f"tcp4:203.0.113.5:{40000 + port}")
        refused(f"tcp6:2001:db8:1:2::{port:x}:{40000 + port}")
        refused(f"tcp4:198.51.100.{port}:1")  # 100 addresses: each its own budget
    assert len(logged) == 2 * BURST + 100
    log.MAX_PEERS = 10
    for port in range(50):
        refused(f"tcp4:192.0.2.{port}:1")
    assert len(log._peers) == 10  # bounded
