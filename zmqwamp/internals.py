"""The one way zmqwamp relies on what another library does not publish.

Every read of another library's private attribute, or of a name it does not
export, goes through :func:`lacks` (attributes of an object) or
:func:`private_name` (a name to import), once per connection or per process,
never per message.  A release without it gets a public fallback that keeps
the behaviour (slower, or noisier), and one warning per process says so.
Each fallback has a unit test that runs it.  Where, what, and without it:

* transport.writer: a ``tcp.Connection``'s buffer state; frames through ``transport.write``.
* transport.frames, transport.websocket: autobahn's parser state (:data:`~zmqwamp.transport.frames.AUTOBAHN_INTERNALS`);
  autobahn's parser, ``sendMessage``, the control frame rate in ``onPing``/``onPong``, our own "failing" flag.
* transport.websocket: autobahn's opening handshake data; kept, not freed.
* transport.guard: ``twisted.protocols.haproxy._wrapper.HAProxyProtocolWrapper``; asked of ``proxyEndpoint``.
* transport.site: twisted.web's cached access log time; formatted per refused request.
* wamp.messages: autobahn's ``_WAMPJsonEncoder``; autobahn's own ``serialize`` and ``unserialize``.
* upstream.reader, upstream.forwarder: ``zmq.backend.Socket`` (pyzmq's Cython); ``zmq.Socket``'s methods.
* service.workers: a TCP endpoint's ``_interface``, ``_port``, ``_backlog``; read from the description.
* service.descriptions (healthcheck, workers): ``twisted.internet.endpoints._parse``; the same rules, here.

``make test-unit-lowest`` runs the unit tests on the lowest versions pyproject.toml allows
(tests/lowest-versions.txt), so that a lower bound that is too low shows in CI, not at a user's.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import import_module
from typing import Any

from twisted.logger import Logger

log = Logger()

_warned: set[str] = set()  # what each warning already logged was about


def lacks(obj: object, names: Iterable[str], what: str, fallback: str) -> bool:
    """Does ``obj`` lack one of ``names``?  The first time for ``what``, say so and what happens instead."""
    missing = [name for name in names if not hasattr(obj, name)]
    if missing:
        say_missing(what, ", ".join(missing), fallback)
    return bool(missing)


def private_name(module: str, name: str, fallback: str) -> Any | None:
    """``module``'s ``name`` (dotted: ``"Socket.recv"``), which its library does not publish; or None if this
    release has no such thing, said once per process with ``fallback``: what happens instead."""
    try:
        found: Any = import_module(module)
        for part in name.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        say_missing(module, name, fallback, key=f"{module}.{name}")
        return None
    return found


def say_missing(what: str, missing: str, fallback: str, key: str | None = None) -> None:
    """Once per process per ``key`` (default: ``what``): ``what`` has no ``missing``, so ``fallback`` happens."""
    key = what if key is None else key
    if key not in _warned:
        _warned.add(key)
        log.warn("{what} has no {missing}: {fallback}", what=what, missing=missing, fallback=fallback)
