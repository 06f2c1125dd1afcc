"""Why a request could not reach ZeroMQ: the upstream layer's failures, without WAMP.

The WAMP layer turns each (and :class:`~zmqwamp.upstream.endpoints.InvalidEndpoint`) into its ERROR in one place:
:func:`zmqwamp.wamp.errors.upstream_error`.
"""

from __future__ import annotations


class LimitExceeded(Exception):
    """A request would go over ``limit`` (a setting's name); the WAMP ERROR says ``"<limit>: <text>"``."""

    def __init__(self, limit: str, text: str) -> None:
        super().__init__(f"{limit}: {text}")
        self.limit = limit
        self.text = text


class CallTimedOut(Exception):
    """No reply arrived before the call's deadline."""


class BackendUnavailable(Exception):
    """The request could not be handed to ZeroMQ (queue full or socket closed), or its host name did not resolve."""
