"""The HTTP site on each listening port: ``/ws``, the operational pages and the static files.

Static files come from ``zmqwamp/static`` (package data, so ``pip install .`` serves
them without Node): ``/`` is the demo page, ``/js/zmqwamp.js`` the browser bundle
of ``js-client/`` (rebuild it with ``make js-bundle``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from autobahn.twisted.resource import WebSocketResource
from prometheus_client.twisted import MetricsResource
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import File

from zmqwamp.protocol import WampServerFactory
from zmqwamp.router import Router


class HealthResource(Resource):
    isLeaf = True

    def __init__(self, router: Router) -> None:
        super().__init__()
        self._router = router

    def render_GET(self, request):
        stopping = self._router.stopping
        request.setResponseCode(503 if stopping else 200)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        body = {
            "up": not stopping,
            "pid": os.getpid(),  # tells the processes of --workers apart
            "sessions": len(self._router.sessions),
            "calls_in_flight": self._router.calls_in_flight(),
            "subscriptions": self._router.hub.subscription_count(),
            "zmq_endpoints": {"req": self._router.forwarder.addresses, "sub": self._router.hub.addresses},
        }
        return json.dumps(body).encode()


class BridgeWebSocketResource(WebSocketResource):
    """``/ws``: while the bridge drains (SIGTERM), a new upgrade gets HTTP 503 instead of a session.

    The port keeps listening during the drain so that a proxy sees ``/healthz``
    turn 503 and retries a refused upgrade on another bridge (haproxy
    ``retry-on 503``, nginx ``proxy_next_upstream http_503``) instead of a node
    that vanished.
    """

    def __init__(self, factory: WampServerFactory, router: Router) -> None:
        super().__init__(factory)
        self._router = router

    def render(self, request):
        if self._router.stopping:
            request.setResponseCode(503)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request.setHeader(b"retry-after", b"1")
            request.setHeader(b"connection", b"close")
            return b"the bridge is shutting down\n"
        return super().render(request)


STATIC = Path(__file__).resolve().parent / "static"


class StaticFile(File):
    """A file or folder of ``zmqwamp/static``: no directory listings, revalidated on every use."""

    contentTypes = {**File.contentTypes, ".js": "text/javascript; charset=utf-8", ".html": "text/html; charset=utf-8"}

    def directoryListing(self):
        return notFound()

    def render(self, request):
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-content-type-options", b"nosniff")
        return super().render(request)


def _static(path: Path) -> File:
    return StaticFile(str(path))


class BridgeSite(Site):
    """twisted.web's site, whose access log leaves out successful ``/healthz`` requests.

    Proxies and orchestrators ask every second or so (the shipped haproxy.cfg: each
    bridge, every second), which would be most of the log; a 503 is still logged.
    """

    def log(self, request) -> None:
        if request.path == b"/healthz" and request.code == 200:
            return
        super().log(request)

    def logPrefix(self) -> str:
        return "Site"  # "Site starting on PORT", as before: tools read the port from that line


def build_site(factory: WampServerFactory | None, router: Router, *, static: bool = True, metrics: bool = True) -> Site:
    """The site of a listen port; with ``factory`` None, the operations-only site of ``--metrics-listen``."""
    root = Resource()
    if factory is not None:
        root.putChild(b"ws", BridgeWebSocketResource(factory, router))
    if static:
        root.putChild(b"", _static(STATIC / "index.html"))
        root.putChild(b"js", _static(STATIC / "js"))
    root.putChild(b"healthz", HealthResource(router))
    if metrics:
        root.putChild(b"metrics", MetricsResource(registry=router.metrics.registry))
    site = BridgeSite(root)
    site.displayTracebacks = False
    return site
