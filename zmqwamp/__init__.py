"""zmqwamp: browser JavaScript (WAMP v2 over WebSocket) to plain ZeroMQ services.

The data path, one module per step::

    TCP/HTTP  limits.ConnectionGuard (counts, deadlines), web (site, Host check), peers (the client's address)
    frame     websocket.WampServerProtocol (+ frames: whole frames without autobahn's parser)
    message   messages.decode (serializers, what a client may send) -> session.WampSession (the state machine)
    policy    router.Router -> Bridge.zmq_allowed (policy.EndpointPolicy, the avatar's rules)   [login: login, auth]
    zmq send  forwarder.RequestForwarder (CALL: shared DEALER) | hub.SubscriptionHub (SUBSCRIBE: shared SUB;
              history.MessageHistory: an alias's last messages, replayed after SUBSCRIBED)
    zmq recv  zmqread.BatchedRead (capped batches; holds the wire.WriteBatch) -> codec (frames -> arguments)
    message   session.WampSession (RESULT, ERROR; EVENT serialized once per serializer)
    frame     flow.OutgoingBuffer (slow consumers) -> wire.FrameWriter (straight to the socket, per batch)

Public: :class:`Bridge` (and :class:`zmqwamp.config.BridgeConfig`, :class:`zmqwamp.endpoints.Endpoint`,
:class:`zmqwamp.auth.IZmqAvatar` for its hooks); the rest is the bridge's own.
"""

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
