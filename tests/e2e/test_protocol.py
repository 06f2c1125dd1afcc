"""End to end at the wire: bad input gets ABORT/ERROR and only that session ends."""

from __future__ import annotations

import asyncio
import json

import pytest

from minws import Closed, HandshakeRefused, WSClient
from probes import healthz
from waiting import eventually
from wampclient import close, connect

HELLO = json.dumps([1, "zmqwamp", {"roles": {"caller": {}, "subscriber": {}}}]).encode()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def hello(url):
    raw = await WSClient.connect(url)
    raw.send(HELLO)
    assert (await raw.recv_json())[0] == 2
    return raw


async def closed(raw: WSClient, timeout: float = 5.0) -> Closed:
    """The server's close of ``raw`` (no other message may come first)."""
    with pytest.raises(Closed) as e:
        got = await raw.recv(timeout)
        raise AssertionError(f"a message instead of the close: {got}")
    return e.value


async def expect_abort(raw, uri="wamp.error.protocol_violation"):
    msg = await raw.recv_json()
    assert msg[0] == 3, msg
    assert msg[2] == uri
    await closed(raw)
    return msg


BAD_AFTER_HELLO = {
    "not json": b"{{{",
    "not a list": b'{"a": 1}',
    "empty list": b"[]",
    "unknown type": b"[999, 1]",
    "string type": b'["CALL", 1]',
    "short CALL": b"[48, 1]",
    "huge request id": b'[48, 99999999999999999999, {}, "tcp://127.0.0.1:1"]',
    "second HELLO": HELLO,
    "RESULT to a router": b"[50, 1, {}]",
    "YIELD without INVOCATION": b"[70, 1, {}]",
    "AUTHENTICATE without CHALLENGE": b'[5, "sig", {}]',
    "deep nesting": b"[48, 1, {}, \"tcp://127.0.0.1:1\", " + b"[" * 5000 + b"]" * 5000 + b"]",
}


@pytest.mark.parametrize("name", sorted(BAD_AFTER_HELLO))
def test_bad_message_aborts_only_that_session(bridge, name):
    """Each protocol violation gets ABORT wamp.error.protocol_violation and close; a good session carries on."""

    async def scenario():
        good = await connect(bridge["url"])
        raw = await hello(bridge["url"])
        raw.send(BAD_AFTER_HELLO[name])
        await expect_abort(raw)
        assert await good.call(bridge["rep"], name) == f"got this {name}"
        await close(good)

    run(scenario())


def test_message_before_hello_aborts(bridge):
    async def scenario():
        raw = await WSClient.connect(bridge["url"])
        raw.send(json.dumps([48, 1, {}, bridge["rep"], ["x"]]).encode())
        await expect_abort(raw)

    run(scenario())


def test_binary_frame_on_json_session_aborts(bridge):
    async def scenario():
        raw = await hello(bridge["url"])
        raw.send(b"\x93\x01\x02\x03", binary=True)
        await expect_abort(raw)

    run(scenario())


def test_invalid_utf8_text_frame_closes(bridge):
    """Invalid UTF-8 in a text frame is a WebSocket error: close code 1007."""

    async def scenario():
        raw = await hello(bridge["url"])
        raw.send_frame(1, b"[48, 1, {}, \"\xff\"]")  # a text frame, as is: minws does not check UTF-8
        assert (await closed(raw)).code in (1007, 1002)

    run(scenario())


def test_oversized_message_closes_with_1009(bridge):
    """A message over the size limit is refused with WebSocket close 1009."""

    async def scenario():
        raw = await hello(bridge["url"])
        big = json.dumps([48, 1, {}, bridge["rep"], ["x" * (2 * 1024 * 1024)]]).encode()
        raw.send(big)
        assert (await closed(raw, 10)).code == 1009

    run(scenario())


def test_no_wamp_subprotocol_is_refused(bridge):
    """A WebSocket that offers no WAMP subprotocol is refused at the handshake."""

    async def scenario():
        with pytest.raises(HandshakeRefused):
            await WSClient.connect(bridge["url"], protocols=("chat",))

    run(scenario())


def test_goodbye_then_call_is_not_processed(bridge):
    """GOODBYE gets GOODBYE goodbye_and_out and the session closes; a CALL after it is not forwarded."""

    async def scenario():
        raw = await hello(bridge["url"])
        raw.send(json.dumps([6, {}, "wamp.close.normal"]).encode() )
        raw.send(json.dumps([48, 7, {}, bridge["rep"], ["late"]]).encode())
        assert (await raw.recv_json())[:3] == [6, {}, "wamp.close.goodbye_and_out"]
        await closed(raw)  # nothing (no RESULT, no ERROR) between GOODBYE and the close

    run(scenario())


def test_cancel_a_call(bridge):
    """CANCEL of a pending CALL gets ERROR wamp.error.canceled."""

    async def scenario():
        raw = await hello(bridge["url"])
        raw.send(json.dumps([48, 11, {}, bridge["slow"], ["x"]]).encode())
        await eventually(lambda: healthz(bridge["url"])["calls_in_flight"] >= 1, what="the CALL in flight", blocking=True)
        raw.send(json.dumps([49, 11, {}]).encode())
        msg = await raw.recv_json()
        assert msg[:5] == [8, 48, 11, {}, "wamp.error.canceled"]
        await raw.close()

    run(scenario())


def test_kwargs_rejected_clearly(bridge):
    async def scenario():
        raw = await hello(bridge["url"])
        raw.send(json.dumps([48, 12, {}, bridge["rep"], [], {"a": 1}]).encode())
        assert (await raw.recv_json())[:5] == [8, 48, 12, {}, "wamp.error.invalid_argument"]
        await raw.close()

    run(scenario())


def test_login_must_complete_within_the_handshake_timeout(services):
    """A WebSocket that never sends HELLO is aborted with wamp.error.timeout after --handshake-timeout."""
    from harness import start_bridge

    proc, url = start_bridge("--anonymous", "--handshake-timeout", "1")
    try:

        async def scenario():
            raw = await WSClient.connect(url)
            msg = await raw.recv_json(timeout=5)
            assert msg[0] == 3 and msg[2] == "wamp.error.timeout"
            await closed(raw)
            good = await connect(url)  # a session that logs in at once is not affected
            await asyncio.sleep(1.5)  # the scenario: longer than --handshake-timeout, and the session is still there
            assert good.is_attached()
            await close(good)

        run(scenario())
    finally:
        proc.stop()
