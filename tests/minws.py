"""A small WebSocket + WAMP JSON client on bare asyncio streams, for reliability tests.

No autobahn and no txaio: it puts exactly the bytes a test asks for on the wire
(bad frames, invalid UTF-8, unmasked frames, raw garbage), can stop reading on
purpose (a slow consumer), and is light enough to open a thousand sessions.

    ws = await WSClient.connect(url)            # HTTP upgrade, wamp.2.json
    await ws.hello()                             # HELLO -> WELCOME
    reply = await ws.call("tcp://...", ["x"])    # CALL -> RESULT or ERROR (the message list)
    msg = await ws.recv_json()                   # next WAMP message; raises Closed on close
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import socket
import struct
from dataclasses import dataclass
from urllib.parse import urlparse

HELLO = 1
WELCOME = 2
ABORT = 3
GOODBYE = 6
ERROR = 8
SUBSCRIBE = 32
SUBSCRIBED = 33
UNSUBSCRIBE = 34
UNSUBSCRIBED = 35
EVENT = 36
CALL = 48
RESULT = 50

ROLES = {"caller": {}, "subscriber": {}}


class HandshakeRefused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status} {reason}")
        self.status = status
        self.reason = reason


class Closed(Exception):
    """The server closed the WebSocket (``code`` None: the TCP connection ended without a close frame)."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


@dataclass
class Frame:
    opcode: int
    payload: bytes


def encode_frame(
    opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True, rsv: int = 0, key: bytes | None = None, length_bytes: int = 0
) -> bytes:
    """A WebSocket frame; ``length_bytes`` 2 or 8 forces a longer length encoding than needed."""
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    n = len(payload)
    m = 0x80 if mask else 0
    if n < 126 and not length_bytes:
        head += bytes([m | n])
    elif n < 65536 and length_bytes != 8:
        head += bytes([m | 126]) + struct.pack("!H", n)
    else:
        head += bytes([m | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4) if key is None else key
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if n < 4096 else _mask_fast(payload, key)
    return head + key + masked


def _mask_fast(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    k = int.from_bytes((key * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ k).to_bytes(n, "big")


async def open_tcp(url: str, timeout: float = 10.0, rcvbuf: int | None = None, source: str | None = None, ssl=None):
    """A TCP connection to the host and port of ``url`` (TLS with ``ssl``, an SSLContext): (reader, writer)."""
    u = urlparse(url)
    sock = socket.socket(socket.AF_INET6 if ":" in (u.hostname or "") else socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if source:
        sock.bind((source, 0))
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (u.hostname, u.port)), timeout)
    except BaseException:
        sock.close()
        raise
    if ssl is None:
        return await asyncio.open_connection(sock=sock, limit=rcvbuf or 2**16)
    return await asyncio.wait_for(
        asyncio.open_connection(sock=sock, limit=rcvbuf or 2**16, ssl=ssl, server_hostname=u.hostname), timeout
    )


class WSClient:
    _ids = itertools.count(1)

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol: str) -> None:
        self.reader = reader
        self.writer = writer
        self.protocol = protocol
        self.auto_pong = True
        self.pings = 0
        self.closed: Closed | None = None

    # -- connection -----------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        url: str,
        protocols: tuple[str, ...] = ("wamp.2.json",),
        timeout: float = 10.0,
        rcvbuf: int | None = None,
        headers: dict[str, str] | None = None,
        source: str | None = None,
        ssl=None,
        preamble: bytes = b"",
        streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None,
    ) -> WSClient:
        """``rcvbuf``: a small receive buffer (for a client that stops reading); ``source``: local address;
        ``ssl``: an SSLContext for wss://; ``preamble``: bytes sent before the request (a PROXY protocol header);
        ``streams``: a connection already open (``open_tcp``) to upgrade instead of a new one."""
        reader, writer = streams or await open_tcp(url, timeout, rcvbuf, source, ssl)
        writer.write(preamble)
        u = urlparse(url)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {u.path or '/'} HTTP/1.1",
            f"Host: {u.netloc}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if protocols:
            lines.append(f"Sec-WebSocket-Protocol: {', '.join(protocols)}")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            writer.close()
            raise HandshakeRefused(0, f"connection closed during handshake: {e!r}") from None
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        _, status, reason = (status_line.split(" ", 2) + [""])[:3]
        if status != "101":
            writer.close()
            raise HandshakeRefused(int(status), reason)
        chosen = ""
        for line in header_lines:
            name, _, value = line.partition(":")
            if name.strip().lower() == "sec-websocket-protocol":
                chosen = value.strip()
        return cls(reader, writer, chosen)

    def abort(self) -> None:
        """Drop the TCP connection at once."""
        self.writer.transport.abort()

    async def close(self, code: int = 1000, timeout: float = 5.0) -> int | None:
        """Send a close frame and wait for the server's; return its code."""
        if self.closed is None:
            self.send_frame(8, struct.pack("!H", code))
            try:
                while True:
                    await self.recv(timeout)
            except Closed as e:
                self.closed = e
            except (TimeoutError, ConnectionError):
                pass
        self.writer.close()
        return self.closed.code if self.closed else None

    # -- frames ---------------------------------------------------------------

    def send_frame(self, opcode: int, payload: bytes, **kw) -> None:
        self.writer.write(encode_frame(opcode, payload, **kw))

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    def send(self, payload: bytes | str, binary: bool = False) -> None:
        if isinstance(payload, str):
            payload = payload.encode()
        self.send_frame(2 if binary else 1, payload)

    async def _read_frame(self) -> Frame:
        b0, b1 = await self.reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
        key = await self.reader.readexactly(4) if b1 & 0x80 else None
        payload = await self.reader.readexactly(n)
        if key:
            payload = _mask_fast(payload, key)
        return Frame(b0 & 0x0F, payload), bool(b0 & 0x80)

    async def recv(self, timeout: float = 5.0) -> Frame:
        """The next data message (text 1 / binary 2); pings are answered; a close raises Closed."""
        return await asyncio.wait_for(self._recv(), timeout)

    async def _recv(self) -> Frame:
        if self.closed is not None:
            raise self.closed
        parts: list[bytes] = []
        opcode = None
        while True:
            try:
                frame, fin = await self._read_frame()
            except (asyncio.IncompleteReadError, ConnectionError):
                self.closed = Closed(None, "connection ended without a close frame")
                raise self.closed from None
            if frame.opcode == 9:
                self.pings += 1
                if self.auto_pong:
                    self.send_frame(10, frame.payload)
                continue
            if frame.opcode == 10:
                continue
            if frame.opcode == 8:
                code = struct.unpack("!H", frame.payload[:2])[0] if len(frame.payload) >= 2 else None
                self.closed = Closed(code, frame.payload[2:].decode("utf-8", "replace"))
                try:
                    self.send_frame(8, frame.payload[:2])
                except Exception:
                    pass
                raise self.closed
            if frame.opcode != 0:
                opcode = frame.opcode
            parts.append(frame.payload)
            if fin:
                return Frame(opcode, b"".join(parts))

    async def idle(self, seconds: float) -> list[Frame]:
        """Wait ``seconds`` while still answering pings; return the messages that came meanwhile."""
        got = []
        deadline = asyncio.get_running_loop().time() + seconds
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                got.append(await self.recv(left))
            except TimeoutError:
                break
        return got

    # -- WAMP (JSON) ------------------------------------------------------------

    def send_json(self, msg) -> None:
        self.send(json.dumps(msg))

    async def recv_json(self, timeout: float = 5.0) -> list:
        frame = await self.recv(timeout)
        return json.loads(frame.payload)

    async def hello(self, realm: str = "zmqwamp", details: dict | None = None) -> list:
        self.send_json([HELLO, realm, details or {"roles": ROLES}])
        msg = await self.recv_json()
        if msg[0] != WELCOME:
            raise AssertionError(f"expected WELCOME, got {msg}")
        return msg

    def next_id(self) -> int:
        return next(self._ids)

    async def call(self, procedure: str, args: list | None = None, timeout: float = 10.0, options: dict | None = None) -> list:
        """CALL and wait for its RESULT or ERROR (EVENTs arriving meanwhile are skipped)."""
        request = self.next_id()
        self.send_json([CALL, request, options or {}, procedure, args or []])
        while True:
            msg = await self.recv_json(timeout)
            if msg[0] in (RESULT, ERROR) and msg[1 if msg[0] == RESULT else 2] == request:
                return msg

    async def subscribe(self, topic: str, options: dict | None = None, timeout: float = 10.0) -> list:
        """SUBSCRIBE and wait for SUBSCRIBED or ERROR (EVENTs arriving meanwhile are skipped)."""
        request = self.next_id()
        self.send_json([SUBSCRIBE, request, options or {}, topic])
        while True:
            msg = await self.recv_json(timeout)
            if msg[0] in (SUBSCRIBED, ERROR) and msg[1 if msg[0] == SUBSCRIBED else 2] == request:
                return msg

    async def goodbye(self, timeout: float = 5.0) -> list:
        self.send_json([GOODBYE, {}, "wamp.close.close_realm"])
        while True:
            msg = await self.recv_json(timeout)
            if msg[0] == GOODBYE:
                return msg
