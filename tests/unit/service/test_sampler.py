"""zmqwamp.service.sampler: the samples behind /status and its JSON, on a clock in memory (issue 25 item 4).
The page in a real browser: js-client/test/status-page.test.mjs; local-only against a real bridge: tests/e2e/test_status_page.py."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest

import zmqwamp
from zmqwamp.service import sampler as sampler_module
from zmqwamp.service.lifecycle import Status
from zmqwamp.service.sampler import StatusSampler
from zmqwamp.testing import joined, make_world, received, send
from zmqwamp.transport.guard import ConnectionCounter
from zmqwamp.upstream.endpoints import Endpoint, EndpointResolver
from zmqwamp.upstream.errors import CallTimedOut

from memory import PUB, REP

DEAD = "tcp://127.0.0.1:9998"


class Process:
    """A process whose CPU time and RSS the test sets."""

    def __init__(self) -> None:
        self.cpu, self.rss = 0.0, 50e6

    def parts(self):
        return (lambda: self.cpu, lambda: self.rss)


@pytest.fixture
def bridge():
    """A bridge core in memory with a Status as the wiring makes it (connections, aliases), and a sampler on its
    clock (not started: a test starts it or samples by hand)."""
    resolver = EndpointResolver({"ticks": Endpoint(PUB, kind="sub", alias="ticks", history=10)})
    world = make_world(resolver=resolver)
    world.router.start()  # the alias's history
    forwarder = world.forwarder
    connections = ConnectionCounter(100, 10)
    status = Status(world.registry, cast(Any, forwarder), world.hub, connections=connections, resolver=resolver)
    process = Process()
    sampler = StatusSampler(
        status, world.metrics, world.clock, limits=lambda: {"max_sessions": 100}, process=process.parts()
    )
    yield {"world": world, "sampler": sampler, "connections": connections, "process": process, "forwarder": forwarder}
    sampler.stopService()
    world.close()


def document(sampler: StatusSampler) -> dict:
    return json.loads(sampler.snapshot())


def call(world, session, channel, address: str, request: int) -> Any:
    """A CALL through the session; the fake forwarder's Deferred for it."""
    send(session, 48, request, {}, address, ["x"])
    return world.forwarder.requests[-1][3]


def test_the_ring_keeps_the_last_samples_one_per_interval_from_a_timer():
    """Started, the sampler takes one sample at once and one per interval; the ring holds the last ``keep``."""
    world = make_world()
    status = Status(world.registry, cast(Any, world.forwarder), world.hub)
    sampler = StatusSampler(status, world.metrics, world.clock, interval=2.0, keep=5)
    sampler.startService()
    assert len(sampler.samples) == 1
    for _ in range(20):
        world.clock.advance(2.0)
    assert len(sampler.samples) == 5 and sampler.samples.maxlen == 5
    times = [s.time for s in sampler.samples]
    assert times == [32.0, 34.0, 36.0, 38.0, 40.0]
    series = document(sampler)["series"]
    assert series["time"] == times and all(len(values) == 5 for values in series.values())
    sampler.stopService()
    assert not world.clock.getDelayedCalls()
    world.close()


def test_requests_cost_no_sample_and_the_json_is_made_once_per_sample(bridge):
    """Between two samples every snapshot is the same bytes (made once, when first asked); only the timer
    samples, so asking faster shows nothing newer."""
    sampler, clock = bridge["sampler"], bridge["world"].clock
    sampler.startService()
    first = sampler.snapshot()
    assert all(sampler.snapshot() is first for _ in range(1000))
    assert len(sampler.samples) == 1
    clock.advance(sampler.interval)
    second = sampler.snapshot()
    assert second is not first and len(sampler.samples) == 2


def test_the_json_counts_sessions_connections_subscriptions_and_rates(bridge):
    """What the page shows: counts now, rates over the last interval (calls, failed calls, CPU), totals, the
    limits it was given, the version and pid, and the series of the ring (rates None for the first sample)."""
    world, sampler, clock = bridge["world"], bridge["sampler"], bridge["world"].clock
    sampler.startService()
    bridge["connections"].admit("10.0.0.1")
    bridge["connections"].websocket_opened()
    session, channel = joined(world)
    send(session, 32, 1, {}, "ticks")
    assert received(channel)[-1][0] == 33
    for i in range(10):
        call(world, session, channel, REP, 100 + i).callback([b"ok"])
    call(world, session, channel, DEAD, 200).errback(CallTimedOut("no reply"))
    bridge["process"].cpu = 0.5
    clock.advance(2.0)
    d = document(sampler)
    assert d["bridge"]["version"] == zmqwamp.__version__ and d["bridge"]["interval"] == 2.0
    assert d["bridge"]["draining"] is False and d["bridge"]["keep"] == 300 and isinstance(d["bridge"]["pid"], int)
    now = d["now"]
    assert (now["sessions"], now["connections"], now["websockets"], now["subscriptions"]) == (1, 1, 1, 1)
    assert now["calls_per_second"] == 5.5 and now["calls_failed_per_second"] == 0.5
    assert now["cpu"] == 0.25 and now["rss"] == 50e6
    assert d["totals"]["calls"] == 11 and d["totals"]["calls_failed"] == 1
    assert d["limits"] == {"max_sessions": 100}
    assert d["series"]["calls_per_second"] == [None, 5.5] and d["series"]["sessions"] == [0, 1]
    assert {row["name"]: row["total"] for row in d["tables"]["logins"]} == {"anonymous accepted": 1}
    world.registry.stopping = True
    clock.advance(2.0)
    assert document(sampler)["bridge"]["draining"] is True


def test_endpoints_show_their_connections_subscriptions_history_and_state(bridge):
    """One row per alias and per endpoint with calls, a connection or a subscription: its REQ and SUB connections,
    subscriptions and subscribers, history held against its size, calls/s and a state judged on the last
    minute's calls (ok, failing: timeouts and no success, degraded: both, then idle once a minute is quiet)."""
    world, sampler, clock, forwarder = bridge["world"], bridge["sampler"], bridge["world"].clock, bridge["forwarder"]
    sampler.startService()
    session, channel = joined(world)
    send(session, 32, 1, {}, "ticks")
    send(session, 32, 2, {}, "ticks")
    other, other_channel = joined(world, peer="other-peer")
    send(other, 32, 3, {}, "ticks")
    for i in range(4):
        call(world, session, channel, REP, 100 + i).callback([b"ok"])
    call(world, session, channel, DEAD, 200).errback(CallTimedOut("no reply"))
    assert forwarder.addresses == sorted([DEAD, REP])  # the calls opened them
    clock.advance(2.0)
    rows = {row["name"]: row for row in document(sampler)["endpoints"]}
    assert set(rows) == {"ticks", REP, DEAD}
    ticks = rows["ticks"]
    assert ticks["alias"] is True and ticks["address"] == PUB and ticks["kind"] == "sub"
    assert ticks["sub_connection"] is True and ticks["req_connection"] is False
    assert (ticks["subscriptions"], ticks["subscribers"]) == (1, 2)
    assert ticks["history"] == {"messages": 0, "bytes": 0, "max_messages": 10, "max_bytes": Endpoint(PUB).history_bytes}
    assert ticks["state"] == "quiet"  # a SUB connection with nothing received
    assert rows[REP]["state"] == "ok" and rows[REP]["calls"] == {"ok": 4} and rows[REP]["calls_per_second"] == 2.0
    assert rows[REP]["kind"] == "req" and rows[REP]["req_connection"] is True
    assert rows[DEAD]["state"] == "failing" and rows[DEAD]["calls"] == {"timeout": 1}
    assert list(rows)[0] == "ticks", "aliases first"

    call(world, session, channel, DEAD, 201).callback([b"late but ok"])
    clock.advance(2.0)
    assert {row["name"]: row["state"] for row in document(sampler)["endpoints"]}[DEAD] == "degraded"
    clock.advance(sampler_module.STATE_WINDOW + 2.0)
    states = {row["name"]: row["state"] for row in document(sampler)["endpoints"]}
    assert states[REP] == states[DEAD] == "idle"
    forwarder.close()  # the REQ connections closed
    clock.advance(2.0)
    assert {row["name"]: row["state"] for row in document(sampler)["endpoints"]}[REP] == "closed"


def test_messages_in_per_sub_address_and_drops_by_reason(bridge):
    """A SUB connection that receives is ``receiving``, with its messages/s (from its publication ids); drops are
    listed by reason with their rate."""
    world, sampler, clock = bridge["world"], bridge["sampler"], bridge["world"].clock
    sampler.startService()
    session, channel = joined(world)
    send(session, 32, 1, {}, "ticks")
    clock.advance(2.0)
    for i in range(6):
        world.hub._message(PUB, [b"tick %d" % i])
    world.metrics.dropped.labels("slow_consumer").inc(4)
    clock.advance(2.0)
    d = document(sampler)
    [ticks] = [row for row in d["endpoints"] if row["name"] == "ticks"]
    assert ticks["state"] == "receiving" and ticks["messages_per_second"] == 3.0
    assert ticks["history"]["messages"] == 6
    assert d["tables"]["dropped"] == [{"name": "slow_consumer", "total": 4.0, "per_second": 2.0}]
    assert d["now"]["events_in_per_second"] == 3.0 and d["now"]["drops_per_second"] == 2.0


def test_the_endpoint_table_is_bounded(bridge, monkeypatch):
    """At most MAX_ENDPOINT_ROWS rows (aliases first, then the busiest); the others are counted, not listed."""
    monkeypatch.setattr(sampler_module, "MAX_ENDPOINT_ROWS", 3)
    world, sampler = bridge["world"], bridge["sampler"]
    for port in range(10):
        world.metrics.calls.labels(f"tcp://127.0.0.1:{7000 + port}", "ok").inc(port)
    d = document(sampler)
    assert [row["name"] for row in d["endpoints"]][0] == "ticks"
    assert len(d["endpoints"]) == 3 and d["endpoints_not_listed"] == 8


def test_snapshot_before_the_timer_takes_one_sample():
    """Asked before the service started (no sample yet), the JSON is made from one sample taken then."""
    world = make_world()
    sampler = StatusSampler(Status(world.registry, cast(Any, world.forwarder), world.hub), world.metrics, world.clock)
    d = document(sampler)
    assert len(sampler.samples) == 1 and d["series"]["calls_per_second"] == [None]
    assert d["endpoints"] == [] and d["now"]["calls_per_second"] is None
    world.close()
