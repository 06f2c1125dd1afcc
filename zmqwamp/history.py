"""The last messages of a ZeroMQ PUB endpoint, for last-value and gap-free resubscription (issue 17).

A :class:`MessageHistory` is a ring of (publication id, frames, size), bounded by a count and by
the sum of frame bytes, oldest evicted first.  It holds every message of its address received
while its SUB connection is open (the hub subscribes such a connection to everything), so it can
answer "the newest message whose first frame starts with this filter" (``get_retained``) and
"every message after publication id N matching this filter" (``_since``).  ``complete_after`` is
the id after which it holds every message of its address: the last id handed out when the
connection opened (coverage start), raised to each evicted message's id.  A ``_since`` below it
is a gap.  Pure bookkeeping: no reactor, no sockets.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import NamedTuple

# bounds a TOML file may set (zmqwamp.config checks them)
MAX_HISTORY = 100_000
DEFAULT_HISTORY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_HISTORY_BYTES = 64 * 1024 * 1024


class HeldMessage(NamedTuple):
    publication: int
    frames: list[bytes]
    size: int  # the sum of the frames' lengths


class MessageHistory:
    """The last ``max_messages`` messages of one endpoint, at most ``max_bytes`` of frames in all."""

    __slots__ = ("max_messages", "max_bytes", "messages", "bytes", "complete_after", "too_large")

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        if max_messages <= 0 or max_bytes <= 0:
            raise ValueError("a history holds at least one message and one byte")
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.messages: deque[HeldMessage] = deque()
        self.bytes = 0
        self.complete_after = 0  # every message of the address with a publication id above this is held
        self.too_large = 0  # messages not kept because they alone are over max_bytes

    def __len__(self) -> int:
        return len(self.messages)

    def restart(self, last_publication: int) -> None:
        """Forget everything: the connection (re)opened after ``last_publication`` was handed out."""
        self.messages.clear()
        self.bytes = 0
        self.complete_after = last_publication

    def add(self, publication: int, frames: list[bytes]) -> bool:
        """Keep a message (ids must increase); False if it alone is over ``max_bytes``.

        A message too large to keep empties the ring: what it holds is older than
        that message, so it is neither the last value nor a gap-free history any more.
        """
        size = 0
        for frame in frames:
            size += len(frame)
        if size > self.max_bytes:
            self.too_large += 1
            self.restart(publication)
            return False
        messages = self.messages
        messages.append(HeldMessage(publication, frames, size))
        self.bytes += size
        while len(messages) > self.max_messages or self.bytes > self.max_bytes:
            evicted = messages.popleft()
            self.bytes -= evicted.size
            self.complete_after = evicted.publication
        return True

    def newest(self, filter_: bytes) -> HeldMessage | None:
        """The newest message whose first frame starts with ``filter_`` (the last value), if any."""
        for held in reversed(self.messages):
            if held.frames[0].startswith(filter_):
                return held
        return None

    def covers(self, since: int) -> bool:
        """Whether every message after publication id ``since`` is still held (or was never sent)."""
        return since >= self.complete_after

    def since(self, since: int, filter_: bytes) -> Iterator[HeldMessage]:
        """The held messages after publication id ``since`` whose first frame starts with ``filter_``, oldest first."""
        for held in self.messages:
            if held.publication > since and held.frames[0].startswith(filter_):
                yield held
