"""HostResolver: tcp host names resolved off the reactor, cached, shared; its thread is replaced by a Deferred here.

The real thread pool and the system resolver are exercised against a real bridge in
tests/e2e/test_hostile_upstream.py (a resolver slowed down by a preload library).
"""

from __future__ import annotations

import socket

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock

from zmqwamp.metrics import BridgeMetrics
from zmqwamp.upstream.resolver import HostResolver, NameNotResolved, _first_ipv4


@pytest.fixture
def names():
    clock = MemoryReactorClock()
    resolver = HostResolver(clock, ttl=60, negative_ttl=10, timeout=5, size=3, metrics=BridgeMetrics())
    lookups: list[tuple[str, Deferred]] = []

    def in_thread(f, getaddrinfo, host):
        d = Deferred()
        lookups.append((host, d))
        return d

    resolver._in_thread = in_thread
    return resolver, clock, lookups


def fired(d):
    out = []
    d.addBoth(out.append)
    return out


def test_literals_and_ipc_need_no_lookup(names):
    """IP literals and ipc paths are connected to as they are, with no look-up."""
    resolver, _, lookups = names
    for address in ("tcp://10.0.0.1:5", "tcp://[::1]:5", "ipc:///run/x.sock"):
        assert resolver.connect_address(address) == address
    assert lookups == []


def test_a_name_is_looked_up_once_for_everyone_waiting_then_cached(names):
    """Two opens of one name share one lookup; within the TTL the answer comes at once; after it, a new lookup."""
    resolver, clock, lookups = names
    first, second = resolver.connect_address("tcp://svc.example:5"), resolver.connect_address("tcp://svc.example:6")
    assert len(lookups) == 1 and isinstance(first, Deferred)
    lookups[0][1].callback("10.1.2.3")
    assert fired(first) == ["tcp://10.1.2.3:5"] and fired(second) == ["tcp://10.1.2.3:6"]
    assert resolver.connect_address("tcp://svc.example:7") == "tcp://10.1.2.3:7"
    clock.advance(61)
    assert isinstance(resolver.connect_address("tcp://svc.example:7"), Deferred) and len(lookups) == 2
    assert resolver._metrics.name_lookups.labels("ok")._value.get() == 1


def test_a_failure_is_remembered_briefly(names):
    """A name that did not resolve fails at once for negative_ttl seconds (no lookup per call), then is asked again."""
    resolver, clock, lookups = names
    d = resolver.connect_address("tcp://nope.example:5")
    lookups[0][1].errback(NameNotResolved("[Errno -2] Name or service not known"))
    [failure] = fired(d)
    assert failure.check(NameNotResolved) and "did not resolve: [Errno -2]" in str(failure.value)
    with pytest.raises(NameNotResolved, match="'nope.example' did not resolve"):
        resolver.connect_address("tcp://nope.example:5")
    assert len(lookups) == 1
    clock.advance(11)
    assert isinstance(resolver.connect_address("tcp://nope.example:5"), Deferred) and len(lookups) == 2


def test_a_lookup_with_no_answer_fails_its_waiters_after_the_timeout(names):
    """The waiters fail after `timeout`; the lookup's late answer still fills the cache."""
    resolver, clock, lookups = names
    d = resolver.connect_address("tcp://slow.example:5")
    clock.advance(5.1)
    [failure] = fired(d)
    assert failure.check(NameNotResolved) and "within 5s" in str(failure.value)
    lookups[0][1].callback("10.9.9.9")
    assert resolver.connect_address("tcp://slow.example:5") == "tcp://10.9.9.9:5"


def test_the_cache_is_bounded(names):
    """The cache of answers keeps the newest names only, up to its size."""
    resolver, _, lookups = names
    for i in range(5):
        resolver.lookup(f"h{i}.example")
        lookups[-1][1].callback(f"10.0.0.{i}")
    assert list(resolver._cache) == ["h2.example", "h3.example", "h4.example"]


def test_first_ipv4_answer_and_errors():
    """What runs in the thread: the first IPv4 address, or NameNotResolved with the resolver's reason."""
    answers = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.2", 0)), (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.3", 0))]
    assert _first_ipv4(lambda *a: answers, "x") == "10.0.0.2"
    with pytest.raises(NameNotResolved, match="no IPv4"):
        _first_ipv4(lambda *a: [], "x")

    def gai_error(*a):
        raise socket.gaierror(-2, "Name or service not known")

    with pytest.raises(NameNotResolved, match="Name or service not known"):
        _first_ipv4(gai_error, "x")
