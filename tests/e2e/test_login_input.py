"""Hostile values in a login, against a real ``twistd -n zmqwamp`` (issue 21, item 6).

An authid or a ticket/signature that JSON can carry but UTF-8 cannot (a lone surrogate, ``"\\ud800"``) is
refused like any other bad credential: ABORT ``wamp.error.not_authorized``, one short log line (through the
client log limits), no traceback.  The logic in memory: tests/unit/auth/test_cred.py.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from harness import start_bridge
from minws import ABORT, WELCOME, WSClient

CAROL = "carol-right-6"
LONE = "\ud800"  # json.dumps writes it as the escape \ud800; json.loads gives it back as a lone surrogate


def run(coro, timeout: float = 120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def login(url: str, method: str, authid: str, signature: str | None, source: str = "127.0.0.1") -> list:
    """HELLO (-> CHALLENGE -> AUTHENTICATE ``signature``) on a raw WebSocket: the WELCOME or ABORT."""
    ws = await WSClient.connect(url, source=source)
    try:
        ws.send_json([1, "zmqwamp", {"roles": {"caller": {}}, "authmethods": [method], "authid": authid}])
        msg = await ws.recv_json(10)
        if msg[0] != 4:
            return msg
        ws.send_json([5, signature, {}])
        return await ws.recv_json(20)
    finally:
        ws.abort()


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    d = tmp_path_factory.mktemp("input")
    subprocess.run(
        [sys.executable, "-m", "zmqwamp.users", "add", str(d / "users"), "alice", "--iterations", "1000", "--password-stdin"],
        input="alice-right-6\n", text=True, check=True, capture_output=True, timeout=60,
    )
    proc, url = start_bridge(
        "--auth", f"zmqwamp-users:{d / 'users'}", "--auth", f"memory:carol:{CAROL}",
        "--max-log-lines-per-second-total", "5",
    )
    yield proc, url
    proc.stop()


@pytest.mark.parametrize(
    "method, authid, signature, message, source",
    [
        ("ticket", LONE, "x", "the authid is not valid Unicode text", "127.0.0.2"),
        ("wampcra", "a" + LONE, "x", "the authid is not valid Unicode text", "127.0.0.3"),
        ("ticket", "carol", LONE, "authentication failed", "127.0.0.4"),
        ("wampcra", "alice", "abc" + LONE, "authentication failed", "127.0.0.5"),
    ],
    ids=["ticket-authid", "wampcra-authid", "ticket", "wampcra-signature"],
)
def test_a_lone_surrogate_is_refused_without_a_traceback(bridge, method, authid, signature, message, source):
    """ABORT not_authorized with a clear message; no traceback in the log; carol still logs in (from another
    address: the refusals count as failures from this one).

    Before: to_bytes raised UnicodeEncodeError: a critical 'Unhandled error' traceback per connection
    (and for a wampcra authid ABORT 'login failed')."""
    proc, url = bridge
    mark = len(proc.lines)

    async def scenario():
        refused = [await login(url, method, authid, signature, source) for _ in range(3)]
        return refused, await login(url, "ticket", "carol", CAROL, source="127.0.0.9")

    refused, welcome = run(scenario())
    for msg in refused:
        assert msg[0] == ABORT and msg[2] == "wamp.error.not_authorized" and msg[1]["message"] == message, msg
    assert welcome[0] == WELCOME, welcome
    log = "\n".join(proc.lines[mark:])
    assert "Traceback" not in log and "critical" not in log.lower() and "Unhandled" not in log, log


def test_lone_surrogate_authids_are_logged_within_the_client_log_limits(bridge):
    """60 HELLOs with such an authid in about a second: at most the total budget of lines about them (5 per
    second, --max-log-lines-per-second-total), the rest counted as suppressed."""
    proc, url = bridge
    mark = len(proc.lines)

    async def scenario():
        started = time.monotonic()
        answers = await asyncio.gather(*(login(url, "ticket", LONE + str(i), "x") for i in range(60)))
        return answers, time.monotonic() - started

    answers, took = run(scenario())
    assert all(a[0] == ABORT and a[1]["message"] == "the authid is not valid Unicode text" for a in answers), answers
    lines = [line for line in proc.lines[mark:] if "not valid Unicode" in line]
    assert len(lines) <= 5 + 5 * took + 1, (took, lines)
