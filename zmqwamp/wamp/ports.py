"""What the WAMP side uses of the ZeroMQ side: the forwarder (CALL) and the hub (SUBSCRIBE), as Protocols.

The :class:`~zmqwamp.wamp.router.Router` takes these, not the classes
(:class:`~zmqwamp.upstream.forwarder.RequestForwarder`, :class:`~zmqwamp.upstream.hub.SubscriptionHub`), so
a stand-in (:class:`zmqwamp.testing.FakeForwarder`, which declares the Protocol) is checked by mypy as it is,
with no ``cast``.  Besides what the router calls per request, each has what the bridge asks of it through the
router: status, reload, close.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from twisted.internet.defer import Deferred

from zmqwamp.upstream.endpoints import Endpoint
from zmqwamp.upstream.hub import Subscribed
from zmqwamp.upstream.subscription import Recovery, Subscriber, Subscription


class Forwarder(Protocol):
    """Requests to ZeroMQ REP services (:class:`~zmqwamp.upstream.forwarder.RequestForwarder`)."""

    @property
    def addresses(self) -> list[str]:
        """The addresses with a connection open (for /healthz)."""
        ...

    def request(self, address: str, frames: list[bytes], timeout: float, owner: Any = None) -> Deferred:
        """Send ``frames``; the Deferred fires with the reply frames.

        Raises, or the Deferred fails with, :mod:`zmqwamp.upstream.errors`' exceptions (and
        :class:`~zmqwamp.upstream.endpoints.InvalidEndpoint`): :func:`zmqwamp.wamp.errors.upstream_error`
        turns each into its ERROR.
        """
        ...

    def is_open(self, address: str) -> bool:
        """Has ``address`` a connection open?"""
        ...

    def close(self) -> None:
        """Close every connection (the bridge stops)."""
        ...


class Hub(Protocol):
    """Subscriptions to ZeroMQ PUB services and their fan-out (:class:`~zmqwamp.upstream.hub.SubscriptionHub`)."""

    @property
    def addresses(self) -> list[str]:
        """The addresses with a connection open (for /healthz)."""
        ...

    def subscribe(
        self, subscriber: Subscriber, endpoint: Endpoint, filter_: bytes, recovery: Recovery | None = None
    ) -> Subscribed | Deferred:
        """``subscriber`` joins the subscription for (endpoint, filter), with the replay its recovery asks for."""
        ...

    def unsubscribe(self, subscriber: Subscriber, subscription_id: int) -> bool:
        """``subscriber`` leaves; False if it did not hold that subscription."""
        ...

    def subscriptions(self) -> list[Subscription]:
        """Every subscription with a member (re-checked on a reload)."""
        ...

    def subscription_count(self) -> int: ...

    def configure_history(self, endpoints: Iterable[Endpoint]) -> None:
        """The aliases of the configuration in force: their histories and keep_open connections."""
        ...

    def close(self) -> None:
        """Close every connection and stop the replays (the bridge stops)."""
        ...
