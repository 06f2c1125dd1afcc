"""Every error and close URI of zmqwamp's own (``zmqwamp.error.*``, ``zmqwamp.close.*``), in one place.

The ``wamp.error.*`` URIs are the spec's (autobahn's :class:`~autobahn.wamp.exception.ApplicationError`
holds them); these are what the spec leaves to the router.  docs/reliability.md and docs/auth.md say when
each is sent.
"""

from __future__ import annotations

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
