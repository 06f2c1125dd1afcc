"""The one way zmqwamp checks another library's internals before it relies on them.

Two fast paths read what Twisted and autobahn do not publish: the write path
(:mod:`zmqwamp.transport.writer`, a ``tcp.Connection``'s buffer state) and the frame reader
(:mod:`zmqwamp.transport.frames`, autobahn's parser state).  Each asks :func:`lacks` once
per connection; a release that renamed one of them gets the slower public path,
and one warning per process says so.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.logger import Logger

log = Logger()

_warned: set[str] = set()  # the ``what`` of each warning already logged


def lacks(obj: object, names: Iterable[str], what: str, fallback: str) -> bool:
    """Does ``obj`` lack one of ``names``?  The first time for ``what``, say so and what happens instead."""
    missing = [name for name in names if not hasattr(obj, name)]
    if missing and what not in _warned:
        _warned.add(what)
        log.warn("{what} has no {missing}: {fallback}", what=what, missing=", ".join(missing), fallback=fallback)
    return bool(missing)
