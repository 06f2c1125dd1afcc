"""A raw WebSocket client (autobahn, asyncio) that sends exactly the frames a test gives it."""

from __future__ import annotations

import asyncio
from urllib.parse import urlparse

from autobahn.asyncio.websocket import WebSocketClientFactory, WebSocketClientProtocol


class _Raw(WebSocketClientProtocol):
    def onConnect(self, response):
        self.factory.opened.set_result(response.protocol)

    def onMessage(self, payload, isBinary):
        self.factory.inbox.put_nowait((payload, isBinary))

    def onClose(self, wasClean, code, reason):
        if not self.factory.opened.done():
            self.factory.opened.set_exception(ConnectionError(reason))
        if not self.factory.closed.done():
            self.factory.closed.set_result((code, reason))


class RawClient:
    """``send`` frames, ``recv`` what comes back, ``closed`` resolves to (code, reason)."""

    def __init__(self, factory: WebSocketClientFactory, protocol: _Raw) -> None:
        self.factory = factory
        self.protocol = protocol
        self.inbox: asyncio.Queue = factory.inbox
        self.closed: asyncio.Future = factory.closed

    def send(self, payload: bytes, binary: bool = False) -> None:
        self.protocol.sendMessage(payload, binary)

    async def recv(self, timeout: float = 5.0):
        return await asyncio.wait_for(self.inbox.get(), timeout)


async def open_raw(url: str, protocols=("wamp.2.json",), max_message_size: int = 0) -> RawClient:
    loop = asyncio.get_running_loop()
    factory = WebSocketClientFactory(url, protocols=list(protocols))
    factory.setProtocolOptions(maxMessagePayloadSize=max_message_size, maxFramePayloadSize=max_message_size)
    factory.protocol = _Raw
    factory.opened = loop.create_future()
    factory.closed = loop.create_future()
    factory.inbox = asyncio.Queue()
    parsed = urlparse(url)
    _, proto = await asyncio.wait_for(loop.create_connection(factory, parsed.hostname, parsed.port), 10)
    await asyncio.wait_for(factory.opened, 10)
    return RawClient(factory, proto)
