"""zmqwamp.tokenbucket: a burst, then the rate."""

from __future__ import annotations

from twisted.internet.task import Clock

from zmqwamp.tokenbucket import TokenBucket


def test_token_bucket_allows_a_burst_then_the_rate():
    """A burst of rate events at once, then rate per second, and never more than the burst after a long pause."""
    clock = Clock()
    bucket = TokenBucket(5, clock=clock.seconds)
    assert [bucket.take() for _ in range(6)] == [True] * 5 + [False]
    clock.advance(0.2)
    assert [bucket.take(), bucket.take()] == [True, False]
    clock.advance(100)
    assert sum(bucket.take() for _ in range(10)) == 5
