"""zmqwamp.upstream.budget: zmq sockets charged per session, per peer address and in total."""

from __future__ import annotations

import pytest

from zmqwamp.upstream.budget import UpstreamBudget
from zmqwamp.upstream.errors import LimitExceeded


class Peer:
    def __init__(self, peer):
        self.peer = peer


def test_upstream_budget_per_session_per_peer_and_total():
    """Sockets are charged to the session that opened them, and its peer address, until released."""
    budget = UpstreamBudget(max_per_session=2, max_per_peer=3, max_total=4)
    a1, a2, b = Peer("tcp4:10.0.0.1:1000"), Peer("tcp4:10.0.0.1:1001"), Peer("tcp4:10.0.0.2:1000")
    budget.charge("x", a1)
    budget.charge("y", a1)
    with pytest.raises(LimitExceeded) as e:
        budget.charge("z", a1)
    assert e.value.limit == "max_endpoints_per_session" and str(e.value).startswith("max_endpoints_per_session: ")
    budget.charge("z", a2)  # the same address, another session: 3 for the address
    with pytest.raises(LimitExceeded, match="max_endpoints_per_peer"):
        budget.charge("w", a2)
    budget.charge("w", b)
    with pytest.raises(LimitExceeded, match="max_zmq_sockets"):
        budget.charge("v", b)
    budget.release("x")
    budget.charge("v", a1)  # a freed socket is a1's to reuse, and the total has room again
    assert budget.total == 4 and budget.charged(a1) == 2
    for key in ("y", "z", "w", "v"):
        budget.release(key)
    assert budget.total == 0 and not budget._sessions and not budget._peers


def test_upstream_budget_reclaims_before_refusing():
    """At a limit the reclaim hook is asked for an idle socket that counts against that limit, then it refuses."""
    budget = UpstreamBudget(max_per_session=1, max_per_peer=10, max_total=2)
    idle = []  # keys the "forwarder" may close, oldest first

    def reclaim(counts):
        for key in idle:
            if counts(key):
                idle.remove(key)
                budget.release(key)
                return True
        return False

    budget.reclaim = reclaim
    a, b = Peer("tcp4:10.0.0.1:1"), Peer("tcp4:10.0.0.2:1")
    budget.charge("a-old", a)
    budget.charge("b-old", b)
    idle += ["b-old", "a-old"]
    budget.charge("a-new", a)  # a's own cap: closes a's idle socket, not b's older one
    assert idle == ["b-old"]
    budget.charge("nobody", None)  # the total: the oldest idle one, whoever's
    assert idle == [] and budget.total == 2
    with pytest.raises(LimitExceeded, match="max_zmq_sockets"):
        budget.charge("more", None)
