"""A token bucket: at most ``rate`` events per second on average, ``burst`` at once.

Every per-client rate of the bridge is one (calls, SUBSCRIBEs and messages per session, log lines per client,
control frames per connection, replay work per address).
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """``take()`` is True at most ``rate`` times per second on average, ``burst`` at once."""

    __slots__ = ("rate", "burst", "_clock", "_tokens", "_stamp")  # one per session

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1.0, rate if burst is None else burst)
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
