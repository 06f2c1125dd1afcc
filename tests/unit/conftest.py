"""In-memory tests: the bridge's code on Twisted, as it runs in twistd (see tests/conftest.py)."""

import pytest
from conftest import pin_txaio

pin_txaio("twisted")


@pytest.fixture
def users(tmp_path):
    """A users file (zmqwamp.auth.users) with a decoy secret: alice and bob (role user), carol (staff); each one's
    password is pw-<authid>."""
    from zmqwamp.auth.users import make_record, new_decoy_secret, write_users

    path = tmp_path / "users"
    records = {a: make_record(a, f"pw-{a}", role, iterations=1000) for a, role in [("alice", "user"), ("bob", "user"), ("carol", "staff")]}
    write_users(path, records, new_decoy_secret())
    return path
