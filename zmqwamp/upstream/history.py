"""The last messages of a ZeroMQ PUB endpoint, for last-value and gap-free resubscription (issues 17, 21).

A :class:`MessageHistory` is a ring of held messages ``(publication id, frames, cost)``, bounded by
a count and by the memory they take (``cost``: frames plus Python's overhead, see
:func:`message_cost`), oldest evicted first.  It holds every message of its address received
while its SUB connection is open (the hub subscribes such a connection to everything), so a
replay (:mod:`zmqwamp.upstream.replay`) can answer "the newest message whose first frame starts with this
filter" (``get_retained``) and "every message after publication id N matching this filter"
(``_since``).  ``complete_after`` is the id after which it holds every message of its address:
the last id handed out when the connection opened (coverage start), raised to each evicted
message's id.  A ``_since`` below it is a gap.

Positions: every message added gets the next *absolute position* (0, 1, 2, ... for the ring's
lifetime); ``start`` and ``end`` are the positions of the oldest held message and of the next one
to come, :meth:`at` reads a held message by position in O(1), and a cursor that keeps a position
sees at once whether it was evicted (``position < start``).  A :meth:`restart` (the connection
reopened, a message too large to keep, the alias reconfigured) bumps ``generation``: a cursor of
an older generation knows its place is gone.  Underneath, a list and the index of its oldest
message (evicted slots are set to None, freeing their memory, and the list is compacted once
they are half of it): O(1) amortized append and evict, O(1) indexing, and :meth:`position_after`
a binary search over the publication ids (``bisect`` with ``key=``).

Pure bookkeeping: no reactor, no sockets.
"""

from __future__ import annotations

from bisect import bisect_right
from operator import itemgetter
from typing import Final

# bounds a TOML file may set (zmqwamp.service.config checks them)
MAX_HISTORY = 100_000
DEFAULT_HISTORY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_HISTORY_BYTES = 64 * 1024 * 1024

# A held message is the tuple (publication id, frames, cost): a tuple, not a NamedTuple, for the hot path.
HeldMessage = tuple[int, tuple[bytes, ...], int]
PUBLICATION: Final = 0
FRAMES: Final = 1
COST: Final = 2

# What a held message costs beyond its frames' bytes, measured with tracemalloc and sys.getsizeof on
# CPython 3.11 (64-bit) (tests/unit/upstream/test_history.py checks these against tracemalloc):
# - per message: the (publication, frames, cost) tuple, 64 bytes; the publication id and the cost, two ints
#   past the small-int cache, 32 each; the frames tuple's header, 40; its slot in the ring's list, 8, up to
#   twice that with the evicted slots not compacted yet and the list's over-allocation: 184 in all;
# - per frame: its pointer in the frames tuple, 8, and a bytes object's header (33 bytes, rounded up to
#   pymalloc's 16-byte blocks with the data): 48.  Empty and one-byte frames are CPython singletons and
#   cost only their pointer: counting them like others keeps the sum an upper bound.
# 100,000 six-byte messages cost 246 bytes each by this count; RSS grew 24 MiB holding them (issue 21).
MESSAGE_OVERHEAD = 184
FRAME_OVERHEAD = 56

# Evicted slots at the head of the list are dropped once they are half of it and at least this many.
_COMPACT_MIN = 1024

_publication = itemgetter(PUBLICATION)


def message_cost(frames: tuple[bytes, ...] | list[bytes]) -> int:
    """The memory a held message takes, in bytes (an upper bound): what ``history_bytes`` limits."""
    size = MESSAGE_OVERHEAD + FRAME_OVERHEAD * len(frames)
    for frame in frames:
        size += len(frame)
    return size


class MessageHistory:
    """The last ``max_messages`` messages of one endpoint, at most ``max_bytes`` of memory (:func:`message_cost`)."""

    __slots__ = (
        "max_messages",
        "max_bytes",
        "_items",
        "_head",
        "_offset",
        "bytes",
        "complete_after",
        "too_large",
        "generation",
    )

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        if max_messages <= 0 or max_bytes <= 0:
            raise ValueError("a history holds at least one message and one byte")
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._items: list[HeldMessage | None] = []  # None: evicted, not compacted yet
        self._head = 0  # index in _items of the oldest held message
        self._offset = 0  # absolute position of _items[0]
        self.bytes = 0  # the cost of what is held
        self.complete_after = 0  # every message of the address with a publication id above this is held
        self.too_large = 0  # messages not kept because they alone are over max_bytes
        self.generation = 0  # bumped by restart(): positions of an older generation are gone

    def __len__(self) -> int:
        return len(self._items) - self._head

    @property
    def start(self) -> int:
        """The position of the oldest held message (``end`` when nothing is held)."""
        return self._offset + self._head

    @property
    def end(self) -> int:
        """The position the next message added will get."""
        return self._offset + len(self._items)

    def at(self, position: int) -> HeldMessage:
        """The held message at ``position`` (``start <= position < end``)."""
        held = self._items[position - self._offset]
        assert held is not None and position >= self.start, position
        return held

    def window(self, first: int, stop: int) -> list[HeldMessage]:
        """The held messages at positions ``first`` to ``stop - 1`` (``start <= first``), as a list: one C copy."""
        offset = self._offset
        return self._items[first - offset : stop - offset]  # type: ignore[return-value]  # no None past the head

    def messages(self) -> list[HeldMessage]:
        """Everything held, oldest first (a copy: for tests and tools, not the data path)."""
        return self._items[self._head :]  # type: ignore[return-value]  # no None past the head

    def restart(self, last_publication: int) -> None:
        """Forget everything: the connection (re)opened after ``last_publication`` was handed out."""
        self._offset += len(self._items)
        self._items = []
        self._head = 0
        self.bytes = 0
        self.complete_after = last_publication
        self.generation += 1

    def add(self, publication: int, frames: list[bytes]) -> bool:
        """Keep a message (ids must increase); False if it alone is over ``max_bytes``.

        A message too large to keep empties the ring: what it holds is older than
        that message, so it is neither the last value nor a gap-free history any more.
        """
        cost = MESSAGE_OVERHEAD + FRAME_OVERHEAD * len(frames)
        for frame in frames:
            cost += len(frame)
        if cost > self.max_bytes:
            self.too_large += 1
            self.restart(publication)
            return False
        items = self._items
        items.append((publication, tuple(frames), cost))  # a tuple: 16+ bytes less than a list
        self.bytes += cost
        if len(items) - self._head > self.max_messages or self.bytes > self.max_bytes:
            self._evict()
        return True

    def _evict(self) -> None:
        items = self._items
        head = self._head
        while len(items) - head > self.max_messages or self.bytes > self.max_bytes:
            evicted = items[head]
            assert evicted is not None
            items[head] = None  # its memory is freed now, not at the next compaction
            head += 1
            self.bytes -= evicted[COST]
            self.complete_after = evicted[PUBLICATION]
        if head >= _COMPACT_MIN and 2 * head >= len(items):
            del items[:head]  # O(len), once per len/2 evictions: O(1) amortized
            self._offset += head
            head = 0
        self._head = head

    def position_after(self, since: int) -> int:
        """The position of the first held message with a publication id above ``since``: O(log n)."""
        index = bisect_right(self._items, since, lo=self._head, key=_publication)  # type: ignore[arg-type]
        return self._offset + index

    def newest(self, filter_: bytes) -> HeldMessage | None:
        """The newest message whose first frame starts with ``filter_`` (the last value), if any.

        O(n): replays scan in chunks instead (:mod:`zmqwamp.upstream.replay`); for tests and tools.
        """
        for position in range(self.end - 1, self.start - 1, -1):
            held = self.at(position)
            if held[FRAMES][0].startswith(filter_):
                return held
        return None

    def covers(self, since: int) -> bool:
        """Whether every message after publication id ``since`` is still held (or was never sent)."""
        return since >= self.complete_after

    def since(self, since: int, filter_: bytes) -> list[HeldMessage]:
        """The held messages after ``since`` whose first frame starts with ``filter_``, oldest first (tests, tools)."""
        return [
            held
            for held in (self.at(p) for p in range(self.position_after(since), self.end))
            if held[FRAMES][0].startswith(filter_)
        ]
