"""The HTTP site on each listening port: ``/ws`` and the operational pages."""

from __future__ import annotations

import json

from autobahn.twisted.resource import WebSocketResource
from prometheus_client.twisted import MetricsResource
from twisted.web.resource import Resource
from twisted.web.server import Site

from zmqwamp.protocol import WampServerFactory
from zmqwamp.router import Router


class HealthResource(Resource):
    isLeaf = True

    def __init__(self, router: Router, stopping) -> None:
        super().__init__()
        self._router = router
        self._stopping = stopping

    def render_GET(self, request):
        stopping = self._stopping()
        request.setResponseCode(503 if stopping else 200)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        body = {
            "up": not stopping,
            "sessions": len(self._router.sessions),
            "zmq_endpoints": {"req": self._router.forwarder.addresses, "sub": self._router.hub.addresses},
        }
        return json.dumps(body).encode()


def build_site(factory: WampServerFactory, router: Router, stopping) -> Site:
    root = Resource()
    root.putChild(b"ws", WebSocketResource(factory))
    root.putChild(b"healthz", HealthResource(router, stopping))
    root.putChild(b"metrics", MetricsResource(registry=router.metrics.registry))
    site = Site(root)
    site.displayTracebacks = False
    return site
