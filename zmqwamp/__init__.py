"""zmqwamp: browser JavaScript (WAMP v2 over WebSocket) to plain ZeroMQ services."""

from importlib.metadata import PackageNotFoundError, version

try:  # the one version is pyproject.toml's, as installed
    __version__ = version("zmqwamp")
except PackageNotFoundError:  # imported from a checkout that was never installed
    __version__ = "0+unknown"

from zmqwamp.bridge import Bridge  # noqa: E402

__all__ = ["Bridge", "__version__"]
