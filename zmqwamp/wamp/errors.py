"""Every error and close URI of zmqwamp's own (``zmqwamp.error.*``, ``zmqwamp.close.*``), in one place.

The ``wamp.error.*`` URIs are the spec's (autobahn's :class:`~autobahn.wamp.exception.ApplicationError`
holds them); these are what the spec leaves to the router.  docs/reliability.md and docs/auth.md say when
each is sent.  :func:`upstream_error` is the one place where what the ZeroMQ side refused becomes an ERROR.
"""

from __future__ import annotations

from autobahn.wamp.exception import ApplicationError

from zmqwamp.upstream.endpoints import InvalidEndpoint
from zmqwamp.upstream.errors import BackendUnavailable, CallTimedOut, LimitExceeded

# ERROR
LIMIT_EXCEEDED = "zmqwamp.error.limit_exceeded"  # a limit of docs/reliability.md; the message names it
NOT_SUPPORTED = "zmqwamp.error.not_supported"  # REGISTER, acknowledged PUBLISH
BACKEND_UNAVAILABLE = "zmqwamp.error.backend_unavailable"  # ZeroMQ refused the request, or the name did not resolve
INTERNAL_ERROR = "zmqwamp.error.internal"  # a bug in the bridge (logged)

# GOODBYE
SESSION_EXPIRED = "zmqwamp.close.session_expired"  # the session's credential (a JWT's exp) has expired
SESSION_REVOKED = "zmqwamp.close.session_revoked"  # a reload or the users file took the session's access away

# WAMP's own, sent with ABORT
PROTOCOL_VIOLATION = "wamp.error.protocol_violation"


# What the ZeroMQ side raises (zmqwamp.upstream.errors, and an endpoint it cannot use), and the ERROR URI of each.
UPSTREAM_ERRORS: dict[type[Exception], str] = {
    LimitExceeded: LIMIT_EXCEEDED,  # its message names the limit: "<limit>: <text>"
    BackendUnavailable: BACKEND_UNAVAILABLE,
    CallTimedOut: ApplicationError.CANCELED,  # what WAMP says of a call whose timeout option ran out
    InvalidEndpoint: ApplicationError.INVALID_URI,
}
UpstreamError = (LimitExceeded, BackendUnavailable, CallTimedOut, InvalidEndpoint)  # for except clauses


def upstream_error(error: Exception) -> ApplicationError:
    """The ERROR for what the ZeroMQ side refused (one of :data:`UPSTREAM_ERRORS`)."""
    uri = next(UPSTREAM_ERRORS[kind] for kind in type(error).__mro__ if kind in UPSTREAM_ERRORS)
    text = f"call timed out: {error}" if isinstance(error, CallTimedOut) else str(error)
    return ApplicationError(uri, text)
