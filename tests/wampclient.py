"""A joined autobahn-python (asyncio) WAMP session for end-to-end tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import urlparse

from autobahn.asyncio.wamp import ApplicationSession
from autobahn.asyncio.websocket import WampWebSocketClientFactory
from autobahn.wamp import serializer as ser
from autobahn.wamp.types import ComponentConfig

SERIALIZERS = {"json": ser.JsonSerializer, "msgpack": ser.MsgPackSerializer, "cbor": ser.CBORSerializer}


class SessionClosed(Exception):
    """The router ended the session (ABORT or GOODBYE); ``reason`` is the WAMP URI."""

    def __init__(self, reason: str, message: str | None) -> None:
        super().__init__(reason, message)
        self.reason = reason
        self.message = message


class _Session(ApplicationSession):
    def __init__(self, config, joined: asyncio.Future, login: dict) -> None:
        super().__init__(config)
        self._joined = joined
        self._login = login
        self.left = asyncio.get_running_loop().create_future()

    def onConnect(self):
        self.join(self.config.realm, authmethods=self._login.get("authmethods"), authid=self._login.get("authid"))

    def onChallenge(self, challenge):
        return self._login["on_challenge"](challenge)

    def onJoin(self, details):
        if not self._joined.done():
            self._joined.set_result(self)

    def onLeave(self, details):
        if not self._joined.done():
            self._joined.set_exception(SessionClosed(details.reason, details.message))
        if not self.left.done():
            self.left.set_result(details)
        self.disconnect()

    def onDisconnect(self):
        if not self._joined.done():
            self._joined.set_exception(SessionClosed("transport closed", None))
        if not self.left.done():
            self.left.set_result(None)


async def connect(
    url: str,
    realm: str = "zmqwamp",
    serializer: str = "json",
    authmethods: list[str] | None = None,
    authid: str | None = None,
    on_challenge: Callable | None = None,
    timeout: float = 10.0,
    ssl=None,
    server_hostname: str | None = None,
) -> ApplicationSession:
    loop = asyncio.get_running_loop()
    joined = loop.create_future()
    login = {"authmethods": authmethods, "authid": authid, "on_challenge": on_challenge}
    factory = WampWebSocketClientFactory(
        lambda: _Session(ComponentConfig(realm), joined, login), url=url, serializers=[SERIALIZERS[serializer]()]
    )
    parsed = urlparse(url)
    tls = {"ssl": ssl, "server_hostname": server_hostname or parsed.hostname} if ssl else {}
    await asyncio.wait_for(loop.create_connection(factory, "127.0.0.1" if ssl else parsed.hostname, parsed.port, **tls), timeout)
    return await asyncio.wait_for(joined, timeout)


async def close(session: ApplicationSession, timeout: float = 5.0) -> None:
    if session.is_attached():
        session.leave()
    await asyncio.wait_for(session.left, timeout)
