"""zmqwamp: browser JavaScript (WAMP v2 over WebSocket) to plain ZeroMQ services."""

from importlib.metadata import PackageNotFoundError, version

try:  # the one version is pyproject.toml's, as installed
    __version__ = version("zmqwamp")
except PackageNotFoundError:  # imported from a checkout that was never installed
    __version__ = "0+unknown"

__all__ = ["Bridge", "__version__"]


def __getattr__(name: str):
    """``zmqwamp.Bridge`` is imported on first use: ``zmqwamp --version``, ``python -m zmqwamp.healthcheck``
    and the twistd plugin scan do not pay for Twisted, Autobahn and ZeroMQ."""
    if name == "Bridge":
        from zmqwamp.bridge import Bridge

        return Bridge
    raise AttributeError(f"module 'zmqwamp' has no attribute {name!r}")
