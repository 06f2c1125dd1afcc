"""zmqwamp.transport.statuspage and /status in build_site, in memory (issue 25 item 4).
The samples behind it: tests/unit/service/test_sampler.py; a real bridge: tests/e2e/test_status_page.py; the page in
headless Chromium: js-client/test/status-page.test.mjs."""

from __future__ import annotations

import base64
import hashlib
import re

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from zmqwamp.peers import ClientAddresses
from zmqwamp.service.bridge import websocket_options
from zmqwamp.service.config import BridgeConfig
from zmqwamp.testing import make_world
from zmqwamp.transport.guard import ConnectionGuardFactory
from zmqwamp.transport.site import build_site
from zmqwamp.transport.statuspage import STATUS_HTML, content_security_policy
from zmqwamp.transport.websocket import WampServerFactory

from memory import FakeStatus

HTML = STATUS_HTML.read_bytes()


class Feed:
    """A StatusFeed that counts how often it is asked."""

    def __init__(self) -> None:
        self.asked = 0

    def snapshot(self) -> bytes:
        self.asked += 1
        return b'{"bridge": {"pid": 1}}'


def sha256(text: bytes) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text).digest()).decode() + "'"


def test_the_page_is_one_file_that_loads_nothing_from_elsewhere():
    """One inline <script> and one inline <style>, no src, no link but the empty data: icon, no url() or @import,
    no absolute URL (the SVG namespace aside), and one fetch: of status.json, relative to the page."""
    text = HTML.decode()
    assert len(re.findall(r"<script\b", text)) == 1 and "<script>" in text
    assert len(re.findall(r"<style\b", text)) == 1 and "<style>" in text
    assert not re.search(r"\bsrc\s*=", text)
    assert re.findall(r"<link\b[^>]*>", text) == ['<link rel="icon" href="data:,">']
    assert "@import" not in text and "url(" not in text
    absolute = set(re.findall(r"(?:https?:)?//[\w.-]+[^\s\"'`)]*", text))
    assert absolute == {"http://www.w3.org/2000/svg"}, absolute
    assert re.findall(r"fetch\(([^,)]*)", text) == ['"status.json"']
    assert "innerHTML" not in text and "insertAdjacentHTML" not in text and "document.write" not in text


def test_the_content_security_policy_allows_the_pages_own_script_and_style_only():
    """The CSP names the SHA-256 of the inline script and style (as the browser hashes them), fetches to the page's
    own origin, and nothing else."""
    policy = dict(part.strip().split(" ", 1) for part in content_security_policy(HTML).decode().split(";"))
    [script] = re.findall(rb"<script>(.*?)</script>", HTML, re.S)
    [style] = re.findall(rb"<style>(.*?)</style>", HTML, re.S)
    assert policy == {
        "default-src": "'none'",
        "script-src": sha256(script),
        "style-src": sha256(style),
        "connect-src": "'self'",
        "img-src": "data:",
        "base-uri": "'none'",
        "form-action": "'none'",
        "frame-ancestors": "'none'",
    }


def request(path: str, headers: tuple[str, ...] = ()) -> bytes:
    return ("\r\n".join([f"GET {path} HTTP/1.1", "Host: 127.0.0.1:8080", *headers]) + "\r\n\r\n").encode()


def responses(data: bytes) -> list[tuple[int, bytes]]:
    """(status, head) of each response in ``data``."""
    return [(int(m.group(1)), m.group(0)) for m in re.finditer(rb"HTTP/1.1 (\d+) .*?\r\n\r\n", data, re.S)]


def serve(site, clock, *requests: bytes, peer: str = "127.0.0.1") -> bytes:
    """``requests`` on one connection from ``peer`` (127.0.0.1 is a trusted proxy) to a guarded ``site``."""
    factory = ConnectionGuardFactory(site, 5.0, clock, None, ClientAddresses(["127.0.0.1/32"]))
    guard = factory.buildProtocol(None)
    transport = StringTransport(IPv4Address("TCP", "127.0.0.1", 8080), IPv4Address("TCP", peer, 40000))
    guard.makeConnection(transport)
    guard.dataReceived(b"".join(requests))
    return transport.value()


def test_status_is_for_local_clients_on_a_listen_port_and_for_everyone_on_the_operations_port():
    """As /metrics: on a listen port /status and /status.json answer a local client and are 404 to a client a
    trusted proxy forwards; on the --metrics-listen site they answer everyone; /status/x is 404; the page comes
    with its CSP and the JSON with no-store."""
    world = make_world()
    feed = Feed()
    factory = WampServerFactory(world.context, lambda r: True, websocket_options(BridgeConfig()), world.zmq_factory.write_batch)
    listen = build_site(factory, world.context, FakeStatus(), static=False, feed=feed)
    forwarded = ("X-Forwarded-For: 198.51.100.7",)

    local = responses(serve(listen, world.clock, request("/status"), request("/status.json"), request("/status/x")))
    assert [code for code, _ in local] == [200, 200, 404]
    assert b"content-security-policy: default-src 'none'" in local[0][1].lower()
    assert b"content-type: application/json" in local[1][1].lower() and b"cache-control: no-store" in local[1][1].lower()
    remote = responses(serve(listen, world.clock, request("/status", forwarded), request("/status.json", forwarded)))
    assert [code for code, _ in remote] == [404, 404]
    assert feed.asked == 1, "the remote client's request never reached the feed"

    operations = build_site(None, world.context, FakeStatus(), static=False, feed=feed)
    ops = responses(serve(operations, world.clock, request("/status", forwarded), request("/status.json", forwarded)))
    assert [code for code, _ in ops] == [200, 200]
    assert feed.asked == 2

    without = build_site(factory, world.context, FakeStatus(), static=False, metrics=False, feed=feed)
    assert [code for code, _ in responses(serve(without, world.clock, request("/status")))] == [404]
    world.close()


def test_an_open_status_page_does_not_fill_the_access_log():
    """Its polls (a successful /status.json every 2 s) are left out of the access log, as successful /healthz
    requests are; the page itself and a refused poll are logged."""
    import io

    from twisted.internet.task import Clock
    from twisted.web.resource import Resource
    from twisted.web.test.requesthelper import DummyRequest

    from zmqwamp.transport.site import BridgeSite

    clock = Clock()
    site = BridgeSite(Resource(), reactor=clock)
    site.startFactory()
    site.logFile = written = io.StringIO()
    for path, code in ((b"/status.json", 200), (b"/healthz", 200), (b"/status", 200), (b"/status.json", 404)):
        request = DummyRequest([b""])
        request.method, request.uri, request.path, request.clientproto = b"GET", path, path, b"HTTP/1.1"
        request.code, request.sentLength = code, 10
        site.log(request)
    lines = written.getvalue().splitlines()
    assert [line.split('"')[3] for line in lines] == ["GET /status HTTP/1.1", "GET /status.json HTTP/1.1"], lines
    site.stopFactory()
