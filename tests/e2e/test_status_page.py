"""/status and /status.json against a real bridge (issue 25 item 4): on the same terms as /metrics.

Local clients get them on a listen port; a client a trusted proxy forwards, a PROXY-protocol source that is not
loopback and a loopback peer that forwards without being trusted get 404; on --metrics-listen they are served to
everyone who reaches it and leave the listen ports.  In memory: tests/unit/transport/test_statuspage.py and
tests/unit/service/test_sampler.py; in headless Chromium: js-client/test/status-page.test.mjs.
"""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from harness import start_bridge, start_rep
from minws import WSClient
from probes import get, read_response

PAGES = ("/status", "/status.json")
FORWARDED = ("X-Forwarded-For: 198.51.100.7",)


def proxy_v1(source: str, port: int) -> bytes:
    return f"PROXY TCP4 {source} 127.0.0.1 {port} 8080\r\n".encode()


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


@pytest.fixture(scope="module")
def bridge():
    proc, url = start_bridge("--anonymous", "--allow", "tcp://127.0.0.1:*", "--trusted-proxy", "127.0.0.9")
    yield {"url": url, "proc": proc, "port": port_of(url)}
    proc.stop()


def test_e2e_status_for_local_clients_only(bridge):
    """A local client gets the page (with its CSP) and the JSON; a client forwarded by a trusted proxy, and a
    loopback peer forwarding for someone without being trusted, get 404 from both."""
    port = bridge["port"]
    code, headers, body = get(port, "/status")
    assert code == 200 and headers["content-type"].startswith("text/html") and b"<title>zmqwamp status</title>" in body
    assert headers["content-security-policy"].startswith("default-src 'none'")
    code, headers, body = get(port, "/status.json")
    assert code == 200 and headers["content-type"] == "application/json"
    assert json.loads(body)["bridge"]["pid"] == bridge["proc"].proc.pid
    for path in PAGES:
        assert get(port, path, extra=FORWARDED, source="127.0.0.9")[0] == 404, path  # forwarded by the trusted proxy
        assert get(port, path, extra=FORWARDED, source="127.0.0.2")[0] == 404, path  # a proxy nobody trusts
        assert get(port, path, source="127.0.0.2")[0] == 200, path  # 127.0.0.0/8 is loopback: local


def test_e2e_status_counts_what_the_bridge_does(bridge):
    """Calls to a REP through a session show in /status.json within a sample or two: the session, the calls and
    the endpoint's row with its REQ connection."""
    rep, address = start_rep()
    try:
        async def scenario() -> dict:
            ws = await WSClient.connect(bridge["url"])
            await ws.hello()
            for _ in range(20):
                assert (await ws.call(address, ["x"]))[0] == 50
            for _ in range(40):  # a sample every 2 s: until one has seen them
                status = json.loads(get(bridge["port"], "/status.json")[2])
                if status["totals"]["calls"] >= 20 and status["now"]["sessions"] >= 1:
                    break
                await asyncio.sleep(0.25)
            await ws.close()
            return status

        status = asyncio.run(scenario())
        [row] = [row for row in status["endpoints"] if row["name"] == address]
        assert row["req_connection"] is True and row["calls"]["ok"] >= 20 and row["state"] == "ok"
        assert status["now"]["connections"] >= 1 and len(status["series"]["time"]) >= 2
    finally:
        rep.stop()


def test_e2e_status_behind_the_proxy_protocol():
    """A PROXY-protocol source that is not loopback gets 404; a loopback one gets the page."""
    proc, url = start_bridge("--anonymous", listen="haproxy:tcp:0:interface=127.0.0.1")
    try:
        port = port_of(url)

        def fetch(source: str, path: str) -> int:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
                sock.sendall(proxy_v1(source, 5555) + request)
                return read_response(sock)[0]

        for path in PAGES:
            assert fetch("192.0.2.44", path) == 404, path
            assert fetch("127.0.0.1", path) == 200, path
    finally:
        proc.stop()


def test_e2e_metrics_listen_serves_status_to_everyone_and_not_the_listen_ports():
    """With --metrics-listen, /status and /status.json are there for anyone who reaches it (forwarded or not),
    and gone from the listen port, even for local clients (as /metrics)."""
    proc, url = start_bridge("--anonymous", "--metrics-listen", "tcp:0:interface=127.0.0.1", "--trusted-proxy", "127.0.0.9")
    try:
        first = proc.wait_for(r"starting on (\d+)")
        second = proc.wait_for(rf"starting on (?!{first.group(1)}\b)(\d+)")
        main_port = port_of(url)
        ops_port = int(second.group(1) if int(first.group(1)) == main_port else first.group(1))
        for path in PAGES:
            assert get(ops_port, path, extra=FORWARDED, source="127.0.0.9")[0] == 200, path
            assert get(ops_port, path)[0] == 200, path
            assert get(main_port, path)[0] == 404, path
        assert "status.json" in get(ops_port, "/status")[2].decode()
    finally:
        proc.stop()
