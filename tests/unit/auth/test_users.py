"""zmqwamp.auth.users: the users file (its format, its decoy secret for unknown authids: issue 13, item 13) and its
checker (reloads, refusals, the strcred plugin).  The command line: tests/unit/test_users.py and, as a process,
tests/e2e/test_users.py; two checkers and two bridges of one file: tests/e2e/test_users_decoy.py; what an edit does
to open sessions: tests/unit/service/test_bridge.py."""

from __future__ import annotations

import os

import pytest
from twisted.cred import strcred
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.logger import formatEvent
from twisted.python.failure import Failure

from zmqwamp.auth.cred import TicketCredentials
from zmqwamp.auth.users import (
    HEADER,
    UsersFileChecker,
    UsersFileError,
    make_record,
    parse_users,
    read_users,
    write_users,
)
from zmqwamp.testing import fired, pending

from memory import edit_users, sync


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
    """An authid on two lines is an error."""
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


def test_a_login_checked_while_the_file_changed_does_not_open(users):
    """alice's key was being derived from her old record when the file changed (and the change was announced,
    ending her other sessions): that login is refused, not opened with the old role after the fact."""
    running_derivations = []

    def run(f, *args):
        d = Deferred()
        running_derivations.append((d, f, args))
        return d

    checker = UsersFileChecker(users, run=run)
    result = pending(checker.requestAvatarId(TicketCredentials("alice", "pw-alice")))
    edit_users(users, lambda u: u.update(alice=make_record("alice", "pw-alice", "admin", iterations=1000)))
    checker.refresh()
    d, f, args = running_derivations[0]
    d.callback(f(*args))  # the right ticket for the old record
    assert isinstance(result[0], Failure) and result[0].check(UnauthorizedLogin)
    again = pending(checker.requestAvatarId(TicketCredentials("alice", "pw-alice")))
    d, f, args = running_derivations[1]
    d.callback(f(*args))
    assert again[0].authrole == "admin"


def old_file(path, users):
    """A users file as the CLI wrote it before decoy secrets (no secret line)."""
    path.write_text(HEADER + "".join(record.line() for record in users.values()))
    os.chmod(path, 0o600)


def test_a_file_without_a_secret_is_warned_about_once_and_keeps_working(tmp_path, log_events):
    """An old file (no secret): one warning at load saying how to add one; decoys are per process as before;
    logins still work."""
    path = tmp_path / "users"
    old_file(path, {"alice": make_record("alice", "pa55word", iterations=1000)})
    one, two = UsersFileChecker(path, run=sync), UsersFileChecker(path, run=sync)
    assert one.wampcra_salt(b"mallory") != two.wampcra_salt(b"mallory")
    assert fired(one.requestAvatarId(TicketCredentials("alice", "pa55word"))).authid == "alice"
    os.utime(path, ns=(0, 1))  # a changed mtime: re-read, and no second warning
    one.wampcra_salt(b"mallory")
    warnings = [formatEvent(e) for e in log_events if "decoy" in formatEvent(e)]
    assert len(warnings) == 2, warnings  # one per checker
    assert f"python -m zmqwamp.users decoy-secret {path}" in warnings[0]


@pytest.mark.parametrize(
    "line, message",
    [
        ("# decoy-secret: not*base64", "decoy secret"),
        ("# decoy-secret: c2hvcnQ=", "at least 16 bytes"),
    ],
)
def test_a_broken_secret_line_is_an_error(tmp_path, line, message):
    """A decoy-secret line that is not base64, or too short, is an error naming it."""
    path = tmp_path / "users"
    path.write_text(line + "\n")
    with pytest.raises(ValueError, match=message):
        read_users(path)
