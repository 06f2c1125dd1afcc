"""The ``python -m zmqwamp.users`` CLI, run as a process: add, list, remove, errors.
The file format and the checker: tests/unit/auth/test_users.py."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

from zmqwamp.auth.cred import derive_key
from zmqwamp.auth.users import read_users


def cli(*args, password=None):
    """Run the CLI as a user would, in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "zmqwamp.users", *args], input=password, capture_output=True, text=True, timeout=60
    )


def test_cli_add_list_remove(tmp_path):
    """add (password on stdin), list (authid and role only), update, remove; the file is 0600 and holds no password."""
    path = tmp_path / "users"
    out = cli("add", str(path), "alice", "--role", "staff", "--iterations", "1000", "--password-stdin", password="pa55word\n")
    assert out.returncode == 0, out.stderr
    assert "added alice (role staff)" in out.stdout
    assert cli("add", str(path), "bob", "--iterations", "1000", "--password-stdin", password="hunter22\n").returncode == 0
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text()
    assert "pa55word" not in text and "hunter22" not in text
    assert cli("list", str(path)).stdout == "alice\tstaff\nbob\tuser\n"
    out = cli("add", str(path), "alice", "--iterations", "1000", "--password-stdin", password="newpass1\n")
    assert "updated alice (role user)" in out.stdout
    out = cli("remove", str(path), "bob")
    assert out.returncode == 0 and "removed bob" in out.stdout
    assert cli("list", str(path)).stdout == "alice\tuser\n"
    record = read_users(path)["alice"]
    assert record.key == derive_key("newpass1", record.salt, 1000, 32)


def test_cli_errors(tmp_path):
    """Errors go to stderr with exit status 1: unknown user, empty password, bad names, no terminal."""
    path = tmp_path / "users"
    assert "no user 'zed'" in cli("remove", str(path), "zed").stderr
    out = cli("add", str(path), "alice", "--password-stdin", password="\n")
    assert out.returncode == 1 and "must not be empty" in out.stderr
    assert "authid 'a b'" in cli("add", str(path), "a b", "--password-stdin", password="x\n").stderr
    out = cli("add", str(path), "alice", password="")  # stdin is not a terminal
    assert out.returncode == 1 and "--password-stdin" in out.stderr
    assert "cannot read" in cli("list", str(tmp_path / "missing")).stderr
    assert not path.exists()
