"""What the hub and the replays share of a subscription, and what they send to.

Apart from :mod:`zmqwamp.upstream.hub` so that :mod:`zmqwamp.upstream.replay` needs nothing of the hub (and the
hub imports the replay, not the other way round).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from zmqwamp.upstream.endpoints import Endpoint
from zmqwamp.upstream.history import MessageHistory


class Subscriber(Protocol):
    """What the hub and the replays send to: a session (:class:`zmqwamp.wamp.session.WampSession`).

    They hand over what an EVENT says (subscription id, publication id, arguments,
    details) and the session builds the EVENT; nothing of WAMP is built here.
    """

    peer: str  # the client address replays are charged to

    def send_event(self, subscription: int, publication: int, args: list, details: dict, prepared: dict) -> int:
        """Send a live EVENT; ``prepared``: one per zmq message and subscription, the subscriber's cache.

        (The session keeps there the EVENT's frame per serializer, so it is encoded once per
        serializer however many subscribers get it.)  ``details`` is shared: not to be changed.
        Returns the payload bytes sent (0 if not sent), which the hub counts.
        """

    def send_replayed(self, subscription: int, publication: int, args: list, details: dict) -> int | None:
        """Send an EVENT if it fits in the outgoing buffer: its size, 0 if not sent (too large), None if no room."""


@dataclass(frozen=True, slots=True)
class Recovery:
    """What a SUBSCRIBE asked to be sent before live EVENTs: the retained message, or those after ``since``."""

    retained: bool = False
    since: int | None = None  # a publication id; wins over ``retained``
    epoch: str | None = None  # the process ``since`` came from (None: this one)


@dataclass(eq=False)
class Subscription:
    """One (endpoint, filter) and its members: those in the live fan-out, and those whose replay runs."""

    id: int
    endpoint: Endpoint
    filter: bytes
    subscribers: set = field(default_factory=set)  # the live fan-out
    history: MessageHistory | None = None  # the endpoint's ring (aliases with history)
    replays: dict[Any, Any] = field(default_factory=dict)  # subscriber -> its Replay, until caught up (then live)
    gaps: dict = field(default_factory=dict)  # live subscriber -> _gap details its next EVENT carries

    def members(self) -> list:
        """Every subscriber holding it: live, or still being replayed to."""
        return [*self.subscribers, *self.replays]
