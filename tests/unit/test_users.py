"""zmqwamp.users: the users-file command line, called in process (as a process: tests/e2e/test_users.py)."""

from __future__ import annotations

import sys

from zmqwamp.users import main


def test_main_in_process(tmp_path, monkeypatch, capsys):
    """main() is callable from Python (used by other tools) with the same behaviour."""
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("secret12\n"))
    assert main(["add", str(tmp_path / "u"), "carol", "--iterations", "1000", "--password-stdin"]) == 0
    assert main(["list", str(tmp_path / "u")]) == 0
    assert capsys.readouterr().out.endswith("carol\tuser\n")
