"""zmqwamp.wamp.errors: what the ZeroMQ side refused becomes an ERROR in one place (issue 22)."""

from __future__ import annotations

import pytest
from autobahn.wamp.exception import ApplicationError

from zmqwamp.upstream.endpoints import InvalidEndpoint
from zmqwamp.upstream.errors import BackendUnavailable, CallTimedOut, LimitExceeded
from zmqwamp.wamp.errors import BACKEND_UNAVAILABLE, LIMIT_EXCEEDED, UPSTREAM_ERRORS, UpstreamError, upstream_error


@pytest.mark.parametrize(
    ("error", "uri", "text"),
    [
        (LimitExceeded("max_zmq_sockets", "full"), LIMIT_EXCEEDED, "max_zmq_sockets: full"),
        (BackendUnavailable("cannot send to x"), BACKEND_UNAVAILABLE, "cannot send to x"),
        (CallTimedOut("no reply from x within 1s"), ApplicationError.CANCELED, "call timed out: no reply from x within 1s"),
        (InvalidEndpoint("'x' is not a ZeroMQ endpoint"), ApplicationError.INVALID_URI, "'x' is not a ZeroMQ endpoint"),
    ],
)
def test_each_upstream_exception_becomes_its_error_uri_with_its_message(error, uri, text):
    """LimitExceeded, BackendUnavailable, CallTimedOut, InvalidEndpoint: their URI, and their message as its text."""
    got = upstream_error(error)
    assert (got.error, got.args[0]) == (uri, text)


def test_the_except_tuple_and_the_table_name_the_same_exceptions():
    """What the router catches is what the table maps, and a subclass maps as its base."""

    class Full(BackendUnavailable):
        pass

    assert set(UpstreamError) == set(UPSTREAM_ERRORS)
    assert upstream_error(Full("queue full")).error == BACKEND_UNAVAILABLE
