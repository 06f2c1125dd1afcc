"""zmqwamp: browser JavaScript (WAMP v2 over WebSocket) to plain ZeroMQ services."""

__version__ = "0.1.0"

from zmqwamp.bridge import Bridge  # noqa: E402

__all__ = ["Bridge", "__version__"]
