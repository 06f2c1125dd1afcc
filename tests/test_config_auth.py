"""TOML ``auth`` (checker descriptions, as ``--auth`` takes them) and ``anonymous``: a unit file can log people in."""

from __future__ import annotations

import asyncio
import signal

import pytest
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.python import usage

from zmqwamp.tap import Options
from zmqwamp.users import UsersFileChecker

from harness import start_bridge
from wampclient import SessionClosed, close, connect


def options_for(tmp_path, text: str, *argv: str) -> Options:
    path = tmp_path / "z.toml"
    path.write_text(text)
    options = Options()
    options.parseOptions(["--config", str(path), *argv])
    return options


def test_file_auth_makes_the_same_checkers_as_the_command_line(tmp_path):
    """auth = [...] uses the same strcred factories (plugins included); --auth adds after the file's."""
    users = tmp_path / "users"
    users.write_text("")
    options = options_for(
        tmp_path, f'auth = ["memory:alice:pw", "zmqwamp-users:{users}"]\nanonymous = false\n', "--auth", "memory:bob:pw2"
    )
    checkers = options["credCheckers"]
    assert [type(c) for c in checkers] == [
        InMemoryUsernamePasswordDatabaseDontUse, UsersFileChecker, InMemoryUsernamePasswordDatabaseDontUse,
    ]
    assert checkers[0].users == {"alice": "pw"} and checkers[2].users == {"bob": "pw2"}
    assert options.config.anonymous is False and options.config.auth[0] == "memory:alice:pw"


def test_a_single_string_is_a_list_of_one(tmp_path):
    assert len(options_for(tmp_path, 'auth = "memory:alice:pw"\n')["credCheckers"]) == 1


@pytest.mark.parametrize(
    "entry, message",
    [
        ('"nosuch:alice:topsecret"', "auth[0] (nosuch): Auth plugin not recognized: nosuch"),
        ("1", "auth: expected a string or a list of strings"),
    ],
)
def test_bad_auth_entries_name_the_file_and_never_the_secret(tmp_path, entry, message):
    with pytest.raises(usage.UsageError) as e:
        options_for(tmp_path, f"auth = [{entry}]\n")
    assert message in str(e.value) and "z.toml" in str(e.value)
    assert "topsecret" not in str(e.value)


def test_bridge_logs_in_with_checkers_from_the_file(services, tmp_path):
    """A bridge whose only credentials come from its TOML file: ticket login works, anonymous is refused;
    a SIGHUP that changes auth keeps the running checkers and says so."""
    config = tmp_path / "z.toml"
    config.write_text(f'auth = ["memory:alice:alice-pw"]\nanonymous = false\nallow = ["{services["rep"]}"]\n')
    proc, url = start_bridge("--config", str(config))
    try:

        async def scenario():
            s = await connect(url, authmethods=["ticket"], authid="alice", on_challenge=lambda c: "alice-pw")
            assert await s.call(services["rep"], "hi") == "got this hi"
            with pytest.raises(SessionClosed) as e:
                await connect(url)
            assert e.value.reason == "wamp.error.not_authorized"
            config.write_text(f'auth = ["memory:alice:other"]\nanonymous = false\nallow = ["{services["rep"]}"]\n')
            mark = len(proc.lines)
            proc.proc.send_signal(signal.SIGHUP)
            await asyncio.get_running_loop().run_in_executor(None, lambda: proc.wait_for("configuration reloaded", start=mark))
            assert any("checkers change only at a restart" in line for line in proc.lines[mark:])
            again = await connect(url, authmethods=["ticket"], authid="alice", on_challenge=lambda c: "alice-pw")
            await close(again)
            await close(s)

        asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        proc.stop()
    assert "alice-pw" not in proc.output
