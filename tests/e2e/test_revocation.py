"""Revocation (issue 13, item 17) against a real ``twistd -n zmqwamp`` with real pyzmq services and raw
WebSocket and autobahn-python clients: SIGHUP revokes subscriptions, a JWT session ends at ``exp``, a token
living too long is refused. The logic in memory: tests/unit/wamp/test_router.py (the re-checks),
tests/unit/wamp/test_registry.py (expiry), tests/unit/service/test_bridge.py (reloads), tests/unit/auth/test_jwtcheck.py.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request

import jwt
import pytest
from autobahn.wamp.exception import ApplicationError

from zmqwamp.wamp.errors import SESSION_EXPIRED

from harness import start_bridge, start_pub, start_rep
from minws import EVENT, UNSUBSCRIBED, WSClient
from probes import metric
from waiting import eventually, timing_bound
from wampclient import SessionClosed, connect

PUB = "tcp://127.0.0.1:9000"
JWT_SECRET = "revocation-jwt-secret-that-is-long-enough-0123"
REVOCABLE = {"subscriber": {"features": {"subscription_revocation": True}}, "caller": {}}
PLAIN = {"subscriber": {}, "caller": {}}


def token(**claims):
    body = {"sub": "dave", "aud": "zmqwamp-e2e", "exp": int(time.time()) + 60, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, JWT_SECRET, algorithm="HS256")


# -- end to end --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream():
    pub, pub_addr = start_pub(interval=0.05, topics="alice.,bob.")
    slow, slow_addr = start_rep(delay=30)
    yield {"pub": pub_addr, "slow": slow_addr}
    pub.stop()
    slow.stop()


async def ticket_session(url: str, authid: str, ticket: str, roles: dict) -> tuple[WSClient, list]:
    ws = await WSClient.connect(url)
    ws.send_json([1, "zmqwamp", {"roles": roles, "authmethods": ["ticket"], "authid": authid}])
    assert (await ws.recv_json(10))[0] == 4
    ws.send_json([5, ticket, {}])
    welcome = await ws.recv_json(10)
    assert welcome[0] == 2, welcome
    return ws, welcome


async def wait_for_event(ws: WSClient, timeout: float = 10.0) -> list:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        msg = await ws.recv_json(max(0.1, deadline - asyncio.get_running_loop().time()))
        if msg[0] == EVENT:
            return msg


def events_in(frames) -> int:
    return sum(1 for f in frames if json.loads(f.payload)[0] == EVENT)


def test_sighup_that_removes_a_rule_revokes_open_subscriptions(upstream, tmp_path):
    """alice's subscriptions made under a rule that SIGHUP removed stop: a client that announced
    subscription_revocation gets UNSUBSCRIBED [35, 0, {subscription, reason}], no client of alice's gets
    another EVENT (autobahn-python's included); bob's rule stays and so do his EVENTs.

    Before: every subscription kept delivering after the reload."""
    pub = upstream["pub"]
    rules = {
        "alice": f'[[rules]]\nauthid = "alice"\nendpoints = ["{pub}"]\nactions = ["subscribe"]\n',
        "bob": f'[[rules]]\nauthid = "bob"\nendpoints = ["{pub}"]\nactions = ["subscribe"]\n',
    }
    config = tmp_path / "z.toml"
    config.write_text(rules["alice"] + rules["bob"])
    proc, url = start_bridge("--config", str(config), "--allow", pub, "--auth", "memory:alice:pw-alice:bob:pw-bob")
    try:

        async def scenario():
            revocable, welcome = await ticket_session(url, "alice", "pw-alice", REVOCABLE)
            assert welcome[2]["roles"]["broker"]["features"]["subscription_revocation"] is True
            plain, _ = await ticket_session(url, "alice", "pw-alice", PLAIN)
            bob, _ = await ticket_session(url, "bob", "pw-bob", PLAIN)
            sids = [(await ws.subscribe(pub))[2] for ws in (revocable, plain, bob)]
            python_events: list = []
            python = await connect(
                url, authmethods=["ticket"], authid="alice", on_challenge=lambda challenge: "pw-alice"
            )
            await python.subscribe(lambda *args: python_events.append(args), pub)
            for ws in (revocable, plain, bob):
                await wait_for_event(ws)
            await eventually(lambda: python_events, what="an event to the autobahn-python session")

            config.write_text(rules["bob"])
            mark = len(proc.lines)
            proc.proc.send_signal(signal.SIGHUP)
            started = time.monotonic()
            while True:  # EVENTs sent before the revocation may come first
                msg = await revocable.recv_json(5)
                if msg[0] != EVENT:
                    break
                assert time.monotonic() - started < 10, "10 s after SIGHUP, EVENTs still come and no UNSUBSCRIBED"
            took = time.monotonic() - started
            await asyncio.sleep(0.3)  # the scenario: what was on the way before the revocation arrives, then silence
            for ws in (plain, bob):
                await ws.idle(0.01)
            seen_by_python = len(python_events)
            after = {"revocable": await revocable.idle(1.0), "plain": await plain.idle(1.0), "bob": await bob.idle(1.0)}
            after["python"] = len(python_events) - seen_by_python
            await asyncio.get_running_loop().run_in_executor(None, lambda: proc.wait_for("subscription.s. revoked", start=mark))
            goodbye = await plain.goodbye()
            return msg, sids, took, after, goodbye

        msg, sids, took, after, goodbye = asyncio.run(asyncio.wait_for(scenario(), 60))
        metrics = urllib.request.urlopen(url.replace("ws://", "http://").replace("/ws", "/metrics"), timeout=10).read().decode()
    finally:
        proc.stop()
    assert msg == [UNSUBSCRIBED, 0, {"subscription": sids[0], "reason": "wamp.error.not_authorized"}]
    timing_bound(took < 5, f"UNSUBSCRIBED {took:.1f} s after SIGHUP (bound 5 s)")
    assert events_in(after["revocable"]) == 0 and events_in(after["plain"]) == 0 and after["python"] == 0
    assert events_in(after["bob"]) > 0
    assert goodbye[0] == 6  # the plain client's session is still open
    assert 'zmqwamp_revoked_total{what="subscription"} 3.0' in metrics
    assert "reload: 3 subscription(s) revoked" in proc.output


def test_a_jwt_session_ends_when_the_token_expires(upstream, tmp_path):
    """A token that expires in about 2 s: its session gets ERROR canceled for the call in flight, then GOODBYE
    zmqwamp.close.session_expired (autobahn-python's onLeave sees the reason).  Before: the session went on."""
    key = tmp_path / "jwt.key"
    key.write_text(JWT_SECRET)
    proc, url = start_bridge("--allow", upstream["slow"], "--auth", f"jwt:secret_file={key},audience=zmqwamp-e2e")
    try:

        async def scenario():
            short = token(exp=int(time.time()) + 3)
            session = await connect(url, authmethods=["ticket"], on_challenge=lambda challenge: short)
            call = asyncio.ensure_future(session.call(upstream["slow"], "no answer for 30 s"))
            details = await asyncio.wait_for(session.left, 10)
            with pytest.raises(ApplicationError) as error:
                await call
            return details, error.value

        details, error = asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        proc.stop()
    assert details.reason == SESSION_EXPIRED
    assert error.error == "wamp.error.canceled"
    assert "the credential of dave from" in proc.output and JWT_SECRET not in proc.output


def test_a_token_valid_for_a_hundred_years_is_refused(tmp_path):
    """exp 100 years out: ABORT not_authorized, logged with the reason (never the token).  Before: accepted."""
    key = tmp_path / "jwt.key"
    key.write_text(JWT_SECRET)
    proc, url = start_bridge("--anonymous", "--auth", f"jwt:secret_file={key},audience=zmqwamp-e2e")
    forever = token(exp=int(time.time()) + 100 * 365 * 86400)
    try:

        async def scenario():
            with pytest.raises(SessionClosed) as refused:
                await connect(url, authmethods=["ticket"], on_challenge=lambda challenge: forever)
            day = await connect(url, authmethods=["ticket"], on_challenge=lambda challenge: token())
            day.leave()
            return refused.value

        refused = asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        proc.stop()
    assert refused.reason == "wamp.error.not_authorized"
    assert "jwt refused: exp is more than max_lifetime (86400s) away" in proc.output
    assert forever not in proc.output


# -- issue 21, item 8: a reload that turns anonymous access off ------------------------------------------------


async def wait_for_message(ws: WSClient, kind: int, timeout: float = 10.0) -> list:
    """The next message of ``kind``, past the EVENTs on their way."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            msg = await ws.recv_json(max(0.1, deadline - loop.time()))
        except TimeoutError:
            break
        if msg[0] == kind:
            return msg
    raise AssertionError(f"no message of type {kind} within {timeout} s (EVENTs kept coming)")


def test_sighup_that_turns_anonymous_off_ends_anonymous_sessions(upstream, tmp_path):
    """anonymous = true -> false and SIGHUP: the open anonymous session (subscribed, getting EVENTs) gets GOODBYE
    zmqwamp.close.session_revoked 'anonymous access was turned off' and no more EVENTs; a new anonymous HELLO gets
    ABORT not_authorized; a ticket session stays.  Counted in zmqwamp_revoked_total{what="session"}, logged.

    Before: the reload logged 'configuration reloaded' and anonymous HELLOs still got WELCOME."""
    pub = upstream["pub"]
    config = tmp_path / "z.toml"
    config.write_text(f'anonymous = true\nallow = ["{pub}"]\n')
    proc, url = start_bridge("--config", str(config), "--auth", "memory:bob:pw-bob")
    try:

        async def scenario():
            anon = await WSClient.connect(url)
            assert (await anon.hello(details={"roles": PLAIN}))[0] == 2
            await anon.subscribe(pub)
            await wait_for_event(anon)
            bob, _ = await ticket_session(url, "bob", "pw-bob", PLAIN)
            config.write_text(f'anonymous = false\nallow = ["{pub}"]\n')
            proc.proc.send_signal(signal.SIGHUP)
            goodbye = await wait_for_message(anon, 6)
            after = await anon.idle(0.5)
            late = await WSClient.connect(url)
            late.send_json([1, "zmqwamp", {"roles": PLAIN}])
            refused = await late.recv_json(10)
            return goodbye, after, refused, await bob.goodbye()

        goodbye, after, refused, bye = asyncio.run(asyncio.wait_for(scenario(), 60))
        revoked = metric(url, "zmqwamp_revoked_total", what="session")
    finally:
        proc.stop()
    assert goodbye == [6, {"message": "anonymous access was turned off"}, "zmqwamp.close.session_revoked"]
    assert events_in(after) == 0
    assert refused[0] == 3 and refused[2] == "wamp.error.not_authorized", refused
    assert bye[0] == 6  # bob's session was still open
    assert revoked == 1
    assert "reload: anonymous access turned off, 1 anonymous session(s) ended" in proc.output


# -- issue 21, item 12: a user removed or demoted in the users file -------------------------------------------


def users_cli(*args: str, password: str | None = None) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "zmqwamp.users", *args], input=password, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr


def test_removing_or_demoting_a_user_ends_their_sessions(upstream, tmp_path):
    """`python -m zmqwamp.users remove FILE alice` while alice is subscribed: within seconds her session gets
    GOODBYE zmqwamp.close.session_revoked 'the user was removed from the users file' and no more EVENTs;
    re-adding bob with another role ends his ('the user's role changed'), and he logs in again with the new one;
    carol, unchanged, keeps hers.  Counted and logged.

    Before: both kept their sessions and subscriptions until they left."""
    pub = upstream["pub"]
    users = tmp_path / "users"
    for authid in ("alice", "bob", "carol"):
        users_cli("add", str(users), authid, "--iterations", "1000", "--password-stdin", password=f"pw-{authid}\n")
    proc, url = start_bridge("--allow", pub, "--auth", f"zmqwamp-users:{users}")
    try:

        async def scenario():
            sessions = {a: (await ticket_session(url, a, f"pw-{a}", PLAIN))[0] for a in ("alice", "bob", "carol")}
            for ws in sessions.values():
                await ws.subscribe(pub)
                await wait_for_event(ws)
            loop = asyncio.get_running_loop()
            started = time.monotonic()
            await loop.run_in_executor(None, users_cli, "remove", str(users), "alice")
            removed = await wait_for_message(sessions["alice"], 6)
            took = time.monotonic() - started
            after = await sessions["alice"].idle(0.5)
            await loop.run_in_executor(
                None,
                lambda: users_cli("add", str(users), "bob", "--role", "guest", "--iterations", "1000",
                                  "--password-stdin", password="pw-bob\n"),
            )
            demoted = await wait_for_message(sessions["bob"], 6)
            _, welcome = await ticket_session(url, "bob", "pw-bob", PLAIN)
            carol = await sessions["carol"].goodbye()
            return removed, took, demoted, after, welcome, carol

        removed, took, demoted, after, welcome, carol = asyncio.run(asyncio.wait_for(scenario(), 60))
        revoked = metric(url, "zmqwamp_revoked_total", what="session")
    finally:
        proc.stop()
    assert removed == [6, {"message": "the user was removed from the users file"}, "zmqwamp.close.session_revoked"]
    timing_bound(took < 3, f"GOODBYE {took:.1f} s after the users file changed (bound 3 s)")
    assert demoted == [6, {"message": "the user's role changed"}, "zmqwamp.close.session_revoked"]
    assert events_in(after) == 0
    assert welcome[2]["authrole"] == "guest"
    assert carol[0] == 6
    assert revoked == 2
    assert "ended: the user's role changed (user -> guest)" in proc.output
    assert "zmqwamp-users: 1 user(s) removed or changed, 1 session(s) ended" in proc.output
