"""zmqwamp.internals: the one check before relying on what another library does not publish.  Each use's fallback is
tested with its module (tests/unit/transport/test_writer.py, test_frames.py, ...); here the check itself."""

from __future__ import annotations

import pytest

from zmqwamp import internals


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    """No warning said yet in this process."""
    monkeypatch.setattr(internals, "_warned", set())


class Thing:
    present = 1


def warnings(log_events) -> list[tuple[str, str, str]]:
    return [(e["what"], e["missing"], e["fallback"]) for e in log_events if "fallback" in e]


def test_lacks_is_false_when_every_name_is_there_and_says_nothing(log_events):
    """An object with every attribute asked for: not lacking, no warning."""
    assert internals.lacks(Thing(), ["present"], "this Thing", "slower") is False
    assert warnings(log_events) == []


def test_lacks_names_what_is_missing_once_per_what(log_events):
    """A missing attribute: lacking, and one warning per ``what`` naming every missing one and the fallback, however
    often it is asked (once per connection, not per message: the log is not flooded)."""
    for _ in range(3):
        assert internals.lacks(Thing(), ["present", "_gone", "_also"], "this Thing", "frames go the slow way") is True
    assert internals.lacks(object(), ["present"], "another thing", "nothing") is True
    assert warnings(log_events) == [
        ("this Thing", "_gone, _also", "frames go the slow way"),
        ("another thing", "present", "nothing"),
    ]


def test_private_name_finds_a_dotted_name_of_a_module(log_events):
    """``module``'s name, attribute by attribute (``"Socket.recv"``), when the release has it; no warning."""
    import zmq.backend

    assert internals.private_name("zmq.backend", "Socket.recv", "public recv") is zmq.backend.Socket.recv
    assert warnings(log_events) == []


@pytest.mark.parametrize("module, name", [("zmq.backend", "Socket._renamed"), ("zmqwamp.no_such_module", "x")])
def test_private_name_is_none_without_it_and_says_so_once_per_name(log_events, module, name):
    """A renamed attribute or a missing module: None, and one warning per (module, name) with the fallback."""
    assert internals.private_name(module, name, "the public way") is None
    assert internals.private_name(module, name, "the public way") is None
    assert warnings(log_events) == [(module, name, "the public way")]


def test_say_missing_keys_its_warning_by_key_when_given(log_events):
    """Two names missing from one ``what`` are two warnings when each has its own key, one when they share it."""
    internals.say_missing("zmq.backend", "a", "x", key="zmq.backend.a")
    internals.say_missing("zmq.backend", "b", "y", key="zmq.backend.b")
    internals.say_missing("zmq.backend", "c", "z")
    internals.say_missing("zmq.backend", "d", "w")
    assert [m for _, m, _ in warnings(log_events)] == ["a", "b", "c"]
