"""zmqwamp: browser JavaScript (WAMP v2 over WebSocket) to plain ZeroMQ services.

The public surface: :class:`Bridge` (subclass it for the two hooks), :class:`BridgeConfig` (its options),
:class:`Endpoint` (what ``zmq_allowed`` is asked about), :class:`IZmqAvatar` (a session's identity),
``__version__``; :mod:`zmqwamp.testing` for testing hooks and checkers in memory.  The rest is the bridge's own,
in five rooms (README, Layout), imports running one way::

    service    bridge, tap, config, lifecycle, sampler, workers, logs, healthcheck
    transport  site, statuspage, guard -> websocket, frames -> outgoing, writer
    wamp       messages -> session -> router -> ports; registry, limits, errors
    auth       cred, login, throttle, policy, users, jwtcheck
    upstream   forwarder (CALL) | hub, replay, history (SUBSCRIBE) -> sockets; reader, codec, endpoints,
               resolver, budget
    (leaves)   metrics, clientlog, peers, tokenbucket, internals
"""

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

try:  # the one version is pyproject.toml's, as installed
    __version__ = version("zmqwamp")
except PackageNotFoundError:  # imported from a checkout that was never installed
    __version__ = "0+unknown"

if TYPE_CHECKING:
    from zmqwamp.auth.cred import IZmqAvatar
    from zmqwamp.service.bridge import Bridge
    from zmqwamp.service.config import BridgeConfig
    from zmqwamp.upstream.endpoints import Endpoint

__all__ = ["Bridge", "BridgeConfig", "Endpoint", "IZmqAvatar", "__version__"]

# where each public name lives: imported on first use, so that ``zmqwamp --version``, ``python -m
# zmqwamp.healthcheck`` and the twistd plugin scan do not pay for Twisted, Autobahn and ZeroMQ
_PUBLIC = {
    "Bridge": "zmqwamp.service.bridge",
    "BridgeConfig": "zmqwamp.service.config",
    "Endpoint": "zmqwamp.upstream.endpoints",
    "IZmqAvatar": "zmqwamp.auth.cred",
}


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'zmqwamp' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module), name)
