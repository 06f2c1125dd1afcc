"""``/status``: the operator's page, as HAProxy's stats page; ``/status.json``: what it shows, polled by it.

The page is one file, ``zmqwamp/static/status.html``, its style and script inline; it fetches nothing but
``status.json`` next to it.  Its Content-Security-Policy tells the browser so: this page's own script and style
(by their SHA-256), connections to its own origin, nothing else; a page that tried to load anything from
elsewhere would be stopped by the browser.  Both are served on the same terms as ``/metrics``
(:func:`zmqwamp.transport.site.build_site`): on listen ports to local clients only, on ``--metrics-listen``
ports to everyone who reaches them.

The numbers come from a :class:`StatusFeed` (the bridge's :class:`zmqwamp.service.sampler.StatusSampler`):
its JSON is made at most once per sample, so a request costs the bytes it reads.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Protocol

from twisted.web.pages import notFound
from twisted.web.resource import Resource

STATUS_HTML = Path(__file__).resolve().parent.parent / "static" / "status.html"


class StatusFeed(Protocol):
    def snapshot(self) -> bytes:
        """``/status.json``'s body (UTF-8 JSON)."""
        ...


def _hashes(html: bytes, tag: bytes) -> str:
    """The CSP sources of every inline ``<tag>`` of ``html``: ``'sha256-...'`` of its text, as the browser hashes it."""
    bodies = re.findall(rb"<" + tag + rb">(.*?)</" + tag + rb">", html, re.S)
    return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(body).digest()).decode()}'" for body in bodies)


def content_security_policy(html: bytes) -> bytes:
    """Only the page's own inline script and style; fetch() to its own origin; the empty data: favicon."""
    return (
        f"default-src 'none'; script-src {_hashes(html, b'script')}; style-src {_hashes(html, b'style')}; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ).encode()


def _operator_headers(request, content_type: bytes) -> None:
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"referrer-policy", b"no-referrer")


class StatusPage(Resource):
    """``/status``: the page (``/status/...`` is 404: the page's relative ``status.json`` must be its sibling)."""

    isLeaf = True

    def __init__(self, path: Path = STATUS_HTML) -> None:
        super().__init__()
        self._html = path.read_bytes()
        self._policy = content_security_policy(self._html)

    def render_GET(self, request):
        if request.postpath:
            return notFound().render(request)
        _operator_headers(request, b"text/html; charset=utf-8")
        request.setHeader(b"content-security-policy", self._policy)
        request.setHeader(b"x-frame-options", b"DENY")
        return self._html


class StatusJson(Resource):
    """``/status.json``: the feed's snapshot, as it is."""

    isLeaf = True

    def __init__(self, feed: StatusFeed) -> None:
        super().__init__()
        self._feed = feed

    def render_GET(self, request):
        if request.postpath:
            return notFound().render(request)
        _operator_headers(request, b"application/json")
        return self._feed.snapshot()
