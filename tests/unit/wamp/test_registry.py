"""zmqwamp.wamp.registry: open sessions, and a session that ends when its credential expires."""

from __future__ import annotations

import time

from zmqwamp.testing import joined, received, send
from zmqwamp.wamp.errors import SESSION_EXPIRED

from memory import REP, REVOCABLE, revoked


def test_a_session_ends_when_its_credential_expires(world):
    """A credential valid for 5 more seconds: at 5 s the call in flight gets ERROR canceled, then GOODBYE
    zmqwamp.close.session_expired, and close 1000 once the client's GOODBYE is in; counted and logged; not a
    moment before."""
    world.test["checker"].expires = time.time() + 5
    session, transport = joined(world, roles=REVOCABLE, authid="alice", ticket="any-ticket")
    send(session, 48, 11, {}, REP, ["in flight"])
    assert len(world.forwarder.requests) == 1
    world.clock.advance(4.9)
    assert session.is_open
    world.clock.advance(0.2)
    *_, error, goodbye = received(transport)
    assert error[:5] == [8, 48, 11, {}, "wamp.error.canceled"]
    assert goodbye == [6, {"message": "the session's credential has expired"}, SESSION_EXPIRED]
    assert session.state == "closed" and transport.closed is None  # waiting for the client's GOODBYE
    send(session, 6, {}, "wamp.close.goodbye_and_out")
    assert transport.closed == 1000
    assert revoked(world.metrics, "session") == 1


def test_a_session_that_ends_first_cancels_its_expiry_timer(world):
    """No timer is left behind by a session that closes before its credential expires (nor for one without expiry)."""
    world.test["checker"].expires = time.time() + 60
    session, _ = joined(world, roles=REVOCABLE, authid="alice", ticket="any-ticket")
    assert len(world.clock.getDelayedCalls()) == 1
    send(session, 6, {}, "wamp.close.goodbye_and_out")
    assert world.clock.getDelayedCalls() == []
    world.test["checker"].expires = None
    joined(world, roles=REVOCABLE, authid="bob", ticket="any-ticket")
    assert world.clock.getDelayedCalls() == []
