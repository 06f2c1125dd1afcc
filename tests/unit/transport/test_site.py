"""zmqwamp.transport.site: the checks every HTTP request passes (no bodies, GET and HEAD only, Host on a loopback
address, no NUL in the path), no versions, /healthz details for local clients only, errors answered with a 500 and
logged once, the access log clipped, the static files, in memory (a guarded site on a StringTransport:
memory.SiteWorld).  Holes of issue 13 closed here: request bodies spooled to disk (8), DNS rebinding (11), Range
amplification (16), operational details and versions for anyone (20).  Against a real bridge: tests/e2e/test_http.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from zmqwamp import internals

from memory import SiteWorld, request, status

# -- what a request may be ---------------------------------------------------------------------------------------------


def test_a_body_is_refused_with_413_before_it_is_read():
    """Content-Length over 0, or chunked: 413 at once, nothing of the body stored, connection closed."""
    for framing in ("Content-Length: 107374182400", "Transfer-Encoding: chunked"):
        world = SiteWorld()
        guard, transport = world.connect()
        stored = []
        guard.wrappedProtocol.requestFactory = type(
            "Spy", (world.site.requestFactory,), {"handleContentChunk": lambda self, d: stored.append(d)}  # noqa: B023
        )
        guard.dataReceived(request("/healthz", "POST", headers=[framing, "Expect: 100-continue"]) + b"5\r\nxxxxx\r\n" * 100)
        assert status(transport.value()) == 413 and b"100 Continue" not in transport.value()
        assert transport.disconnecting and world.refused == ["request_body"]
        guard.dataReceived(b"x" * 100000)
        assert transport.value().count(b"HTTP/1.1") == 1 and stored == []


def test_only_get_and_head():
    """Methods other than GET and HEAD get 405 with Allow: GET, HEAD, and are counted."""
    world = SiteWorld()
    guard, transport = world.connect()
    guard.dataReceived(request("/data", "DELETE"))
    assert status(transport.value()) == 405 and b"allow: get, head" in transport.value().lower()
    transport.clear()
    guard.dataReceived(request("/data", "POST", headers=["Content-Length: 0"]))
    assert status(transport.value()) == 405
    transport.clear()
    guard.dataReceived(request("/data", "HEAD"))
    assert status(transport.value()) == 200
    assert world.refused == ["http_method", "http_method"]


def test_host_check_on_loopback():
    """A connection to a loopback address needs a local Host or an allowed one (DNS rebinding)."""
    world = SiteWorld(allow_hosts=["app.example.com", "*.corp.example"])
    codes = {}
    for host in ("attacker.example:8080", "localhost:8080", "127.0.0.1", "127.3.4.5:1", "[::1]:8080", "LOCALHOST.",
                 "foo.localhost", "app.example.com:443", "x.corp.example", "app.example.com.attacker.example",
                 "127.0.0.1.attacker.example", "[::ffff:7f00:1]:80"):
        guard, transport = world.connect()
        guard.dataReceived(request(host=host))
        codes[host] = status(transport.value())
    assert {h for h, c in codes.items() if c == 403} == {
        "attacker.example:8080", "app.example.com.attacker.example", "127.0.0.1.attacker.example",
    }, codes
    guard, transport = world.connect(local="192.0.2.10")  # a public listener: not the check's business
    guard.dataReceived(request(host="attacker.example"))
    assert status(transport.value()) == 200
    assert world.refused == ["allow_hosts"] * 3
    off = SiteWorld(allow_hosts=["*"])
    guard, transport = off.connect()
    guard.dataReceived(request(host="attacker.example"))
    assert status(transport.value()) == 200


def test_a_nul_in_the_path_is_refused_with_400_and_no_traceback(log_events):
    """Item 6: GET /js/.%00./x made twisted.web's static files raise ValueError: a 500 and a traceback per request."""
    from zmqwamp.transport.site import StaticFile

    world = SiteWorld()
    world.site.resource.putChild(b"js", StaticFile("."))
    answers = []
    for path in ("/js/.%00./x", "/js/%00", "/data%00"):
        guard, transport = world.connect()
        guard.dataReceived(request(path))
        answers.append(status(transport.value()))
    assert answers == [400, 400, 400] and world.refused == ["http_path"] * 3
    assert not [e for e in log_events if e.get("log_failure") is not None]


# -- what the answers show ---------------------------------------------------------------------------------------------


def test_server_header_names_no_version():
    """Every response, 200, 404 or 405, says Server: zmqwamp and no version."""
    world = SiteWorld()
    guard, transport = world.connect()
    guard.dataReceived(request() + request("/nothing") + request("/data", "PUT"))
    servers = re.findall(rb"(?im)^server: (.*)\r$", transport.value())
    assert servers == [b"zmqwamp"] * 3


def test_healthz_details_and_local_only_pages_for_local_clients_only():
    """/healthz details and local-only pages are for local clients; a remote client through a trusted proxy gets {"up": true} and 404."""
    world = SiteWorld(trusted=["127.0.0.1/32"])
    guard, transport = world.connect(peer="127.0.0.1")
    guard.dataReceived(request("/healthz") + request("/local"))
    local = transport.value()
    assert b'"sessions": 2' in local and b'"pid"' in local and b"secret" in local
    guard, transport = world.connect(peer="127.0.0.1")  # through the trusted proxy, for a remote client
    xff = ["X-Forwarded-For: 198.51.100.7"]
    guard.dataReceived(request("/healthz", headers=xff) + request("/local", headers=xff))
    remote = transport.value()
    assert b'{"up": true}' in remote and b"pid" not in remote and b"10.9.9.9" not in remote
    assert b"404" in remote.split(b"\r\n\r\n", 2)[1].split(b"\r\n", 1)[0] and b"secret" not in remote


def test_the_static_files_are_the_package_data():
    """``/`` and ``/js/`` serve zmqwamp/static (package data) wherever the site's module lives (after the move to
    zmqwamp/transport/ they pointed at a zmqwamp/transport/static that does not exist: 404)."""
    from zmqwamp.testing import make_world
    from zmqwamp.transport.site import build_site

    from memory import FakeStatus

    world = make_world()
    site = build_site(None, world.context, FakeStatus(), static=True)
    index, js = site.resource.children[b""], site.resource.children[b"js"]
    package = Path(__file__).resolve().parents[3] / "zmqwamp" / "static"
    assert Path(index.path) == package / "index.html" and index.isfile()
    assert Path(js.path) == package / "js" and js.child("zmqwamp.js").isfile()
    world.close()


# -- errors and the access log -----------------------------------------------------------------------------------------


class Exploding:
    """A resource that raises: a bug anywhere under a request (a hook, a library)."""

    isLeaf = True

    def render(self, request):
        raise ValueError("boom " + "x" * 10_000)


def test_an_exception_while_rendering_is_a_500_and_logged_once_per_class_and_interval(log_events):
    """Item 6 (the class): 500 requests that raise: two log lines (the first with its traceback, then a count)."""
    from twisted.logger import formatEvent

    world = SiteWorld()
    world.site.resource.putChild(b"boom", Exploding())
    for _ in range(500):
        guard, transport = world.connect()
        guard.dataReceived(request("/boom"))
        assert status(transport.value()) == 500 and b"boom" not in transport.value() and b"Traceback" not in transport.value()
    errors = [e for e in log_events if e.get("log_namespace") == "zmqwamp.clientlog"]
    assert len(errors) == 1 and errors[0]["log_failure"].check(ValueError)
    assert len(formatEvent(errors[0])) < 400  # the message is clipped (the traceback is the failure's)
    world.clock.advance(10)
    errors = [formatEvent(e) for e in log_events if e.get("log_namespace") == "zmqwamp.clientlog"]
    assert len(errors) == 2 and "499 more unhandled builtins.ValueError (http) in the last 10.0s" in errors[1], errors
    assert world.site.errors._metric.labels("http")._value.get() == 500


def test_the_access_log_clips_what_the_client_chose():
    """A 14 kB path, Referer and User-Agent make a short access log line (twisted.web quoted them whole)."""
    from twisted.web.test.requesthelper import DummyRequest

    from zmqwamp.transport.site import access_line

    request = DummyRequest([b""])
    request.method = b"GET"
    request.uri = b"/" + b"u" * 14_000
    request.clientproto = b"HTTP/1.1"
    request.code = 404
    request.sentLength = 10
    request.requestHeaders.setRawHeaders(b"user-agent", [b'a"\n' * 5_000])
    request.requestHeaders.setRawHeaders(b"referer", [b"r" * 14_000])
    line = access_line("[08/Dec/2026:02:00:00 +0000]", request)
    assert len(line) < 600, len(line)
    assert "\n" not in line and '"GET /uuu' in line and "…" in line
    assert 'a\\" a\\"' in line  # double quotes escaped, as twisted.web does


# -- twisted.web's cached access log time (zmqwamp.internals) ----------------------------------------------------------


@pytest.mark.parametrize("renamed", [False, True])
def test_a_refused_requests_access_line_goes_through_the_client_log_with_its_time(monkeypatch, log_events, renamed):
    """A 404's access line is written through the client log with twisted.web's time; a twisted.web without its
    cached time (renamed): the time is formatted for the line, the same text."""
    import io

    from twisted.internet.task import Clock
    from twisted.web.http import datetimeToLogString
    from twisted.web.resource import Resource
    from twisted.web.test.requesthelper import DummyRequest

    from zmqwamp.clientlog import ClientLog
    from zmqwamp.metrics import BridgeMetrics
    from zmqwamp.transport import site as site_module
    from zmqwamp.transport.site import access_line

    if renamed:
        monkeypatch.setattr(site_module, "SITE_LOG_TIME", ("_renamed_in_a_future_twisted",))
        monkeypatch.setattr(internals, "_warned", set())
    clock = Clock()
    clock.advance(1_796_000_000)
    site = site_module.BridgeSite(Resource(), client_log=ClientLog(BridgeMetrics(), clock=clock.seconds), reactor=clock)
    site.startFactory()
    site.logFile = written = io.StringIO()
    request = DummyRequest([b""])
    request.method, request.uri, request.path, request.clientproto = b"GET", b"/x", b"/x", b"HTTP/1.1"
    request.code, request.sentLength = 404, 10
    site.log(request)
    assert written.getvalue() == access_line(datetimeToLogString(clock.seconds()), request) + "\n"
    assert bool([e for e in log_events if e.get("what") == "this twisted.web's Site"]) is renamed
    site.stopFactory()
