"""End to end: autobahn-python clients log in to a real ``twistd -n zmqwamp`` with ``--auth``.

Ticket and WAMP-CRA (plain and salted), anonymous on and off, JWT, a third-party
checker plugin dropped into a temporary plugin directory, per-user endpoint
rules, the Origin allowlist, the growing delay, and no secret in the bridge log.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import jwt
import pytest
from autobahn.wamp import auth as client_auth
from autobahn.wamp.exception import ApplicationError

from harness import BIN, ROOT, Process, start_bridge, start_pub, start_rep
from waiting import eventually, timing_bound
from wampclient import SessionClosed, close, connect

JWT_SECRET = "e2e-jwt-secret-that-is-long-enough-0123456789"
USERS = {"alice": "alice-pw-1", "bob": "bob-pw-2"}
CAROL = "carol-plain-3"  # a memory: user (plain secret)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def answer(secret: str, sent: list | None = None):
    """An autobahn on_challenge for ticket and wampcra (salted when the CHALLENGE says so), like the stock clients."""

    def on_challenge(challenge):
        if challenge.method == "ticket":
            signature = secret
        else:
            key = secret
            if "salt" in challenge.extra:
                extra = challenge.extra
                key = client_auth.derive_key(secret, extra["salt"], extra["iterations"], extra["keylen"])
            signature = client_auth.compute_wcs(key, challenge.extra["challenge"]).decode("ascii")
        if sent is not None:
            sent.append(signature)
        return signature

    return on_challenge


async def join(url, method, authid, secret, sent=None, **kw):
    return await connect(url, authmethods=[method], authid=authid, on_challenge=answer(secret, sent), **kw)


async def refused(url, method, authid, secret, sent=None) -> tuple[SessionClosed, float]:
    started = time.monotonic()
    with pytest.raises(SessionClosed) as e:
        await join(url, method, authid, secret, sent)
    return e.value, time.monotonic() - started


def make_token(**claims):
    body = {"sub": "dave", "aud": "zmqwamp-e2e", "exp": int(time.time()) + 60, "role": "reader", **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, JWT_SECRET, algorithm="HS256")


def assert_no_secret(proc: Process, secrets) -> None:
    log = proc.output
    for secret in secrets:
        assert secret not in log, f"a secret appears in the bridge log: {secret[:4]}..."


@pytest.fixture(scope="module")
def services():
    rep, rep_addr = start_rep()
    pub, pub_addr = start_pub(interval=0.05, topics="alice.,bob.")
    yield {"rep": rep_addr, "pub": pub_addr}
    rep.stop()
    pub.stop()


@pytest.fixture(scope="module")
def files(services, tmp_path_factory):
    """A users file written with the CLI, a JWT secret file, and a config with per-user rules."""
    d = tmp_path_factory.mktemp("auth")
    for authid, password in USERS.items():
        subprocess.run(
            [sys.executable, "-m", "zmqwamp.users", "add", str(d / "users"), authid, "--password-stdin"],
            input=password + "\n", text=True, check=True, capture_output=True, timeout=60,
        )
    (d / "jwt.key").write_text(JWT_SECRET)
    (d / "zmqwamp.toml").write_text(
        f"""
login_penalty_max = 0.0  # these tests fail logins on purpose, all from 127.0.0.1
origins = ["https://app.example"]

[[rules]]
authid = "alice"
endpoints = ["{services['rep']}"]
actions = ["call"]

[[rules]]
authid = ["alice", "bob"]
endpoints = ["{services['pub']}"]
actions = ["subscribe"]
filters = ["{{authid}}.*"]

[[rules]]
role = "reader"
endpoints = ["tcp://127.0.0.1:*"]
"""
    )
    return d


@pytest.fixture(scope="module")
def bridge(services, files):
    """Users file, then JWT; rules from the config; no anonymous access."""
    secrets: list[str] = [JWT_SECRET, *USERS.values()]
    proc, url = start_bridge(
        "--config", str(files / "zmqwamp.toml"),
        "--allow", services["rep"], "--allow", services["pub"],
        "--auth", f"zmqwamp-users:{files / 'users'}",
        "--auth", f"jwt:secret_file={files / 'jwt.key'},audience=zmqwamp-e2e",
    )
    yield {"url": url, "proc": proc, "secrets": secrets, **services}
    proc.stop()
    assert_no_secret(proc, secrets)


@pytest.fixture(scope="module")
def open_bridge(services):
    """memory: checker (plain secrets) plus --anonymous; no rules."""
    proc, url = start_bridge("--anonymous", "--allow", services["rep"], "--auth", f"memory:carol:{CAROL}")
    yield {"url": url, "proc": proc, **services}
    proc.stop()
    assert_no_secret(proc, [CAROL])


# -- ticket and wampcra ----------------------------------------------------------------


def test_ticket_accepted_and_welcome_details(bridge):
    """ticket against the users file: WELCOME carries authid, authrole, authmethod, authprovider; calls work."""

    async def scenario():
        s = await join(bridge["url"], "ticket", "alice", USERS["alice"])
        assert (s.authid, s.authrole, s.authmethod, s.authprovider) == ("alice", "user", "ticket", "zmqwamp-users")
        assert await s.call(bridge["rep"], "hi") == "got this hi"
        await close(s)

    run(scenario())


def test_ticket_refused_alike_for_unknown_user_and_wrong_password(bridge):
    """Wrong password and unknown authid: the same ABORT, no detail, about the same time (the floor delay)."""

    async def scenario():
        wrong, t_wrong = await refused(bridge["url"], "ticket", "alice", "not-her-password")
        unknown, t_unknown = await refused(bridge["url"], "ticket", "nobody", "not-her-password")
        for e in (wrong, unknown):
            assert (e.reason, e.message) == ("wamp.error.not_authorized", "authentication failed")
        assert 0.45 < t_wrong < 1.5 and 0.45 < t_unknown < 1.5
        assert abs(t_wrong - t_unknown) < 0.25

    run(scenario())


def test_wampcra_salted(bridge):
    """wampcra against the users file: salted CHALLENGE, autobahn derives the key; a wrong secret is refused."""

    async def scenario():
        s = await join(bridge["url"], "wampcra", "bob", USERS["bob"], sent=bridge["secrets"])
        assert (s.authid, s.authmethod, s.authprovider) == ("bob", "wampcra", "zmqwamp-users")
        await close(s)
        e, _ = await refused(bridge["url"], "wampcra", "bob", USERS["alice"], sent=bridge["secrets"])
        assert e.reason == "wamp.error.not_authorized"
        e, _ = await refused(bridge["url"], "wampcra", "nobody", USERS["bob"], sent=bridge["secrets"])
        assert e.reason == "wamp.error.not_authorized"

    run(scenario())


def test_wampcra_plain_and_ticket_with_memory_checker(open_bridge):
    """--auth memory: serves plain wampcra and ticket (str/bytes normalised); wrong secrets are refused."""

    async def scenario():
        for method in ("wampcra", "ticket"):
            s = await join(open_bridge["url"], method, "carol", CAROL)
            assert (s.authid, s.authmethod, s.authprovider) == ("carol", method, "memory")
            assert await s.call(open_bridge["rep"], "x") == "got this x"
            await close(s)
            e, _ = await refused(open_bridge["url"], method, "carol", "guess")
            assert e.reason == "wamp.error.not_authorized"

    run(scenario())


# -- anonymous -----------------------------------------------------------------------


def test_anonymous_off_by_default(bridge):
    """Without --anonymous, a client offering no credentials (or only 'anonymous') is refused."""

    async def scenario():
        for methods in (None, ["anonymous"]):
            with pytest.raises(SessionClosed) as e:
                await connect(bridge["url"], authmethods=methods)
            assert e.value.reason == "wamp.error.not_authorized"

    run(scenario())


def test_anonymous_on(open_bridge):
    """With --anonymous, a client without credentials joins as anonymous."""

    async def scenario():
        s = await connect(open_bridge["url"])
        assert (s.authid, s.authrole, s.authmethod) == ("anonymous", "anonymous", "anonymous")
        await close(s)

    run(scenario())


# -- JWT -------------------------------------------------------------------------------


def test_jwt_valid(bridge):
    """A JWT as the ticket: authid and role from its claims, provider jwt; the role's rule applies."""

    async def scenario():
        token = make_token()
        bridge["secrets"].append(token)
        s = await connect(bridge["url"], authmethods=["ticket"], on_challenge=answer(token))
        assert (s.authid, s.authrole, s.authmethod, s.authprovider) == ("dave", "reader", "ticket", "jwt")
        assert await s.call(bridge["rep"], "jwt") == "got this jwt"
        await close(s)

    run(scenario())


def test_jwt_endpoints_claim_narrows(bridge):
    """A zmq_endpoints claim limits the session to those endpoints, even where its role's rule allows more."""

    async def scenario():
        token = make_token(zmq_endpoints=[bridge["pub"]])
        bridge["secrets"].append(token)
        s = await connect(bridge["url"], authmethods=["ticket"], on_challenge=answer(token))
        with pytest.raises(ApplicationError) as e:
            await s.call(bridge["rep"], "no")
        assert e.value.error == "wamp.error.not_authorized"
        await close(s)

    run(scenario())


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(lambda: make_token(exp=int(time.time()) - 10), id="expired"),
        pytest.param(lambda: jwt.encode({"sub": "dave", "aud": "zmqwamp-e2e", "exp": int(time.time()) + 60}, "x" * 48, algorithm="HS256"), id="wrong signature"),
        pytest.param(lambda: make_token(aud="another-app"), id="wrong audience"),
    ],
)
def test_jwt_refused(bridge, token):
    """Expired, wrongly signed or foreign-audience tokens get ABORT not_authorized."""

    async def scenario():
        ticket = token()
        bridge["secrets"].append(ticket)
        with pytest.raises(SessionClosed) as e:
            await connect(bridge["url"], authmethods=["ticket"], on_challenge=answer(ticket))
        assert (e.value.reason, e.value.message) == ("wamp.error.not_authorized", "authentication failed")

    run(scenario())


# -- per-user rules ------------------------------------------------------------------------


def test_alice_may_call_bob_may_not(bridge):
    """[[rules]] authid = alice allows her the REP; bob has no call rule: ERROR not_authorized."""

    async def scenario():
        alice = await join(bridge["url"], "ticket", "alice", USERS["alice"])
        bob = await join(bridge["url"], "ticket", "bob", USERS["bob"])
        assert await alice.call(bridge["rep"], "a") == "got this a"
        with pytest.raises(ApplicationError) as e:
            await bob.call(bridge["rep"], "b")
        assert e.value.error == "wamp.error.not_authorized"
        await close(alice)
        await close(bob)

    run(scenario())


def test_filters_must_start_with_own_authid(bridge):
    """filters = ["{authid}.*"]: alice gets 'alice.' messages, may not subscribe to bob's or to everything."""

    async def scenario():
        alice = await join(bridge["url"], "ticket", "alice", USERS["alice"])
        got = []
        await alice.subscribe(lambda m: got.append(m), bridge["pub"] + "?filter=alice.")
        for forbidden in ("?filter=bob.", ""):
            with pytest.raises(ApplicationError) as e:
                await alice.subscribe(lambda m: None, bridge["pub"] + forbidden)
            assert e.value.error == "wamp.error.not_authorized"
        await eventually(lambda: len(got) >= 3, what="3 events for alice")
        await close(alice)
        assert all(m.startswith("alice. ") for m in got)

    run(scenario())


# -- a third-party checker plugin --------------------------------------------------------------

PLUGIN = '''
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.strcred import ICheckerFactory
from twisted.internet.defer import fail, succeed
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(ICredentialsChecker)
class PinChecker:
    """Accepts the ticket PIN-authid."""

    credentialInterfaces = (IUsernamePassword,)
    authprovider = "pin"

    def __init__(self, pin):
        self.pin = pin.encode()

    def requestAvatarId(self, credentials):
        if credentials.password == self.pin + b"-" + credentials.username:
            return succeed(credentials.username)
        return fail(UnauthorizedLogin())


@implementer(IPlugin, ICheckerFactory)
class PinCheckerFactory:
    authType = "pin"
    authHelp = "Ticket is PIN-authid."
    argStringFormat = "PIN"
    credentialInterfaces = (IUsernamePassword,)

    def generateChecker(self, argstring):
        return PinChecker(argstring)


pin = PinCheckerFactory()
'''


def test_third_party_checker_plugin(services, tmp_path):
    """An ICheckerFactory in <dir>/twisted/plugins/ on PYTHONPATH is listed by --help-auth and used by --auth."""
    plugins = tmp_path / "twisted" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "pin_checker.py").write_text(PLUGIN)
    env = {"PYTHONPATH": str(tmp_path)}
    twistd = [str(BIN / "twistd"), "-n", "--pidfile=", "zmqwamp"]
    listed = subprocess.run(
        [*twistd, "--help-auth"], env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert any(line.split()[:1] == ["pin"] for line in listed.stdout.splitlines()), listed.stdout
    proc = Process(
        [*twistd, "--listen", "tcp:0:interface=127.0.0.1", "--allow", services["rep"], "--auth", "pin:4321"],
        env=env, cwd=str(ROOT),
    )
    try:
        port = proc.wait_for(r"\bSite\b.*starting on (\d+)").group(1)
        url = f"ws://127.0.0.1:{port}/ws"

        async def scenario():
            s = await join(url, "ticket", "erin", "4321-erin")
            assert (s.authid, s.authprovider) == ("erin", "pin")
            assert await s.call(services["rep"], "pin") == "got this pin"
            await close(s)
            e, _ = await refused(url, "ticket", "erin", "1234-erin")
            assert e.reason == "wamp.error.not_authorized"

        run(scenario())
    finally:
        proc.stop()
    assert_no_secret(proc, ["4321"])


# -- Origin ---------------------------------------------------------------------------------


def upgrade_status(url: str, origin: str | None, host: str | None = None) -> int:
    """The HTTP status of a WebSocket upgrade request with this Origin."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    lines = [
        "GET /ws HTTP/1.1",
        f"Host: {host or f'127.0.0.1:{port}'}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Protocol: wamp.2.json",
    ]
    if origin:
        lines.append(f"Origin: {origin}")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status = sock.recv(4096).split(b"\r\n", 1)[0]
    return int(status.split()[1])


def test_origin_allowlist(bridge):
    """A foreign Origin is refused with HTTP 403 before the upgrade; listed, same-origin and no-Origin pass."""
    port = bridge["url"].rsplit(":", 1)[1].split("/")[0]
    assert upgrade_status(bridge["url"], "https://evil.example") == 403
    assert upgrade_status(bridge["url"], "null") == 400  # autobahn refuses the null origin before the hook
    assert upgrade_status(bridge["url"], "https://app.example") == 101
    assert upgrade_status(bridge["url"], f"http://127.0.0.1:{port}") == 101
    assert upgrade_status(bridge["url"], None) == 101


# -- throttling and the log ------------------------------------------------------------------


def test_repeated_failures_grow_the_delay(services):
    """From the 4th failure from one address on, each refusal takes longer (1 s, then 2 s, ... extra)."""
    proc, url = start_bridge("--allow", services["rep"], "--auth", "memory:carol:right-one")
    try:

        async def scenario():
            times = []
            for _ in range(5):
                _, took = await refused(url, "ticket", "carol", "wrong-one")
                times.append(took)
            return times

        times = run(scenario())
    finally:
        proc.stop()
    # at least the delays (the throttle's job); at most a little more (speed: make soak)
    assert all(t > 0.45 for t in times[:3]) and times[3] > 1.4 and times[4] > 2.4, times
    timing_bound(all(t < 1.2 for t in times[:3]) and times[3] < 2.5 and times[4] < 3.5, f"refusals took {times} (bounds 1.2, 2.5, 3.5 s)")
    assert "delayed 1.0s after repeated failures" in proc.output


def _json_text(value) -> str:
    """Every key and value of a decoded JSON record, as plain text."""
    if isinstance(value, dict):
        return " ".join(f"{k} {_json_text(v)}" for k, v in value.items())
    if isinstance(value, list):
        return " ".join(_json_text(v) for v in value)
    return str(value)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_secret_in_bridge_log(services, files, log_format):
    """Accepted and refused logins of every method leave authids in the log, never a password, ticket or signature
    (in the JSON log neither, whose records carry every field of an event, not only those its message shows)."""
    sent: list[str] = []
    proc, url = start_bridge(
        "--log-format", log_format,
        "--allow", services["rep"],
        "--auth", f"zmqwamp-users:{files / 'users'}",
        "--auth", f"jwt:secret_file={files / 'jwt.key'},audience=zmqwamp-e2e",
    )
    try:

        async def scenario():
            for method in ("ticket", "wampcra"):
                s = await join(url, method, "alice", USERS["alice"], sent=sent)
                await close(s)
                for authid, secret in [("alice", "Guess-Pa55word"), ("no-such-user", USERS["bob"])]:
                    await refused(url, method, authid, secret, sent=sent)
            for token in (make_token(), make_token(exp=int(time.time()) - 10)):
                sent.append(token)
                try:
                    s = await connect(url, authmethods=["ticket"], on_challenge=answer(token))
                    await close(s)
                except SessionClosed:
                    pass

        run(scenario())
    finally:
        proc.stop()
    log = proc.output
    if log_format == "json":  # every line is a JSON object: check the raw lines and every decoded value
        assert_no_secret(proc, [*USERS.values(), "Guess-Pa55word", JWT_SECRET, *sent])
        log = "\n".join(_json_text(json.loads(line)) for line in proc.lines)
    assert "login refused: method=ticket authid='alice'" in log
    assert "login refused: method=wampcra authid='no-such-user'" in log
    assert "jwt refused: ExpiredSignatureError" in log
    for secret in [*USERS.values(), "Guess-Pa55word", JWT_SECRET, *sent]:
        assert secret not in log, f"a secret appears in the bridge log: {secret[:4]}..."


# -- the Bridge subclass example ---------------------------------------------------------------


def test_custom_bridge_example(services, tmp_path):
    """examples/custom_bridge.py runs from Python and, as --bridge-class, from twistd with --auth; its rules apply."""
    example = ROOT / "examples" / "custom_bridge.py"
    python = Process(
        [sys.executable, str(example), "--listen", "tcp:0:interface=127.0.0.1", "--rep", services["rep"], "--pub", services["pub"]]
    )
    twistd = Process(
        [str(BIN / "twistd"), "-n", "--pidfile=", "zmqwamp", "--listen", "tcp:0:interface=127.0.0.1",
         "--bridge-class", "custom_bridge.MyBridge", "--auth", "memory:bob:bob-secret",
         "--allow", services["rep"], "--allow", services["pub"]],
        env={"PYTHONPATH": str(ROOT / "examples")}, cwd=str(tmp_path),
    )
    try:
        for proc in (python, twistd):
            port = proc.wait_for(r"\bSite\b.*starting on (\d+)").group(1)
            url = f"ws://127.0.0.1:{port}/ws"

            async def scenario():
                bob = await join(url, "wampcra", "bob", "bob-secret")  # noqa: B023
                assert await bob.call(services["rep"], "b") == "got this b"
                with pytest.raises(ApplicationError) as e:
                    await bob.subscribe(lambda m: None, services["pub"])
                assert e.value.error == "wamp.error.not_authorized"
                await bob.subscribe(lambda m: None, services["pub"] + "?filter=bob.")
                await close(bob)

            run(scenario())
        assert upgrade_status(url, "https://elsewhere.example") == 403
    finally:
        python.stop()
        twistd.stop()


# -- issue 21, item 7: {authid} filters where one authid is another's prefix plus the delimiter -----------------


def test_a_filter_rule_keeps_john_and_john_smith_apart(tmp_path):
    """Users john and john.smith, the rule filters = ["{authid}.*"]: the bridge warns at start that the rule
    never serves john.smith, denies his subscriptions under it (logged why), and john keeps his own; a rule
    written '{authid}*' is refused at start.

    Before: john.smith subscribed under the rule, and john could take 'john.smith.inbox' (and 'john.' got
    john.smith's messages too)."""
    users = tmp_path / "users"
    for authid in ("john", "john.smith"):
        subprocess.run(
            [sys.executable, "-m", "zmqwamp.users", "add", str(users), authid, "--iterations", "1000", "--password-stdin"],
            input=f"pw-{authid}\n", text=True, check=True, capture_output=True, timeout=60,
        )
    pub_proc, pub = start_pub(interval=0.05, topics="john.,john.smith.")
    config = tmp_path / "z.toml"
    rule = f'[[rules]]\nendpoints = ["{pub}"]\nactions = ["subscribe"]\nfilters = ["{{authid}}.*"]\n'
    config.write_text(rule)
    proc, url = start_bridge("--config", str(config), "--allow", pub, "--auth", f"zmqwamp-users:{users}")
    try:

        async def scenario():
            john = await join(url, "ticket", "john", "pw-john")
            smith = await join(url, "ticket", "john.smith", "pw-john.smith")
            got = []
            await john.subscribe(lambda m: got.append(m), pub + "?filter=john.inbox")
            with pytest.raises(ApplicationError) as e:
                await smith.subscribe(lambda m: None, pub + "?filter=john.smith.")
            await close(john)
            await close(smith)
            return e.value

        denied = run(scenario())
    finally:
        proc.stop()
        pub_proc.stop()
    assert denied.error == "wamp.error.not_authorized"
    assert "rules[0].filters '{authid}.*' never applies to authid 'john.smith'" in proc.output
    assert "rule filter '{authid}.*' does not apply to authid 'john.smith': it contains '.'" in proc.output

    config.write_text(rule.replace("{authid}.*", "{authid}*"))
    refused = subprocess.run(
        [str(BIN / "twistd"), "-n", "--pidfile=", "zmqwamp", "--listen", "tcp:0:interface=127.0.0.1",
         "--config", str(config)],
        capture_output=True, text=True, timeout=60, cwd=str(tmp_path),
    )
    assert refused.returncode != 0
    assert "rules[0].filters: {authid} in '{authid}*' must be followed by a delimiter character" in (
        refused.stdout + refused.stderr
    )
