"""The users file for a service: ``--group`` gives it to the service's group (0640), later edits keep that."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's group to another one needs root")


def users_cli(*args: str, password: str = "pw-1") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "zmqwamp.users", *args], input=password + "\n", capture_output=True, text=True, timeout=60
    )


def test_new_file_is_owner_only(tmp_path):
    path = tmp_path / "users"
    assert users_cli("add", str(path), "alice", "--password-stdin").returncode == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@root_only
def test_group_makes_it_readable_by_the_service_and_edits_keep_it():
    """add --group nogroup: 0640 root:nogroup, readable by an unprivileged member; a later add/remove keeps it;
    a mode with bits for others loses them."""
    home = Path(tempfile.mkdtemp(prefix="zmqwamp-users-"))  # reachable by the unprivileged reader
    os.chmod(home, 0o755)
    try:
        _group_case(home / "users")
    finally:
        shutil.rmtree(home)


def _group_case(path: Path) -> None:
    out = users_cli("add", str(path), "alice", "--password-stdin", "--group", "nogroup")
    assert out.returncode == 0, out.stderr
    st = path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_gid == 65534 and st.st_uid == 0
    os.chmod(path, 0o644)  # someone widened it by hand
    assert users_cli("add", str(path), "bob", "--password-stdin").returncode == 0
    assert users_cli("remove", str(path), "alice").returncode == 0
    st = path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_gid == 65534
    setpriv = shutil.which("setpriv")
    if setpriv:
        read = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "cat", str(path)],
                              capture_output=True, text=True, timeout=30)
        assert read.returncode == 0 and "bob user pbkdf2-sha256" in read.stdout


def test_unknown_group_is_one_line(tmp_path):
    out = users_cli("add", str(tmp_path / "users"), "alice", "--password-stdin", "--group", "no-such-group-xyz")
    assert out.returncode == 1 and out.stderr.strip() == "error: no group 'no-such-group-xyz'"
    assert not (tmp_path / "users").exists()
