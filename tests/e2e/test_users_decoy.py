"""Decoy salts for unknown authids that are the same in every process (issue 13, item 13).

A users file's real users always get their one salt in a wampcra CHALLENGE; an
unknown authid must get a salt that is just as stable, also across bridge
processes (``--workers``, restarts, hosts behind a load balancer), or comparing
two CHALLENGEs tells which authids exist.  The decoys derive from a secret kept
in the users file (``# decoy-secret: ...``), which the CLI writes.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys

from zmqwamp.auth.users import HEADER, UsersFileChecker, make_record, read_users_file

from harness import start_bridge
from memory import sync
from minws import WSClient


def cli(*args, password=None):
    return subprocess.run(
        [sys.executable, "-m", "zmqwamp.users", *args], input=password, capture_output=True, text=True, timeout=60
    )


def add_user(path, authid, password, *extra):
    out = cli("add", str(path), authid, "--iterations", "1000", "--password-stdin", *extra, password=password + "\n")
    assert out.returncode == 0, out.stderr


def old_file(path, users):
    """A users file as the CLI wrote it before decoy secrets (no secret line)."""
    path.write_text(HEADER + "".join(record.line() for record in users.values()))
    os.chmod(path, 0o600)


def test_the_cli_writes_a_decoy_secret(tmp_path):
    """A file the CLI creates carries a decoy secret, which `list` never shows; the file stays 0600."""
    path = tmp_path / "users"
    add_user(path, "alice", "pa55word")
    users_file = read_users_file(path)
    assert users_file.decoy_secret is not None and len(users_file.decoy_secret) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert cli("list", str(path)).stdout == "alice\tuser\n"
    add_user(path, "bob", "hunter22")
    assert read_users_file(path).decoy_secret == users_file.decoy_secret  # kept, not rotated


def test_two_checkers_of_one_file_give_an_unknown_authid_the_same_challenge(tmp_path):
    """Two processes' checkers (here: two instances) reading the same file answer an unknown authid with the
    same salt, iterations and keylen; different unknown authids get different salts, of the real shape."""
    path = tmp_path / "users"
    add_user(path, "alice", "pa55word")
    one, two = UsersFileChecker(path, run=sync), UsersFileChecker(path, run=sync)
    assert one.wampcra_salt(b"mallory") == two.wampcra_salt(b"mallory")
    assert one.wampcra_salt(b"mallory").salt != one.wampcra_salt(b"trudy").salt
    real = one.wampcra_salt(b"alice")
    decoy = one.wampcra_salt(b"mallory")
    assert (len(decoy.salt), decoy.iterations, decoy.keylen) == (len(real.salt), real.iterations, real.keylen)


def test_decoy_parameters_follow_the_real_users(tmp_path):
    """When users have different iterations/keylen, decoys take theirs too (stably), never a value no user has."""
    path = tmp_path / "users"
    add_user(path, "alice", "pa55word")
    add_user(path, "bob", "hunter22", "--iterations", "2000", "--keylen", "48")
    checker = UsersFileChecker(path, run=sync)
    seen = {(s.iterations, s.keylen) for s in (checker.wampcra_salt(f"u{i}".encode()) for i in range(40))}
    assert seen == {(1000, 32), (2000, 48)}
    again = UsersFileChecker(path, run=sync)
    assert again.wampcra_salt(b"u7") == checker.wampcra_salt(b"u7")


def test_the_cli_adds_a_secret_to_an_existing_file_without_changing_its_users(tmp_path):
    """`decoy-secret PATH` adds the secret to an old file once; the users are byte-for-byte the same; 0600."""
    path = tmp_path / "users"
    users = {
        "alice": make_record("alice", "pa55word", role="staff", iterations=1000),
        "bob": make_record("bob", "hunter22", iterations=2000, keylen=48),
    }
    old_file(path, users)
    before = path.read_text()
    out = cli("decoy-secret", str(path))
    assert out.returncode == 0, out.stderr
    assert "added a decoy secret" in out.stdout
    after = read_users_file(path)
    assert after.users == users and after.decoy_secret is not None
    assert [line for line in path.read_text().splitlines() if not line.startswith("#")] == [
        line for line in before.splitlines() if not line.startswith("#")
    ]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    out = cli("decoy-secret", str(path))
    assert "already has a decoy secret" in out.stdout
    assert read_users_file(path).decoy_secret == after.decoy_secret
    assert after.decoy_secret.hex() not in out.stdout + out.stderr


def test_add_and_remove_keep_or_create_the_secret(tmp_path):
    """`add` on an old file creates the secret (the other users unchanged); `remove` keeps it."""
    path = tmp_path / "users"
    alice = make_record("alice", "pa55word", iterations=1000)
    old_file(path, {"alice": alice})
    add_user(path, "bob", "hunter22")
    users_file = read_users_file(path)
    assert users_file.users["alice"] == alice and users_file.decoy_secret is not None
    assert cli("remove", str(path), "bob").returncode == 0
    assert read_users_file(path).decoy_secret == users_file.decoy_secret


def test_two_bridges_give_an_unknown_authid_the_same_salt(tmp_path):
    """End to end: two twistd bridges on one users file (as with --workers or a load balancer) send the same
    wampcra CHALLENGE salt for an authid that does not exist.  Before: a new random salt per process."""
    path = tmp_path / "users"
    add_user(path, "alice", "pa55word")
    bridges = [start_bridge("--auth", f"zmqwamp-users:{path}") for _ in range(2)]
    try:

        async def challenge(url, authid):
            ws = await WSClient.connect(url)
            try:
                ws.send_json([1, "zmqwamp", {"roles": {"caller": {}}, "authmethods": ["wampcra"], "authid": authid}])
                msg = await ws.recv_json(10)
                assert msg[0] == 4, msg
                return {k: msg[2][k] for k in ("salt", "iterations", "keylen")}
            finally:
                ws.abort()

        async def scenario():
            return [[await challenge(url, authid) for _, url in bridges] for authid in ("nobody-here", "alice")]

        (decoy_a, decoy_b), (real_a, real_b) = asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        for proc, _ in bridges:
            proc.stop()
    assert decoy_a == decoy_b
    assert real_a == real_b
    assert decoy_a["salt"] != real_a["salt"] and decoy_a["iterations"] == real_a["iterations"]
    assert all("decoy" not in proc.output for proc, _ in bridges)  # no warning: the file has its secret
