"""TOML ``auth`` (checker descriptions, as ``--auth`` takes them) and ``anonymous``: parsed into the same checkers
as the command line. A real bridge logging in with them: tests/e2e/test_config_auth.py."""

from __future__ import annotations

import pytest
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.python import usage

from zmqwamp.auth.users import UsersFileChecker
from zmqwamp.service.tap import Options


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
