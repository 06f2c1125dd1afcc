"""Client addresses behind proxies (issue 14): the PROXY protocol (haproxy: listeners) and X-Forwarded-For.

Each test plays the proxy itself on 127.0.0.1: it writes the PROXY header, or the
forwarded header, by hand in front of an ordinary WebSocket client (tests/minws.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import struct

import pytest

from harness import start_bridge, start_pub, start_rep
from minws import EVENT, RESULT, SUBSCRIBED, HandshakeRefused, WSClient, open_tcp
from probes import get, read_response


def run(coro, timeout=90):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def proxy_v1(source: str, port: int, destination: str = "127.0.0.1", dport: int = 8080) -> bytes:
    family = "TCP6" if ":" in source else "TCP4"
    return f"PROXY {family} {source} {destination} {port} {dport}\r\n".encode()


def proxy_v2(source: str, port: int, destination: str = "127.0.0.1", dport: int = 8080) -> bytes:
    """A PROXY protocol v2 header (PROXY command, TCP over IPv4), built by hand from the spec."""
    addresses = ipaddress.IPv4Address(source).packed + ipaddress.IPv4Address(destination).packed
    addresses += struct.pack("!HH", port, dport)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(addresses)) + addresses


@pytest.fixture(scope="module")
def services():
    rep, rep_addr = start_rep()
    pub, pub_addr = start_pub(interval=0.02)
    yield {"rep": rep_addr, "pub": pub_addr}
    rep.stop()
    pub.stop()


# -- the PROXY protocol ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def proxied(services):
    proc, url = start_bridge(
        "--anonymous", "--allow", services["rep"], "--allow", services["pub"], "--max-sessions-per-peer", "2",
        listen="haproxy:tcp:0:interface=127.0.0.1",
    )
    yield {"url": url, "proc": proc, "port": int(url.rsplit(":", 1)[1].split("/")[0]), **services}
    proc.stop()


@pytest.mark.parametrize("header", [proxy_v1, proxy_v2])
def test_proxy_protocol_gives_the_session_the_client_address(proxied, header):
    """v1 and v2: the session's peer (its log line) is the PROXY header's source; calls and EVENTs flow."""
    source, sport = ("203.0.113.9", 40001) if header is proxy_v1 else ("198.51.100.20", 40002)
    mark = len(proxied["proc"].lines)

    async def scenario():
        ws = await WSClient.connect(proxied["url"], preamble=header(source, sport))
        welcome = await ws.hello()
        reply = await ws.call(proxied["rep"], ["hi"])
        subscribed = await ws.subscribe(proxied["pub"])
        event = await ws.recv_json()
        await ws.goodbye()
        await ws.close()
        return welcome, reply, subscribed, event

    welcome, reply, subscribed, event = run(scenario())
    assert reply[0] == RESULT and subscribed[0] == SUBSCRIBED and event[0] == EVENT
    proxied["proc"].wait_for(rf"session {welcome[1]} open: .* peer=tcp4:{source}:{sport}\b", start=mark)


def test_proxy_protocol_sources_are_counted_apart(proxied):
    """Per-peer counts follow the PROXY source, not the proxy's address: 2 per source, any number of sources,
    even when the proxy opens its connections before the requests come."""

    async def scenario():
        # six connections from the proxy (127.0.0.1) at once, each with its PROXY header and no request yet
        opened = [await open_tcp(proxied["url"]) for _ in range(6)]
        for i, (_, writer) in enumerate(opened):
            writer.write((proxy_v1 if i % 2 else proxy_v2)(f"203.0.113.{60 + i}", 2000))
        others = [await WSClient.connect(proxied["url"], streams=streams) for streams in opened]
        one = [await WSClient.connect(proxied["url"], preamble=proxy_v1("203.0.113.50", 1000 + i)) for i in range(2)]
        with pytest.raises(HandshakeRefused) as refused:
            await WSClient.connect(proxied["url"], preamble=proxy_v1("203.0.113.50", 1002))
        for ws in one + others:
            await ws.close()
        return refused.value

    refused = run(scenario())
    assert refused.status == 503 and "max_sessions_per_peer" in refused.reason


def test_proxy_protocol_remote_clients_get_no_details(proxied):
    """A non-loopback PROXY source gets {"up"} from /healthz and 404 from /metrics; a loopback one gets both."""
    port = proxied["port"]

    def fetch(source, path):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(proxy_v1(source, 5555) + f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
            return read_response(sock)

    code, _, body = fetch("192.0.2.44", "/healthz")
    assert code == 200 and json.loads(body) == {"up": True}
    assert fetch("192.0.2.44", "/metrics")[0] == 404
    assert "pid" in json.loads(fetch("127.0.0.1", "/healthz")[2])
    assert fetch("127.0.0.1", "/metrics")[0] == 200


# -- X-Forwarded-For from a trusted proxy -----------------------------------------------------


@pytest.fixture(scope="module")
def forwarded(services):
    proc, url = start_bridge("--anonymous", "--allow", services["rep"], "--trusted-proxy", "127.0.0.1")
    yield {"url": url, "proc": proc, "port": int(url.rsplit(":", 1)[1].split("/")[0]), **services}
    proc.stop()


def test_forwarded_clients_of_a_trusted_proxy_are_counted_apart(forwarded):
    """250 connections from one trusted proxy, opened before their requests, for 250 clients: none refused by
    max_sessions_per_peer (200); the session's log line shows the forwarded client."""
    mark = len(forwarded["proc"].lines)

    async def scenario():
        opened = [await open_tcp(forwarded["url"]) for _ in range(250)]  # a proxy's burst of upstream connections
        sessions = []
        for i, streams in enumerate(opened):
            ws = await WSClient.connect(
                forwarded["url"], streams=streams, headers={"X-Forwarded-For": f"6.6.6.6, 10.0.{i // 200}.{i % 200 + 1}"}
            )
            welcome = await ws.hello()
            sessions.append((ws, welcome[1]))
        reply = await sessions[-1][0].call(forwarded["rep"], ["still here"])
        for ws, _ in sessions:
            ws.abort()
        return [session_id for _, session_id in sessions], reply

    ids, reply = run(scenario())
    assert len(ids) == 250 and reply[0] == RESULT
    forwarded["proc"].wait_for(rf"session {ids[6]} open: .* peer=tcp4:10\.0\.0\.7:0\b", start=mark)
    forwarded["proc"].wait_for(rf"session {ids[249]} open: .* peer=tcp4:10\.0\.1\.50:0\b", start=mark)


def test_forwarded_for_from_an_untrusted_peer_is_ignored(forwarded):
    """The same headers from 127.0.0.2 (not trusted): the per-peer cap applies to 127.0.0.2, the log shows it."""
    mark = len(forwarded["proc"].lines)

    async def scenario():
        sessions = []
        refused = None
        for i in range(201):
            try:
                ws = await WSClient.connect(
                    forwarded["url"], source="127.0.0.2", headers={"X-Forwarded-For": f"10.1.{i // 200}.{i % 200 + 1}"}
                )
            except HandshakeRefused as e:
                refused = (i, e)
                break
            sessions.append((ws, (await ws.hello())[1]))
        for ws, _ in sessions:
            ws.abort()
        return sessions[0][1], refused

    first_id, refused = run(scenario())
    assert refused is not None and refused[0] == 200, refused
    assert refused[1].status == 503 and "max_sessions_per_peer" in refused[1].reason
    forwarded["proc"].wait_for(rf"session {first_id} open: .* peer=tcp4:127\.0\.0\.2:\d+", start=mark)


def test_forwarded_client_is_not_local(forwarded):
    """Details are for local clients: the proxy on loopback forwarding for 198.51.100.7 gets none."""
    port = forwarded["port"]
    assert json.loads(get(port, "/healthz", extra=("X-Forwarded-For: 198.51.100.7",))[2]) == {"up": True}
    assert "pid" in json.loads(get(port, "/healthz")[2])  # the proxy asking for itself
