"""The limits a session checks itself (docs/reliability.md): calls in flight, subscriptions, and the rates of
CALLs, SUBSCRIBEs and messages.  Over one, a CALL or SUBSCRIBE gets ERROR ``zmqwamp.error.limit_exceeded``
whose message names the limit, and the session carries on; over the message rate, the session ends.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SessionLimits:
    """The per-session limits (defaults: :class:`zmqwamp.service.config.BridgeConfig`)."""

    max_calls_in_flight: int
    max_subscriptions: int
    max_calls_per_second: float
    max_subscribes_per_second: float = 20.0  # after a burst of max_subscriptions plus as many
    max_messages_per_second: float = 1000.0  # every WAMP message, after a burst of two seconds' worth
