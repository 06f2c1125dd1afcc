"""--workers with a haproxy:tcp: listen port (the shipped systemd unit behind the shipped haproxy.cfg):
each worker reads the PROXY protocol header, so it sees the client's address."""

from __future__ import annotations

import signal
import socket

from harness import BIN, Process


def request(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def test_workers_share_a_proxy_protocol_port():
    proc = Process([str(BIN / "twistd"), "-n", "--pidfile=", "zmqwamp", "--workers", "2", "--anonymous",
                    "--listen", "haproxy:tcp:0:interface=127.0.0.1"])
    try:
        port = int(proc.wait_for(r"workers share 127\.0\.0\.1:(\d+)").group(1))
        for _ in range(2):
            proc.wait_for(r"\(PROXY\) starting on|HAProxyWrappingFactory")
        # a client at 192.0.2.7 as the proxy reports it (PROXY v1); the bridge answers and logs that address
        for _ in range(4):  # reaches both workers, most likely
            answer = request(port, b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 443\r\n"
                                   b"GET /no-such-page HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 404"), answer[:100]
        proc.wait_for(r'"192\.0\.2\.7" - - .*"GET /no-such-page HTTP/1\.1" 404')
        # without the header the connection is dropped: only the proxy may talk to this port
        assert request(port, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n") == b""
    finally:
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(30) == 0
        proc.stop()
