"""The zmqwamp users file: its format, its checker's reloads, ``main`` in process.
The ``python -m zmqwamp.users`` CLI as a process: tests/e2e/test_users.py."""

from __future__ import annotations

import os
import sys

import pytest
from twisted.cred import strcred
from twisted.cred.error import UnauthorizedLogin

from zmqwamp.auth.cred import TicketCredentials
from zmqwamp.auth.users import UsersFileChecker, UsersFileError, make_record, parse_users, write_users
from zmqwamp.testing import fired
from zmqwamp.users import main

from memory import sync


def test_main_in_process(tmp_path, monkeypatch, capsys):
    """main() is callable from Python (used by other tools) with the same behaviour."""
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("secret12\n"))
    assert main(["add", str(tmp_path / "u"), "carol", "--iterations", "1000", "--password-stdin"]) == 0
    assert main(["list", str(tmp_path / "u")]) == 0
    assert capsys.readouterr().out.endswith("carol\tuser\n")


@pytest.mark.parametrize(
    "line, message",
    [
        ("alice user", "expected 'authid role pbkdf2-sha256"),
        ("alice user md5 1 32 s k", "expected 'authid role pbkdf2-sha256"),
        ("alice user pbkdf2-sha256 many 32 s aGk=", "must be integers"),
        ("alice user pbkdf2-sha256 1000 32 s !!!", "not base64"),
    ],
)
def test_file_errors_name_the_line(line, message):
    """A malformed line is reported with file and line number."""
    with pytest.raises(UsersFileError) as e:
        parse_users("# comment\n\n" + line + "\n", "users")
    assert str(e.value).startswith("users:3: ") and message in str(e.value)


def test_duplicate_authid_is_an_error():
    record = make_record("alice", "pw", iterations=1000)
    with pytest.raises(UsersFileError, match="appears twice"):
        parse_users(record.line() * 2)


def test_checker_reloads_when_the_file_changes(tmp_path):
    """A user added after startup can log in; a broken edit keeps the last good content."""
    path = tmp_path / "users"
    write_users(path, {"alice": make_record("alice", "pw-alice", iterations=1000)})
    checker = UsersFileChecker(path, run=sync)
    with pytest.raises(UnauthorizedLogin):
        fired(checker.requestAvatarId(TicketCredentials("bob", "pw-bob")))
    write_users(path, {"alice": make_record("alice", "pw-alice", iterations=1000), "bob": make_record("bob", "pw-bob", iterations=1000)})
    os.utime(path, ns=(1, 10**18))  # make sure the mtime differs even on coarse clocks
    assert fired(checker.requestAvatarId(TicketCredentials("bob", "pw-bob"))).authid == "bob"
    path.write_text("garbage\n")
    os.utime(path, ns=(1, 2 * 10**18))
    assert fired(checker.requestAvatarId(TicketCredentials("bob", "pw-bob"))).authid == "bob"


def test_checker_refuses_to_start_without_a_usable_file(tmp_path):
    """--auth zmqwamp-users with a missing or broken file is a startup error, not an empty user list."""
    with pytest.raises(UsersFileError, match="cannot read"):
        UsersFileChecker(tmp_path / "missing")
    (tmp_path / "bad").write_text("x\n")
    with pytest.raises(UsersFileError, match="bad:1"):
        UsersFileChecker(tmp_path / "bad")


def test_plugin_is_found_by_strcred(tmp_path):
    """strcred finds the zmqwamp-users plugin (twisted/plugins/zmqwamp_checkers.py)."""
    path = tmp_path / "users"
    write_users(path, {})
    checker = strcred.makeChecker(f"zmqwamp-users:{path}")
    assert isinstance(checker, UsersFileChecker)
    with pytest.raises(strcred.InvalidAuthType):
        strcred.makeChecker("zmqwamp-user:x")
