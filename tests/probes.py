"""Looking at a running bridge from outside: RSS, open fds, /healthz, /metrics, raw HTTP; plus the fast PUB and
hostile payloads (shared by the in-memory and end-to-end tests of the same hole)."""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.request
from pathlib import Path

import cbor2
from prometheus_client.parser import text_string_to_metric_families

from harness import Process

HERE = Path(__file__).resolve().parent


def start_fastpub(
    rate: float,
    size: int = 100,
    topic: str = "seq",
    bind: str = "tcp://127.0.0.1:*",
    frames: int = 0,
    count: int = 0,
    wait: bool = False,
) -> tuple[Process, str]:
    """tests/fastpub.py: ``<topic> <seq> <padding>`` at ``rate``/s (plus ``frames`` empty frames), ``count`` in all."""
    argv = [sys.executable, str(HERE / "fastpub.py"), bind, "--rate", str(rate), "--size", str(size), "--topic", topic]
    p = Process([*argv, "--frames", str(frames), "--count", str(count), *(["--wait"] if wait else [])])
    return p, p.wait_for(r"bound to (\S+)").group(1)


def start_delayrep(delay: float, bind: str = "tcp://127.0.0.1:*") -> tuple[Process, str]:
    p = Process([sys.executable, str(HERE / "delayrep.py"), bind, "--delay", str(delay)])
    return p, p.wait_for(r"bound to (\S+)").group(1)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system) process ``pid`` has used so far: the cost of an attack, steadier than wall
    time on a busy machine (10 ms resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14, 15 of stat


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def http_base(ws_url: str) -> str:
    return ws_url.replace("wss://", "https://").replace("ws://", "http://").rsplit("/ws", 1)[0]


def healthz(ws_url: str) -> dict:
    try:
        with urllib.request.urlopen(http_base(ws_url) + "/healthz", timeout=5) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:  # 503 while stopping still has the body
        return json.load(e)


def metrics(ws_url: str, context=None) -> dict[tuple, float]:
    """{(sample name, ((label, value), ...)): value} from /metrics (``context``: SSLContext for wss)."""
    with urllib.request.urlopen(http_base(ws_url) + "/metrics", timeout=5, context=context) as r:
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(ws_url: str, name: str, context=None, **labels) -> float:
    return metrics(ws_url, context).get((name, tuple(sorted(labels.items()))), 0.0)


# -- raw HTTP on a new connection (what a browser or an attacker sends, byte for byte) --


def http(port: int, data: bytes, source: str | None = None, timeout: float = 5.0) -> tuple[int, dict, bytes]:
    """Send ``data`` on a new connection; (status, headers, body) of the one response (read to its length or EOF)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0) if source else None) as sock:
        sock.sendall(data)
        return read_response(sock)


def read_response(sock: socket.socket) -> tuple[int, dict, bytes]:
    """(status, lower-cased headers, body) of the next response on ``sock``."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a whole response head: {raw!r}")
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    code = int(status_line.split()[1])
    length = 0 if code == 101 else int(headers.get("content-length", -1))  # 101: WebSocket frames follow
    while length < 0 or len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return code, headers, body


def get(port: int, path: str, host: str | None = None, extra: tuple[str, ...] = (), method: str = "GET", source=None):
    """One request (``extra``: more header lines) from ``source`` (a local address), the connection closed after it."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}", "Connection: close", *extra]
    return http(port, ("\r\n".join(lines) + "\r\n\r\n").encode(), source)


def shared_bomb(depth: int, procedure: str) -> bytes:
    """x = [x', x'] nested ``depth`` deep, each list encoded once and referenced twice (tags 28/29):
    about 300 bytes for 2**depth leaves."""
    x = ["aaaaaaaaaa"]
    for _ in range(depth):
        x = [x, x]
    return cbor2.dumps([48, 1, {}, procedure, [x]], value_sharing=True)
