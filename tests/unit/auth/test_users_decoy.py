"""Decoy salts for unknown authids (issue 13, item 13): a broken secret line, a file without one.

The CLI, two checkers and two bridges of one file: tests/e2e/test_users_decoy.py.
"""

from __future__ import annotations

import os

import pytest
from twisted.logger import formatEvent

from zmqwamp.auth.cred import TicketCredentials
from zmqwamp.auth.users import HEADER, UsersFileChecker, make_record, read_users
from zmqwamp.testing import fired

from memory import sync


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
    path = tmp_path / "users"
    path.write_text(line + "\n")
    with pytest.raises(ValueError, match=message):
        read_users(path)
