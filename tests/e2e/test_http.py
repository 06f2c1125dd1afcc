"""The HTTP layer against a real bridge, byte for byte over real connections (tests/probes.py).

Holes of issue 13 closed here: idle and half-sent requests holding connections
forever (7), request bodies spooled to disk (8), DNS rebinding (11), Range
amplification (16), operational details and versions for anyone (20).
In memory: tests/unit/transport/test_site.py.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest

from harness import ROOT, start_bridge
from probes import get, http, metric, read_response, rss_mib

# -- against a real bridge --------------------------------------------------------------------

STATIC_JS = ROOT / "zmqwamp" / "static" / "js" / "zmqwamp.js"


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:  # dropped with RST (abortConnection): closed too
        return True


@pytest.fixture(scope="module")
def bridge():
    proc, url = start_bridge(
        "--anonymous", "--allow", "tcp://127.0.0.1:*", "--max-sessions-per-peer", "4", "--handshake-timeout", "1",
        "--allow-host", "app.example.com", "--trusted-proxy", "127.0.0.9",
    )
    yield {"url": url, "proc": proc, "port": int(url.rsplit(":", 1)[1].split("/")[0])}
    proc.stop()


def test_e2e_half_sent_keep_alive_requests_are_dropped_and_counted(bridge):
    """Keep-alive connections that send half a second request: counted per peer, dropped 1 s later; another peer unaffected."""
    port = bridge["port"]
    before = metric(bridge["url"], "zmqwamp_limit_exceeded_total", limit="handshake_timeout")
    half = []
    for _ in range(4):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        assert read_response(sock)[0] == 200
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0")  # and never the rest
        half.append(sock)
    started = time.monotonic()
    code, headers, body = get(port, "/healthz")  # a fifth from 127.0.0.1
    assert code == 503 and b"max_sessions_per_peer" in body and headers["server"] == "zmqwamp"
    assert get(port, "/healthz", source="127.0.0.2")[0] == 200  # another address is not affected
    for sock in half:  # each one is closed by the bridge after the 1 s deadline
        assert closed_by_peer(sock)
        sock.close()
    assert time.monotonic() - started < 5  # the deadline is 1 s; unfixed they stay open (twisted.web's 60 s)
    assert get(port, "/healthz")[0] == 200
    assert metric(bridge["url"], "zmqwamp_limit_exceeded_total", limit="handshake_timeout") == before + 4


def temp_files(pid: int) -> list[str]:
    """The bridge's open files that are deleted temp files (where twisted.web spools request bodies)."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if "(deleted)" in target or target.startswith(("/tmp/", "/var/tmp/")):
            found.append(target)
    return found


def test_e2e_a_request_body_is_refused_before_it_is_read(bridge):
    """POST /healthz with Content-Length 100 GB: 413 at once; the bridge stores nothing while the body keeps coming."""
    port, pid = bridge["port"], bridge["proc"].proc.pid
    rss = rss_mib(pid)
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"POST /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 107374182400\r\n\r\n".encode())
    stop = threading.Event()
    sent = [0]

    def pour():  # the body, as fast as the bridge takes it, for up to 5 s or 300 MB
        chunk = b"x" * 1024 * 1024
        deadline = time.monotonic() + 5
        while not stop.is_set() and time.monotonic() < deadline and sent[0] < 300 * 2**20:
            try:
                sent[0] += sock.send(chunk)
            except OSError:
                return

    pourer = threading.Thread(target=pour)
    pourer.start()
    try:
        code, headers, body = read_response(sock)
        spooled = temp_files(pid)
    finally:
        stop.set()
        pourer.join()
        sock.close()
    assert code == 413 and b"request bodies are not accepted" in body
    assert spooled == [] and rss_mib(pid) - rss < 30, (spooled, sent)
    for framing in ("Transfer-Encoding: chunked", "Content-Length: 5"):
        assert get(bridge["port"], "/healthz", method="POST", extra=(framing,))[0] == 413
    assert metric(bridge["url"], "zmqwamp_limit_exceeded_total", limit="request_body") == 3


def test_e2e_only_get_and_head(bridge):
    port = bridge["port"]
    for method, extra in (("DELETE", ()), ("POST", ("Content-Length: 0",)), ("OPTIONS", ()), ("PUT", ())):
        code, headers, _ = get(port, "/healthz", method=method, extra=extra)
        assert code == 405 and headers["allow"] == "GET, HEAD", method
    assert get(port, "/healthz", method="HEAD")[0] == 200


def upgrade(port: int, host: str, origin: str | None = None, source=None) -> tuple[int, dict, bytes]:
    lines = [
        "GET /ws HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Protocol: wamp.2.json",
    ]
    if origin:
        lines.append(f"Origin: {origin}")
    return http(port, ("\r\n".join(lines) + "\r\n\r\n").encode(), source)


def test_e2e_dns_rebinding_is_refused_on_loopback(bridge):
    """A page rebinding attacker.example to 127.0.0.1 is same-origin by its Host: refused with 403, WebSocket too."""
    port = bridge["port"]
    attacker = f"attacker.example:{port}"
    assert upgrade(port, attacker, f"http://{attacker}")[0] == 403
    assert get(port, "/healthz", host=attacker)[0] == 403
    assert get(port, "/", host=attacker)[0] == 403
    assert upgrade(port, f"localhost:{port}", f"http://localhost:{port}")[0] == 101
    assert upgrade(port, f"127.0.0.1:{port}")[0] == 101
    assert upgrade(port, "app.example.com", "http://app.example.com")[0] == 101  # --allow-host, with the same-origin rule
    assert upgrade(port, "app.example.com", "https://app.example.com")[0] == 403  # not on plain ws:// (issue 21, 12)
    assert get(port, "/healthz", host=f"[::1]:{port}")[0] == 200


def test_e2e_multi_range_requests_get_the_whole_file_once(bridge):
    """Range: bytes=0-,0-,... (100 ranges) no longer multiplies the file; one range is still served."""
    port, size = bridge["port"], STATIC_JS.stat().st_size
    for count in (2, 70, 100):
        started = time.monotonic()
        code, headers, body = get(port, "/js/zmqwamp.js", extra=("Range: bytes=" + ",".join(["0-"] * count),))
        assert code == 200 and len(body) == size, (count, code, len(body))
        assert time.monotonic() - started < 5
    code, headers, body = get(port, "/js/zmqwamp.js", extra=("Range: bytes=0-99",))
    assert code == 206 and body == STATIC_JS.read_bytes()[:100]


def test_e2e_no_version_in_any_response(bridge):
    """Server: zmqwamp on pages, errors, the 101 and autobahn's own answers; no autobahn or Twisted version anywhere."""
    port = bridge["port"]
    responses = [
        get(port, "/"), get(port, "/nothing"), get(port, "/healthz", method="DELETE"), upgrade(port, f"127.0.0.1:{port}"),
        get(port, "/ws"),  # a GET without Upgrade: autobahn would answer with its status page
    ]
    for code, headers, body in responses:
        assert headers.get("server", "zmqwamp") == "zmqwamp", (code, headers)
        text = (json.dumps(headers) + body.decode("latin-1")).lower()
        assert "autobahn" not in text and "twisted" not in text, (code, text[:300])
    assert [r[0] for r in responses[:4]] == [200, 404, 405, 101] and responses[0][1]["server"] == "zmqwamp"


def test_e2e_details_only_for_local_clients(bridge):
    """/healthz details and /metrics: for local clients; a client forwarded by a trusted proxy gets {"up"} and 404."""
    port = bridge["port"]
    local = json.loads(get(port, "/healthz")[2])
    assert set(local) >= {"up", "pid", "sessions", "zmq_endpoints"}
    assert get(port, "/metrics")[0] == 200
    forwarded = ("X-Forwarded-For: 198.51.100.7",)
    code, _, body = get(port, "/healthz", extra=forwarded, source="127.0.0.9")
    assert code == 200 and json.loads(body) == {"up": True}
    assert get(port, "/metrics", extra=forwarded, source="127.0.0.9")[0] == 404
    # a loopback peer that is not a trusted proxy but forwards: a proxy nobody told the bridge about, not local
    assert json.loads(get(port, "/healthz", extra=forwarded, source="127.0.0.2")[2]) == {"up": True}
    assert get(port, "/metrics", extra=("X-Real-IP: 198.51.100.7",), source="127.0.0.2")[0] == 404
    assert "pid" in json.loads(get(port, "/healthz", source="127.0.0.2")[2])  # 127.0.0.0/8 is loopback: local


def test_e2e_metrics_listen_serves_details_to_everyone_who_reaches_it():
    proc, url = start_bridge(
        "--anonymous", "--metrics-listen", "tcp:0:interface=127.0.0.1", "--trusted-proxy", "127.0.0.9",
    )
    try:
        first = proc.wait_for(r"starting on (\d+)")
        second = proc.wait_for(rf"starting on (?!{first.group(1)}\b)(\d+)")
        main_port = int(url.split(":")[2].split("/")[0])
        ops_port = int(second.group(1) if int(first.group(1)) == main_port else first.group(1))
        forwarded = ("X-Forwarded-For: 198.51.100.7",)
        assert "pid" in json.loads(get(ops_port, "/healthz", extra=forwarded, source="127.0.0.9")[2])
        assert get(ops_port, "/metrics", extra=forwarded, source="127.0.0.9")[0] == 200
        assert json.loads(get(main_port, "/healthz", extra=forwarded, source="127.0.0.9")[2]) == {"up": True}
        assert get(main_port, "/metrics")[0] == 404  # moved to the metrics port, even for local clients
    finally:
        proc.stop()
