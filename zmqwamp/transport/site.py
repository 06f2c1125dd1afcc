"""The HTTP site on each listening port: ``/ws``, the operational pages and the static files.

Static files come from ``zmqwamp/static`` (package data, so ``pip install .`` serves
them without Node): ``/`` is the demo page, ``/js/zmqwamp.js`` the browser bundle
of ``js-client/`` (rebuild it with ``make js-bundle``).  The operator's pages: ``/healthz``,
``/metrics`` and the status page (``/status``, :mod:`zmqwamp.transport.statuspage`).

Every request passes :class:`BridgeRequest`'s checks before a resource sees it
(docs/reliability.md, *Hostile clients*): no request body (413, refused before a
byte of it is read), GET and HEAD only (405), a local ``Host`` on connections
to a loopback address unless ``allow_hosts`` says otherwise (403: DNS
rebinding), the per-peer connection count of the client a trusted proxy
names (503), and no NUL in the path (400: ``GET /js/.%00./x`` made the static
files raise, a 500 and a traceback per request).  Responses name no software
version.  An exception while rendering is still a 500, but no traceback per
request: :class:`~zmqwamp.clientlog.ErrorLog` logs the first of each class.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Callable, Iterable
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes

from autobahn.twisted.resource import WebSocketResource
from prometheus_client.twisted import MetricsResource
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import datetimeToLogString
from twisted.web.iweb import IAccessLogFormatter
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site
from twisted.web.static import File
from zope.interface import provider

from zmqwamp.clientlog import CLIP, ClientLog, ErrorLog
from zmqwamp.internals import lacks
from zmqwamp.metrics import BridgeMetrics
from zmqwamp.peers import is_local, peer_string
from zmqwamp.transport.guard import SERVER, ConnectionGuard, refusal_response
from zmqwamp.transport.statuspage import StatusFeed, StatusJson, StatusPage
from zmqwamp.transport.websocket import WampServerFactory
from zmqwamp.wamp.session import SessionContext

log = Logger()

METHODS = (b"GET", b"HEAD")  # nothing here takes a body; the WebSocket upgrade is a GET
POLLED = (b"/healthz", b"/status.json")  # asked every second or two: not in the access log when answered 200


class BridgeStatus(Protocol):
    """What the site asks of the bridge: is it stopping (``/healthz`` 503, ``/ws`` refused), and the
    operator's details of ``/healthz``.  The wiring hands one over (:class:`zmqwamp.service.lifecycle.Status`)."""

    @property
    def stopping(self) -> bool: ...

    def details(self) -> dict[str, Any]:
        """Sessions, calls in flight, subscriptions and zmq endpoints: JSON-ready, in the order shown."""
        ...


class HostCheck:
    """Which ``Host`` names a request to a loopback address may carry (the DNS rebinding defence).

    A page on ``attacker.example`` whose name is re-pointed at 127.0.0.1 reaches a
    bridge on loopback as same-origin, but its requests still say ``Host:
    attacker.example``.  Local names are always allowed: ``localhost`` (and
    ``*.localhost``), loopback IP literals (``127.0.0.1``, ``[::1]``), any port;
    so are the ``allow_hosts`` globs (matched against the name without its port,
    case-insensitively); ``*`` turns the check off.  As Jupyter Server's
    ``check_host``.
    """

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns = tuple(p.lower() for p in patterns)
        self.off = "*" in self.patterns

    @staticmethod
    def name(host: bytes) -> str:
        """The name part of a Host header value: no port, no IPv6 brackets, no trailing dot, lower case."""
        text = host.decode("latin-1").strip().lower()
        if text.startswith("["):
            text = text[1:].partition("]")[0]
        elif text.count(":") == 1:
            text = text.partition(":")[0]
        return text[:-1] if text.endswith(".") else text

    def allows(self, host: bytes | None) -> bool:
        if self.off or host is None:  # no Host: not a browser (they always send one)
            return True
        name = self.name(host)
        if name == "localhost" or name.endswith(".localhost"):
            return True
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            pass
        else:
            if ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback):
                return True
        return any(fnmatchcase(name, pattern) for pattern in self.patterns)


def _guard(request: Request) -> ConnectionGuard | None:
    transport = getattr(request.channel, "transport", None) if request.channel is not None else None
    return transport if isinstance(transport, ConnectionGuard) else None


class BridgeRequest(Request):
    """twisted.web's request, with the checks every request passes before any resource sees it.

    Its client (``getClientAddress()``) is the one :mod:`zmqwamp.peers` finds:
    the forwarded address when the peer is a trusted proxy.
    """

    _refused = False
    client_local = False  # for the operator's pages: see zmqwamp.peers.ClientAddresses.local

    def gotLength(self, length: int | None) -> None:
        """All headers are in (twisted.web calls this before reading a body): learn the client, refuse early."""
        guard = _guard(self)
        refused = guard.request_headers(self.requestHeaders) if guard is not None else None
        self.client = self.channel.getPeer()  # the guard's answer: the forwarded client, if any
        self.client_local = guard.client_local if guard is not None else is_local(self.client)
        if refused is not None:
            self._refuse_now(b"503 %s reached" % refused.encode(), refused, f"{refused} reached")
        elif length != 0:  # a Content-Length over 0, or chunked (None)
            self._refuse_now(b"413 Content Too Large", "request_body", "request bodies are not accepted")
        else:
            super().gotLength(length)

    def _refuse_now(self, status: bytes, limit: str, text: str) -> None:
        """Answer before the body, then close: nothing of the body is read or stored."""
        self._refused = True
        super().gotLength(0)  # an empty content buffer for twisted.web's bookkeeping
        self.requestHeaders.removeHeader(b"expect")  # no "100 Continue" after this
        self._site.on_refused(limit)
        self._site.note_refusal("HTTP request from {peer} refused: {text}", peer=peer_string(self.client), text=text)
        self.channel.transport.write(refusal_response(status, text))  # type: ignore[union-attr]  # connected
        self.channel.loseConnection()

    def handleContentChunk(self, data: bytes) -> None:
        if not self._refused:
            super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if not self._refused:
            super().requestReceived(command, path, version)

    @property
    def _site(self) -> BridgeSite:
        return self.channel.site  # type: ignore[attr-defined]  # twisted.web's Site sets it on its channels

    def process(self) -> None:
        site = self._site
        if site.hosts is not None and is_local(self.getHost()) and not site.hosts.allows(self.getHeader(b"host")):
            host = (self.getHeader(b"host") or b"")[:100].decode("latin-1")
            self._refuse(403, "allow_hosts", f"Host {host!r} not allowed on a loopback address (see --allow-host)")
        elif self.method not in METHODS:
            self.setHeader(b"allow", b"GET, HEAD")
            self._refuse(405, "http_method", f"method {self.method[:20].decode('latin-1')} not allowed")
        elif b"\x00" in unquote_to_bytes(self.path):  # %00: no file name has one (static files raised on it)
            self._refuse(400, "http_path", "a NUL byte in the path")
        else:
            super().process()

    def processingFailed(self, reason: Failure):
        """As twisted.web's (a bare 500), but the error goes to the site's :class:`ErrorLog`: counted, and logged
        with its traceback once per exception class and interval instead of once per request."""
        self._site.errors.report("http", reason, peer_string(self.client))
        body = b"internal error\n"
        self.setResponseCode(500)
        self.setHeader(b"content-type", b"text/plain; charset=utf-8")
        self.setHeader(b"content-length", b"%d" % len(body))
        self.write(body)
        self.finish()
        return reason

    def _refuse(self, code: int, limit: str, text: str) -> None:
        self._site.on_refused(limit)
        self._site.note_refusal("HTTP request from {peer} refused: {text}", peer=peer_string(self.client), text=text)
        self.setResponseCode(code)
        self.setHeader(b"server", SERVER)
        self.setHeader(b"content-type", b"text/plain; charset=utf-8")
        body = text.encode() + b"\n"
        self.setHeader(b"content-length", b"%d" % len(body))
        self.write(body)
        self.finish()

    def setHeader(self, name, value) -> None:
        if (name if isinstance(name, bytes) else name.encode()).lower() == b"server":
            value = SERVER  # twisted.web's process() would name its version
        super().setHeader(name, value)

    def finish(self) -> None:
        guard = _guard(self)
        if guard is not None:
            guard.response_done()  # before finishing: that may already parse the next request's headers
        return super().finish()


def _logged(value: bytes | str, limit: int = CLIP) -> str:
    """A client-chosen value for the access log: at most ``limit`` bytes, escaped as twisted.web does (a Python
    bytes literal's inside, double quotes escaped), ``…`` if it was cut."""
    raw = value.encode("latin-1", "replace") if isinstance(value, str) else value
    text = repr(raw[:limit])[2:-1].replace('"', '\\"')
    return text + "…" if len(raw) > limit else text


@provider(IAccessLogFormatter)
def access_line(timestamp: str, request) -> str:
    """twisted.web's combined log format, with what the client chose (path, Referer, User-Agent) clipped.

    twisted.web quotes them whole: a 14 kB User-Agent was a 14 kB line per request.
    """
    client = request.getClientAddress()
    ip = client.host if isinstance(client, (IPv4Address, IPv6Address)) else "-"
    return (
        f'"{ip}" - - {timestamp} "{_logged(request.method, 20)} {_logged(request.uri)} '
        f'{_logged(request.clientproto, 20)}" {request.code} {request.sentLength or "-"} '
        f'"{_logged(request.getHeader(b"referer") or b"-")}" "{_logged(request.getHeader(b"user-agent") or b"-")}"'
    )


# What BridgeSite reads of twisted.web's HTTPFactory: the access log's time, formatted once a second.
SITE_LOG_TIME = ("_logDateTime",)


class BridgeSite(Site):
    """The site of a port: :class:`BridgeRequest`s, the Host check, where refusals are counted and logged (through
    the client log: one line per refused request was a flood of its own) and errors logged."""

    requestFactory = BridgeRequest
    displayTracebacks = False

    def __init__(
        self,
        resource,
        hosts: HostCheck | None = None,
        on_refused: Callable[[str], None] = lambda limit: None,
        errors: ErrorLog | None = None,
        client_log: ClientLog | None = None,
        **kwargs,
    ) -> None:
        self.access_formatter: IAccessLogFormatter = kwargs.setdefault("logFormatter", access_line)
        super().__init__(resource, **kwargs)  # kwargs: twisted.web's HTTPFactory options (reactor, timeout)
        # twisted.web formats the time of its access log lines once a second (startFactory on): reused if it can be
        self._cached_log_time = not lacks(
            self, SITE_LOG_TIME, "this twisted.web's Site", "the time of a refused request's access line is formatted"
        )
        self.hosts = hosts
        self.on_refused = on_refused
        self.errors = errors if errors is not None else ErrorLog(BridgeMetrics(), self.reactor)
        self.client_log = client_log

    def note_refusal(self, format: str, **fields: Any) -> None:
        """Log a refused request or connection: through the client log (per client address, and in total)."""
        if self.client_log is not None:
            self.client_log.emit(None, log.info, format, **fields)
        else:
            log.info(format, **fields)

    def log(self, request) -> None:
        """The access log leaves out successful ``/healthz`` requests: proxies ask every second or so
        (the shipped haproxy.cfg: each bridge, every second), which would be most of the log; a 503 is still logged.
        So are successful ``/status.json`` requests, which an open status page makes every 2 s."""
        if request.path in POLLED and request.code == 200:
            return
        if request.code >= 400 and self.client_log is not None and self._access_log() is not None:
            # a refusal or an error costs the client one short request: its line goes through the client log
            # (per address and in total), as the refusal's own line does
            line = self.access_formatter(self._log_time(), request)
            self.client_log.emit(
                None, self._write_access, "{line}", line=line, peer=peer_string(request.getClientAddress())
            )
            return
        super().log(request)

    def _write_access(self, format: str, line: str, peer: str, suppressed_lines: int | None = None) -> None:
        if suppressed_lines:
            line += f" ({suppressed_lines} earlier access log lines of this client not logged)"
        access_log = self._access_log()
        if access_log is not None:
            access_log.write(line + "\n")

    def _access_log(self) -> Any:
        """twisted.web's access log file (its ``logFile``, which raises AttributeError when there is none)."""
        try:
            return self.logFile
        except AttributeError:
            return None

    def _log_time(self) -> str:
        """The time for an access log line, as twisted.web writes it."""
        return (self._cached_log_time and self._logDateTime) or datetimeToLogString(self.reactor.seconds())

    def logPrefix(self) -> str:
        return "Site"  # "Site starting on <port>", as before: tools read the port from that line


class WampResource(WebSocketResource):
    """``/ws``: the upgrade ends the HTTP part of the connection (and its request deadline).

    While the bridge drains (SIGTERM), a new upgrade gets HTTP 503 instead of a
    session.  The port keeps listening during the drain so that a proxy sees
    ``/healthz`` turn 503 and retries a refused upgrade on another bridge (haproxy
    ``retry-on 503``, nginx ``proxy_next_upstream http_503``) instead of a node
    that vanished.
    """

    def __init__(self, factory: WampServerFactory, status: BridgeStatus) -> None:
        super().__init__(factory)
        self._status = status

    def render(self, request):
        if self._status.stopping:
            request.setResponseCode(503)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request.setHeader(b"retry-after", b"1")
            request.setHeader(b"connection", b"close")
            return b"the bridge is shutting down\n"
        guard = _guard(request)
        if guard is not None:
            guard.upgraded()
        return super().render(request)


class HealthResource(Resource):
    """``/healthz``: ``{"up": ...}`` (200, or 503 while stopping) for anyone; details only where ``details`` allows.

    The details (pid, sessions, calls, subscriptions, zmq endpoints) are for the
    operator: always on ``--metrics-listen`` ports, on listen ports only to local
    clients (loopback or unix socket, after proxy resolution, and not forwarded
    by a proxy that is not trusted: :meth:`zmqwamp.peers.ClientAddresses.local`).
    """

    isLeaf = True

    def __init__(self, status: BridgeStatus, details_for_everyone: bool = False) -> None:
        super().__init__()
        self._status = status
        self._details_for_everyone = details_for_everyone

    def render_GET(self, request):
        stopping = self._status.stopping
        request.setResponseCode(503 if stopping else 200)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        body: dict[str, Any] = {"up": not stopping}
        if self._details_for_everyone or getattr(request, "client_local", False):
            body["pid"] = os.getpid()  # tells the processes of --workers apart
            body.update(self._status.details())
        return json.dumps(body).encode()


class LocalOnly(Resource):
    """A leaf resource served to local clients only (as :class:`HealthResource`'s details); 404 to anyone else."""

    isLeaf = True

    def __init__(self, resource: IResource) -> None:
        super().__init__()
        self._resource = resource

    def render(self, request):
        if not getattr(request, "client_local", False):
            return notFound().render(request)
        return self._resource.render(request)


STATIC = Path(__file__).resolve().parent.parent / "static"  # zmqwamp/static (this module is in zmqwamp/transport)


class StaticFile(File):
    """A file or folder of ``zmqwamp/static``: no directory listings, revalidated on every use, one range at most.

    A multi-range request (``Range: bytes=0-,0-,...``) would make twisted.web
    send the file once per range (261 bytes asked for turned into 10 MB):
    such a Range header is ignored and the whole file is sent (RFC 9110 allows
    a server to ignore Range).
    """

    contentTypes = {**File.contentTypes, ".js": "text/javascript; charset=utf-8", ".html": "text/html; charset=utf-8"}

    def directoryListing(self):
        return notFound()

    def render(self, request):
        ranges = request.requestHeaders.getRawHeaders(b"range")
        if ranges and (len(ranges) > 1 or b"," in ranges[0]):
            request.requestHeaders.removeHeader(b"range")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-content-type-options", b"nosniff")
        return super().render(request)


def _static(path: Path) -> File:
    return StaticFile(str(path))


def build_site(
    factory: WampServerFactory | None,
    context: SessionContext,
    status: BridgeStatus,
    *,
    static: bool = True,
    metrics: bool = True,
    hosts: HostCheck | None = None,
    feed: StatusFeed | None = None,
) -> BridgeSite:
    """The site of a listen port; with ``factory`` None, the operations-only site of ``--metrics-listen``.

    On listen ports ``/metrics`` and the status page (``/status``, ``/status.json``: from ``feed``), if
    ``metrics``, and the details of ``/healthz`` are for local clients only; on the operations site, for everyone.
    """
    ops = factory is None
    root = Resource()
    if factory is not None:
        root.putChild(b"ws", WampResource(factory, status))
    if static:
        root.putChild(b"", _static(STATIC / "index.html"))
        root.putChild(b"js", _static(STATIC / "js"))
    root.putChild(b"healthz", HealthResource(status, details_for_everyone=ops))
    if metrics:
        exporter = MetricsResource(registry=context.metrics.registry)
        root.putChild(b"metrics", exporter if ops else LocalOnly(exporter))
        if feed is not None:
            for name, page in ((b"status", StatusPage()), (b"status.json", StatusJson(feed))):
                root.putChild(name, page if ops else LocalOnly(page))
    return BridgeSite(
        root,
        hosts=hosts,
        on_refused=lambda limit: context.metrics.limit_exceeded.labels(limit).inc(),
        errors=ErrorLog(context.metrics, context.clock),
        client_log=context.client_log,
    )
