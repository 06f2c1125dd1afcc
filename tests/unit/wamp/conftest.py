"""The wamp room's ``world``: the bridge core of tests/conftest.py, whose hook a test can steer per authid."""

from __future__ import annotations

import pytest

from zmqwamp.auth.cred import build_portal
from zmqwamp.testing import allow_local, make_world
from zmqwamp.upstream.endpoints import Endpoint, EndpointResolver

from memory import PUB, IdentityChecker


@pytest.fixture
def world():
    """A bridge core in memory (zmqwamp.testing.make_world) whose ``zmq_allowed`` answers, for an authid in
    ``world.test["allowed"]``, what is there (True, False or a Deferred), else make_world's default; logins are
    anonymous or with any ticket (``world.test["checker"]``, an IdentityChecker: set its ``expires``); the alias
    ``ticks`` is a sub endpoint."""
    allowed: dict = {}
    checker = IdentityChecker()

    def authorize(session, action, endpoint, options):
        return allowed.get(session.authid, allow_local(session, action, endpoint, options))

    world = make_world(
        portal=build_portal([checker], anonymous=True),
        resolver=EndpointResolver({"ticks": Endpoint(PUB, kind="sub", alias="ticks")}),
        authorize=authorize,
    )
    world.test.update(allowed=allowed, checker=checker)
    yield world
    world.close()
