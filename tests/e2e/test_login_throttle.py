"""Login throttling (issue 13, item 9) end to end: a real ``twistd -n zmqwamp`` with a
``memory:`` checker, logins over real WebSockets from 127.0.0.1. The logic: tests/unit/test_login_throttle.py.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request

from harness import start_bridge
from minws import ABORT, WELCOME, WSClient

CAROL = "carol-right-1"


def run(coro, timeout: float = 90):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def ticket_login(url: str, authid: str, ticket: str) -> tuple[list, float]:
    """HELLO(ticket) -> CHALLENGE -> AUTHENTICATE on a raw WebSocket: (WELCOME or ABORT, seconds from AUTHENTICATE)."""
    ws = await WSClient.connect(url)
    try:
        ws.send_json([1, "zmqwamp", {"roles": {"caller": {}}, "authmethods": ["ticket"], "authid": authid}])
        challenge = await ws.recv_json(10)
        assert challenge[0] == 4, challenge
        sent = time.monotonic()
        ws.send_json([5, ticket, {}])
        answer = await ws.recv_json(30)
        return answer, time.monotonic() - sent
    finally:
        ws.abort()


def test_right_ticket_logs_in_after_many_wrong_ones_from_that_address():
    """After 5 wrong tickets from one address the right one still gets WELCOME before the login deadline.

    Before: the penalty doubled past the deadline (4 s > 3 s) and the good login got ABORT wamp.error.timeout.
    """
    proc, url = start_bridge("--handshake-timeout", "3", "--auth", f"memory:carol:{CAROL}")
    try:

        async def scenario():
            for _ in range(5):
                answer, _ = await ticket_login(url, "carol", "wrong-guess")
                assert answer[0] == ABORT and answer[2] == "wamp.error.not_authorized", answer
            return await ticket_login(url, "carol", CAROL)

        answer, took = run(scenario())
    finally:
        proc.stop()
    assert answer[0] == WELCOME, answer
    assert answer[2]["authid"] == "carol"
    assert CAROL not in proc.output


def test_parallel_guesses_from_one_address_are_checked_one_at_a_time():
    """100 wrong tickets sent at once from one address: checked one after another with the growing
    penalty between them, the rest refused at once with 'too many login attempts'.

    Before: all 100 were checked at once and refused together about 0.5 s later.
    """
    proc, url = start_bridge("--handshake-timeout", "4", "--auth", f"memory:carol:{CAROL}")
    try:

        async def one():
            ws = await WSClient.connect(url)
            try:
                ws.send_json([1, "zmqwamp", {"roles": {"caller": {}}, "authmethods": ["ticket"], "authid": "carol"}])
                assert (await ws.recv_json(10))[0] == 4
                return ws
            except BaseException:
                ws.abort()
                raise

        async def answer(ws):
            try:
                msg = await ws.recv_json(30)
                return msg, time.monotonic()
            finally:
                ws.abort()

        async def scenario():
            clients = await asyncio.gather(*(one() for _ in range(100)))
            started = time.monotonic()
            for ws in clients:
                ws.send_json([5, "wrong-guess", {}])
            answers = await asyncio.gather(*(answer(ws) for ws in clients))
            return started, answers

        started, answers = run(scenario())
        metrics = urllib.request.urlopen(url.replace("ws://", "http://").replace("/ws", "/metrics"), timeout=10).read().decode()
    finally:
        proc.stop()
    assert all(msg[0] == ABORT and msg[2] == "wamp.error.not_authorized" for msg, _ in answers), answers
    checked = sorted(t - started for msg, t in answers if msg[1].get("message") == "authentication failed")
    busy = [msg for msg, _ in answers if msg[1].get("message") == "too many login attempts"]
    assert len(checked) + len(busy) == 100, answers
    # 3 free failures, then 1 s before the next check, then 2 s (the budget: half of the 4 s login deadline)
    assert 4 <= len(checked) <= 6, checked
    assert checked[3] - checked[2] >= 0.9, checked
    assert "too many login attempts" in proc.output
    assert f'zmqwamp_limit_exceeded_total{{limit="max_pending_logins"}} {len(busy)}.0' in metrics
