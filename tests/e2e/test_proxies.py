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
from minws import ERROR, EVENT, RESULT, SUBSCRIBED, HandshakeRefused, WSClient, open_tcp
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


# -- issue 21: clients a proxy cannot name (item 10), one key per client (item 12) ---------------------------


@pytest.fixture(scope="module")
def forwarded_few(services):
    """A trusted proxy on 127.0.0.1, 3 connections per client, 1 zmq connection per peer."""
    proc, url = start_bridge(
        "--anonymous", "--allow", "tcp://127.0.0.1:*", "--trusted-proxy", "127.0.0.1", "--max-sessions-per-peer", "3",
        "--max-endpoints-per-peer", "1",
    )
    yield {"url": url, "proc": proc, "port": int(url.rsplit(":", 1)[1].split("/")[0]), **services}
    proc.stop()


async def connections(url: str, values: list[str], header: str = "X-Forwarded-For") -> tuple[list, list]:
    """One upgrade per forwarded value, kept open: (the clients that got in, the refusals)."""
    opened, refused = [], []
    for value in values:
        try:
            opened.append(await WSClient.connect(url, headers={header: value}))
        except HandshakeRefused as e:
            refused.append((value, e))
    return opened, refused


def test_clients_the_proxy_cannot_name_share_one_per_peer_count(forwarded_few):
    """Item 10: 'unknown', RFC 7239's '_hidden', nginx's 'unix:' as the right-most hop made the client the proxy:
    no per-peer limit (220 of 220 upgrades accepted), and /metrics answered it as local.  Now they are one unknown,
    non-local client: 3 connections, then 503."""
    url, port = forwarded_few["url"], forwarded_few["port"]
    mark = len(forwarded_few["proc"].lines)

    async def scenario():
        opened, refused = await connections(url, ["unknown", "_hidden", "6.6.6.6, unix:", "unknown", "unix:"])
        welcome = await opened[0].hello()
        others, _ = await connections(url, ["198.51.100.1", "198.51.100.2"])  # named clients: their own counts
        for ws in opened + others:
            ws.abort()
        return len(opened), refused, len(others), welcome[1]

    accepted, refused, others, session = run(scenario())
    assert accepted == 3 and others == 2
    assert [r[1].status for r in refused] == [503, 503] and "max_sessions_per_peer" in refused[0][1].reason
    forwarded_few["proc"].wait_for(rf"session {session} open: .* peer=unknown\b", start=mark)
    assert get(port, "/metrics", extra=("X-Forwarded-For: unknown",))[0] == 404
    assert json.loads(get(port, "/healthz", extra=("X-Forwarded-For: unix:",))[2]) == {"up": True}


def test_an_ipv6_client_is_counted_by_its_64(forwarded_few):
    """Item 12: an IPv6 client has a whole /64 of addresses: 2001:db8:0:1::a, ::b, ... count as one client, for
    connections (3) and zmq connections (1 per peer); another /64 is another client."""
    url = forwarded_few["url"]

    async def scenario():
        values = [f"2001:db8:0:1::{n:x}" for n in range(10, 15)]
        opened, refused = await connections(url, values)
        sessions = [opened[0], opened[1]]
        for ws in sessions:
            await ws.hello()
        first = await sessions[0].subscribe(forwarded_few["pub"])  # a SUB connection: charged while subscribed
        second = await sessions[1].call("tcp://127.0.0.1:9", ["another endpoint, from ::b"], options={"timeout": 300})
        apart, _ = await connections(url, ["2001:db8:0:2::1"])
        await apart[0].hello()
        third = await apart[0].call("tcp://127.0.0.1:9", ["from another /64"], options={"timeout": 300})
        for ws in opened + apart:
            ws.abort()
        return len(opened), refused, first, second, third

    accepted, refused, first, second, third = run(scenario())
    assert accepted == 3 and [r[1].status for r in refused] == [503, 503]
    assert first[0] == SUBSCRIBED
    assert second[0] == ERROR and "max_endpoints_per_peer" in second[5][0], second
    assert third[0] == ERROR and "max_endpoints_per_peer" not in third[5][0], third  # a timeout: it was sent


def test_an_ipv4_mapped_client_is_one_client_for_every_limit(services, tmp_path):
    """Item 12: on a dual-stack listener an IPv4 client is ::ffff:a.b.c.d; the connection counter made it a.b.c.d
    but the login throttle and the upstream budget kept ::ffff:a.b.c.d, so a client on two listeners (IPv4 and
    dual-stack) got every upstream budget twice.  One key for all: the second zmq connection is refused."""
    proc, url = start_bridge(
        "--anonymous", "--allow", "tcp://127.0.0.1:*", "--max-endpoints-per-peer", "1",
        "--listen", r"tcp6:0:interface=\:\:ffff\:127.0.0.1",
    )
    try:
        first_port = url.rsplit(":", 1)[1].split("/")[0]
        mapped = int(proc.wait_for(rf"starting on (?!{first_port}\b)(\d+)").group(1))

        async def scenario():
            v4 = await WSClient.connect(url)
            await v4.hello()
            v6 = await WSClient.connect(f"ws://[::ffff:127.0.0.1]:{mapped}/ws")
            welcome = await v6.hello()
            first = await v4.subscribe(services["pub"])  # a SUB connection: charged while subscribed
            second = await v6.call("tcp://127.0.0.1:9", ["over the mapped address"], options={"timeout": 300})
            v4.abort()
            v6.abort()
            return welcome[1], first, second

        session, first, second = run(scenario())
        proc.wait_for(rf"session {session} open: .* peer=tcp6:::ffff:127\.0\.0\.1:\d+")
        assert first[0] == SUBSCRIBED
        assert second[0] == ERROR and "max_endpoints_per_peer" in second[5][0], second
    finally:
        proc.stop()


def test_same_origin_needs_the_same_scheme(forwarded_few):
    """Item 12: Origin https://h:p was accepted on a plain ws:// connection to h:p.  Behind a trusted proxy that
    terminates TLS, X-Forwarded-Proto: https says the client's scheme."""
    port = forwarded_few["port"]
    host = f"127.0.0.1:{port}"

    def status(origin: str, *extra: str) -> int:
        lines = ("Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                 "Sec-WebSocket-Version: 13", "Sec-WebSocket-Protocol: wamp.2.json", f"Origin: {origin}", *extra)
        return get(port, "/ws", host=host, extra=lines)[0]

    assert status(f"http://{host}") == 101
    assert status(f"https://{host}") == 403
    assert status(f"https://{host}", "X-Forwarded-For: 198.51.100.3", "X-Forwarded-Proto: https") == 101
    assert status(f"http://{host}", "X-Forwarded-For: 198.51.100.4", "X-Forwarded-Proto: https") == 403


def test_same_origin_on_a_tls_listener(tmp_path):
    """wss:// takes an https Origin, not an http one."""
    import ssl

    from harness import make_cert

    key, cert, _ = make_cert(tmp_path)
    proc, url = start_bridge("--anonymous", listen=f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}")
    try:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        context = ssl.create_default_context(cafile=str(cert))

        async def status(origin: str) -> int:
            try:
                ws = await WSClient.connect(f"wss://localhost:{port}/ws", ssl=context, headers={"Origin": origin})
            except HandshakeRefused as e:
                return e.status
            ws.abort()
            return 101

        assert run(status(f"https://localhost:{port}")) == 101
        assert run(status(f"http://localhost:{port}")) == 403
    finally:
        proc.stop()
