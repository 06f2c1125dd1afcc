"""The in-memory doubles of tests/memory.py are what they stand in for (mypy checks the same in ``make lint``)."""

from __future__ import annotations

import inspect

from zmqwamp.wamp.session import MessageChannel

from memory import FakeChannel, joined, received, send


def protocol_members(protocol: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in vars(protocol).items()
        if callable(member) and not name.startswith("_")
    }


def test_fake_channel_has_every_member_of_message_channel_with_its_signature():
    """A member added to or changed in MessageChannel must be added to or changed in FakeChannel too."""
    wanted = protocol_members(MessageChannel)
    assert wanted, "MessageChannel declares no members: the check below would check nothing"
    for name, signature in wanted.items():
        assert hasattr(FakeChannel, name), f"FakeChannel lacks MessageChannel.{name}"
        got = inspect.signature(getattr(FakeChannel, name))
        assert list(got.parameters) == list(signature.parameters), f"{name}: {got} is not {signature}"
        assert [p.default for p in got.parameters.values()] == [p.default for p in signature.parameters.values()], name


def test_a_session_on_the_fake_channel_answers_through_it(world):
    """What a session sends reaches the fake channel, and a close is recorded with its code."""
    session, channel = joined(world)
    send(session, 48, 1, {}, "tcp://127.0.0.1:9999", ["x"])
    request = world.forwarder.requests[-1]
    request[3].callback([b"reply"])
    assert received(channel) == [[50, 1, {}, ["reply"]]]
    send(session, 999)
    assert channel.closed is not None
