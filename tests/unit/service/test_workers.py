"""zmqwamp.service.workers: which ports --workers shares, read from Twisted's endpoint or from the description."""

from __future__ import annotations

import pytest
from twisted.internet.endpoints import serverFromString
from twisted.internet.testing import MemoryReactorClock

from zmqwamp import internals
from zmqwamp.service import workers
from zmqwamp.service.workers import TCPListen, WorkersUnsupported, tcp_listens

LISTENS = ["tcp:8080:interface=127.0.0.1:backlog=7", "haproxy:tcp6:port=0:interface=\\:\\:1", "tcp:9000"]
EXPECTED = [
    TCPListen("127.0.0.1", 8080, 7),
    TCPListen("::1", 0, 50, proxy=True),
    TCPListen("0.0.0.0", 9000, 50),
]


def test_the_ports_of_tcp_listen_endpoints():
    """Interface (all: 0.0.0.0), port, backlog (Twisted's default 50), and whether a PROXY header comes first."""
    assert tcp_listens(MemoryReactorClock(), LISTENS) == EXPECTED


def test_anything_but_tcp_is_refused():
    """--workers shares plain tcp: listen endpoints only; anything else is refused, saying so."""
    with pytest.raises(WorkersUnsupported, match="plain tcp: listen endpoints only"):
        tcp_listens(MemoryReactorClock(), ["ssl:8443:privateKey=k.pem"])


def test_a_twisted_whose_endpoints_keep_their_fields_elsewhere_still_shares_the_same_ports(monkeypatch, log_events):
    """Twisted's TCP endpoints without _interface, _port, _backlog (renamed): the fields come from the description
    (the same result), and one warning per endpoint class says so."""

    def renamed(reactor, description):
        endpoint = serverFromString(reactor, description)
        for name in workers.TCP_ENDPOINT_FIELDS:
            delattr(endpoint, name)
        return endpoint

    monkeypatch.setattr(workers, "serverFromString", renamed)
    monkeypatch.setattr(internals, "_warned", set())
    assert tcp_listens(MemoryReactorClock(), LISTENS + ["tcp:port=9001"]) == [*EXPECTED, TCPListen("0.0.0.0", 9001, 50)]
    warned = sorted(e["what"] for e in log_events if "_port" in e.get("missing", ""))
    assert warned == ["this Twisted's TCP4ServerEndpoint", "this Twisted's TCP6ServerEndpoint"]
