"""Login throttling (issue 13, item 9) end to end: a real ``twistd -n zmqwamp`` with a
``memory:`` checker, logins over real WebSockets from 127.0.0.1. The logic: tests/unit/auth/test_throttle.py.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request

from harness import start_bridge
from minws import ABORT, WELCOME, WSClient
from waiting import timing_bound

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


# -- issue 21, item 4: a guesser from another address cannot lock the real user out ---------------------------

ALICE = "alice-right-4"


async def attempt_from(url: str, source: str, authid: str, ticket: str) -> tuple[list, float]:
    """One ticket login from ``source`` (a 127.x address): (WELCOME or ABORT, seconds from HELLO to the answer)."""
    started = time.monotonic()
    ws = await WSClient.connect(url, source=source)
    try:
        ws.send_json([1, "zmqwamp", {"roles": {"caller": {}}, "authmethods": ["ticket"], "authid": authid}])
        challenge = await ws.recv_json(10)
        assert challenge[0] == 4, challenge
        ws.send_json([5, ticket, {}])
        return await ws.recv_json(30), time.monotonic() - started
    finally:
        ws.abort()


async def guess(url: str, source: str, authid: str, stop: asyncio.Event, answers: list, per_second: float) -> None:
    """Wrong tickets for ``authid`` from ``source``, one at a time, at most ``per_second``, until ``stop``."""
    while not stop.is_set():
        started = time.monotonic()
        answer, _ = await attempt_from(url, source, authid, "wrong-guess")
        answers.append(answer)
        await asyncio.sleep(max(0.0, 1 / per_second - (time.monotonic() - started)))


def test_a_guesser_from_another_address_does_not_lock_the_real_user_out():
    """The attack of issue 21 item 4: from 127.0.0.2, ~8 wrong tickets/s for alice, never more than 2 at once.
    alice, who logged in from 127.0.0.1 before, gets WELCOME 20 times out of 20, without waiting out the
    guesser's penalty; alice from an address she never used (127.0.0.3) still gets in (after the authid's
    penalty, within the login deadline); and the guesser stays slowed: a few checks, the rest refused at once.

    Before: alice got WELCOME 2 times out of 20, "too many login attempts" otherwise (the guesser's attempt
    sitting in its penalty made every other attempt for alice fail the time-budget check at once)."""
    proc, url = start_bridge("--auth", f"memory:alice:{ALICE}")
    try:

        async def scenario():
            first, _ = await attempt_from(url, "127.0.0.1", "alice", ALICE)  # her usual address, known from now on
            assert first[0] == WELCOME, first
            stop = asyncio.Event()
            guesses: list = []
            attackers = [asyncio.ensure_future(guess(url, "127.0.0.2", "alice", stop, guesses, 4)) for _ in range(2)]
            started = time.monotonic()
            await asyncio.sleep(8)  # 3 free failures, then checks after 1, 2 and 4 s: the penalty is at its cap (5 s)
            alice = [await attempt_from(url, "127.0.0.1", "alice", ALICE) for _ in range(20)]
            elsewhere = [await attempt_from(url, "127.0.0.3", "alice", ALICE) for _ in range(2)]
            stop.set()
            await asyncio.gather(*attackers)
            return alice, elsewhere, guesses, time.monotonic() - started

        alice, elsewhere, guesses, attacked = run(scenario(), 180)
    finally:
        proc.stop()
    welcomed = [took for answer, took in alice if answer[0] == WELCOME]
    assert len(welcomed) == 20, [answer for answer, _ in alice]
    timing_bound(max(welcomed) < 2, f"alice's logins from her address took up to {max(welcomed):.1f} s (bound 2 s)")
    assert [answer[0] for answer, _ in elsewhere] == [WELCOME, WELCOME], elsewhere
    assert all(took < 9 for _, took in elsewhere), elsewhere  # within the 10 s login deadline
    messages = [answer[1].get("message") for answer in guesses]
    assert set(messages) <= {"authentication failed", "too many login attempts"}, messages
    assert len(messages) > 2 * attacked, f"{len(messages)} guesses in {attacked:.0f} s"  # the attack did run
    # still slowed: 3 free failures, checks after 1, 2, 4 s, then at most one per 5 s penalty
    checked = messages.count("authentication failed")
    assert checked <= 6 + attacked / 5, f"{checked} guesses checked in {attacked:.0f} s"
