"""The public entry point: :class:`Bridge` wires the parts and holds the two hooks.

Subclass it and override :meth:`Bridge.websocket_allowed` (who may connect) and
:meth:`Bridge.zmq_allowed` (who may reach which endpoint); that is all the
server-side code a team writes.
"""

from __future__ import annotations

from typing import Any, Iterable

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from txzmq import ZmqFactory

from zmqwamp.auth import IZmqAvatar, build_portal
from zmqwamp.config import BridgeConfig, validate
from zmqwamp.endpoints import Endpoint, EndpointResolver
from zmqwamp.forwarder import RequestForwarder
from zmqwamp.hub import SubscriptionHub
from zmqwamp.metrics import BridgeMetrics
from zmqwamp.policy import EndpointPolicy
from zmqwamp.protocol import WampServerFactory
from zmqwamp.router import Router
from zmqwamp.web import build_site

log = Logger()


class RouterService(Service):
    """Owns the ZeroMQ side; on stop, says GOODBYE to sessions and closes sockets."""

    def __init__(self, router: Router, zmq_factory: ZmqFactory) -> None:
        self.router = router
        self.zmq_factory = zmq_factory
        self.stopping = False

    def stopService(self):
        self.stopping = True
        for session in list(self.router.sessions):
            session.shutdown()
        self.router.forwarder.close()
        self.router.hub.close()
        self.zmq_factory.shutdown()
        return super().stopService()


class Bridge:
    """A zmqwamp bridge.  Keyword arguments are the fields of :class:`BridgeConfig`."""

    def __init__(
        self,
        config: BridgeConfig | None = None,
        *,
        checkers: Iterable[ICredentialsChecker] = (),
        **options: Any,
    ) -> None:
        config = config or BridgeConfig()
        for key, value in options.items():
            if not hasattr(config, key):
                raise TypeError(f"unknown bridge option {key!r}")
            if key == "listen" and isinstance(value, str):
                value = [value]
            setattr(config, key, value)
        validate(config)
        self.config = config
        self.checkers = list(checkers)
        self.policy = EndpointPolicy(config.allow)

    # -- the hooks ----------------------------------------------------------

    def websocket_allowed(self, request) -> bool:
        """May this HTTP request become a WebSocket?  ``request`` is autobahn's ConnectionRequest."""
        return True

    def zmq_allowed(self, session, action: str, endpoint: Endpoint, options: dict) -> Any:
        """May ``session`` do ``action`` ('call'/'subscribe') on ``endpoint``?  bool or Deferred[bool].

        The default applies the global allow rules, then the session's avatar.
        """
        if not self.policy.allows(endpoint):
            return False
        avatar = IZmqAvatar(session.avatar)
        return avatar.zmq_allowed(action, endpoint, options)

    # -- wiring -------------------------------------------------------------

    def make_service(self, reactor=None) -> MultiService:
        if reactor is None:
            from twisted.internet import reactor
        config = self.config
        metrics = BridgeMetrics()
        zmq_factory = ZmqFactory()
        zmq_factory.reactor = reactor
        router = Router(
            realm=config.realm,
            portal=build_portal(self.checkers, config.anonymous),
            resolver=EndpointResolver(config.endpoints),
            authorize=self.zmq_allowed,
            forwarder=RequestForwarder(zmq_factory, reactor, metrics, idle_close=config.idle_close),
            hub=SubscriptionHub(zmq_factory, metrics),
            metrics=metrics,
            call_timeout=config.call_timeout,
            max_call_timeout=config.max_call_timeout,
        )
        top = MultiService()
        router_service = RouterService(router, zmq_factory)
        router_service.setServiceParent(top)
        factory = WampServerFactory(router, self.websocket_allowed, config.max_message_size)
        site = build_site(factory, router, lambda: router_service.stopping)
        for description in config.listen_endpoints:
            endpoint = serverFromString(reactor, description)
            listener = StreamServerEndpointService(endpoint, site)
            listener._raiseSynchronously = True  # a port we cannot bind stops startup with the reason
            listener.setServiceParent(top)
        self.router = router
        return top

    def serve_forever(self) -> None:
        """Run the bridge in this process until SIGINT/SIGTERM."""
        import sys

        from twisted.internet import reactor
        from twisted.logger import globalLogBeginner, textFileLogObserver

        globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
        service = self.make_service(reactor)
        service.startService()
        reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
        reactor.run()
