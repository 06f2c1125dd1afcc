"""End to end: autobahn-python clients <-> real twistd zmqwamp <-> real pyzmq REP/PUB processes."""

from __future__ import annotations

import asyncio

import pytest
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallOptions, PublishOptions

from harness import start_bridge
from probes import healthz
from waiting import eventually
from wampclient import SessionClosed, close, connect

SERIALIZERS = ["json", "msgpack", "cbor"]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def collect(session, topic, count, **options):
    """Subscribe and wait for ``count`` events (each a tuple of its arguments); the list goes on growing."""
    got = []
    sub = await session.subscribe(lambda *args: got.append(args), topic, **options)
    await eventually(lambda: len(got) >= count, what=f"{count} events from {topic}")
    return sub, got


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_call_round_trip(bridge, serializer):
    """A CALL reaches the REP and resolves with its reply, with every serializer."""

    async def scenario():
        s = await connect(bridge["url"], serializer=serializer)
        assert await s.call(bridge["rep"], "hello") == "got this hello"
        # JSON values become their JSON text; a multipart reply gives one argument per frame.
        result = await s.call(bridge["rep"], "a", {"k": [1, 2]})
        assert list(result.results) == ["got this a", {"k": [1, 2]}]
        await close(s)

    run(scenario())


def test_binary_round_trip_msgpack(bridge):
    """bytes that are not UTF-8 go out as bytes and come back as bytes."""

    async def scenario():
        s = await connect(bridge["url"], serializer="msgpack")
        assert await s.call(bridge["rep"], b"\xff\x00") == b"got this \xff\x00"
        await close(s)

    run(scenario())


def test_200_concurrent_calls_matched(bridge):
    """200 calls in flight on one shared REQ connection each get their own reply."""

    async def scenario():
        s = await connect(bridge["url"])
        replies = await asyncio.gather(*(s.call(bridge["rep"], f"m{i}") for i in range(200)))
        assert replies == [f"got this m{i}" for i in range(200)]
        await close(s)

    run(scenario())


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_subscribe_with_and_without_filter(bridge, serializer):
    """A filter selects messages whose first frame starts with it; no filter gets everything."""

    async def scenario():
        s = await connect(bridge["url"], serializer=serializer)
        filtered = []
        everything = []
        await s.subscribe(lambda m: filtered.append(m), bridge["pub"] + "?filter=hugo")
        await s.subscribe(lambda m: everything.append(m), bridge["pub"])
        await eventually(lambda: len(filtered) >= 5 and {m.split()[0] for m in everything} >= {"hugo", "otto"})
        await close(s)
        assert all(m.startswith("hugo ") for m in filtered)
        assert {m.split()[0] for m in everything} == {"hugo", "otto"}

    run(scenario())


def test_filter_is_a_prefix_and_percent_decoded(bridge):
    """The URI filter is percent-decoded and matched as a prefix, as ZeroMQ does."""

    async def scenario():
        s = await connect(bridge["url"])
        _, got = await collect(s, bridge["pub"] + "?filter=ot%74o%20", 3)
        none = []
        await s.subscribe(lambda *args: none.append(args), bridge["pub"] + "?filter=tto")  # a substring, not a prefix
        # one SUB socket per address: once "otto " messages come after the SUBSCRIBE of "tto", so would its own
        seen = len(got)
        await eventually(lambda: len(got) >= seen + 3, what="3 more 'otto ' events")
        await close(s)
        assert all(m[0].startswith("otto ") for m in got)
        assert none == []

    run(scenario())


def test_two_sessions_share_one_subscription(bridge):
    """Two sessions on the same (endpoint, filter) get the same subscription id and both receive."""

    async def scenario():
        a = await connect(bridge["url"])
        b = await connect(bridge["url"], serializer="msgpack")
        got_a, got_b = [], []
        sub_a = await a.subscribe(lambda m: got_a.append(m), bridge["pub"] + "?filter=hugo")
        sub_b = await b.subscribe(lambda m: got_b.append(m), bridge["pub"] + "?filter=hugo")
        assert sub_a.id == sub_b.id
        await eventually(lambda: len(set(got_a) & set(got_b)) >= 5, what="5 events received by both sessions")
        await close(a)
        await close(b)

    run(scenario())


def test_unsubscribe_stops_delivery_and_closes_socket(bridge):
    """After UNSUBSCRIBE no more events arrive, and the bridge closes the idle SUB socket."""

    async def scenario():
        s = await connect(bridge["url"])
        witness = await connect(bridge["url"])  # stays subscribed: events keep flowing after s unsubscribes
        sub, got = await collect(s, bridge["pub"] + "?filter=otto", 1)
        witness_sub, seen = await collect(witness, bridge["pub"] + "?filter=otto", 1)
        await sub.unsubscribe()
        count, flowing = len(got), len(seen)
        await eventually(lambda: len(seen) >= flowing + 3, what="3 more events to the witness")
        assert len(got) == count
        await witness_sub.unsubscribe()
        await eventually(
            lambda: bridge["pub"] not in healthz(bridge["url"])["zmq_endpoints"]["sub"], what="the idle SUB socket closed",
            blocking=True,
        )
        await close(s)
        await close(witness)

    run(scenario())


def test_denied_endpoint(bridge):
    """An endpoint no --allow pattern matches gets wamp.error.not_authorized, for CALL and SUBSCRIBE."""

    async def scenario():
        s = await connect(bridge["url"])
        with pytest.raises(ApplicationError) as e:
            await s.call("tcp://127.0.0.1:1", "x")
        assert e.value.error == "wamp.error.not_authorized"
        with pytest.raises(ApplicationError) as e:
            await s.subscribe(lambda m: None, "tcp://127.0.0.1:2")
        assert e.value.error == "wamp.error.not_authorized"
        await close(s)

    run(scenario())


@pytest.mark.parametrize("uri", ["foo", "tcp://nohost", "tcp://127.0.0.1:99999", "udp://127.0.0.1:5", "tcp://127.0.0.1:9?x=1"])
def test_malformed_endpoint(bridge, uri):
    """A URI that is not a ZeroMQ endpoint gets wamp.error.invalid_uri."""

    async def scenario():
        s = await connect(bridge["url"])
        with pytest.raises(ApplicationError) as e:
            await s.call(uri, "x")
        assert e.value.error == "wamp.error.invalid_uri"
        await close(s)

    run(scenario())


def test_timeout_against_silent_rep(bridge):
    """A REP that does not answer in time gives wamp.error.canceled saying it timed out; the session goes on."""

    async def scenario():
        s = await connect(bridge["url"])
        with pytest.raises(ApplicationError) as e:
            await s.call(bridge["slow"], "x", options=CallOptions(timeout=300))
        assert e.value.error == "wamp.error.canceled"
        assert "timed out" in e.value.args[0]
        assert await s.call(bridge["rep"], "after") == "got this after"
        await close(s)

    run(scenario())
    bridge["proc"].wait_for(r"call to .* timed out: no reply from .* within 0.3s")


def test_unserved_messages_get_errors(bridge):
    """REGISTER and acknowledged PUBLISH get a WAMP ERROR, never silence."""

    async def scenario():
        s = await connect(bridge["url"])
        with pytest.raises(ApplicationError) as e:
            await s.register(lambda: None, "com.example.proc")
        assert e.value.error == "zmqwamp.error.not_supported"
        with pytest.raises(ApplicationError) as e:
            await s.publish("com.example.topic", 1, options=PublishOptions(acknowledge=True))
        assert e.value.error == "zmqwamp.error.not_supported"
        await close(s)

    run(scenario())


def test_wrong_realm_aborts(bridge):
    """HELLO for another realm gets ABORT wamp.error.no_such_realm."""

    async def scenario():
        with pytest.raises(SessionClosed) as e:
            await connect(bridge["url"], realm="other")
        assert e.value.reason == "wamp.error.no_such_realm"

    run(scenario())


def test_no_anonymous_without_flag(services):
    """Without --anonymous, a session with no credentials is refused with not_authorized."""
    proc, url = start_bridge("--allow", services["rep"])
    try:

        async def scenario():
            with pytest.raises(SessionClosed) as e:
                await connect(url)
            assert e.value.reason == "wamp.error.not_authorized"

        run(scenario())
    finally:
        proc.stop()


def test_config_file_alias(services, tmp_path):
    """A TOML config sets realm, anonymous access and an alias with its own timeout and codec."""
    config = tmp_path / "zmqwamp.toml"
    config.write_text(
        f"""
realm = "demo"
anonymous = true
[endpoints.echo]
address = "{services['rep']}"
kind = "req"
codec = "text"
[endpoints.ticks]
address = "{services['pub']}"
kind = "sub"
"""
    )
    proc, url = start_bridge("--config", str(config))
    try:

        async def scenario():
            s = await connect(url, realm="demo")
            assert await s.call("echo", "42") == "got this 42"
            _, got = await collect(s, "ticks?filter=hugo", 1)
            assert all(m[0].startswith("hugo") for m in got)
            with pytest.raises(ApplicationError) as e:
                await s.subscribe(lambda m: None, "echo")
            assert e.value.error == "wamp.error.invalid_uri"
            # the raw address is not allowed: only the alias is
            with pytest.raises(ApplicationError) as e:
                await s.call(services["rep"], "x")
            assert e.value.error == "wamp.error.not_authorized"
            await close(s)

        run(scenario())
    finally:
        proc.stop()


def test_bad_config_is_a_clear_cli_error(tmp_path):
    """An unknown key in the config file stops twistd with a message naming it."""
    config = tmp_path / "bad.toml"
    config.write_text('realm = "x"\nlisten_on = "tcp:1"\n')
    from harness import BIN, Process

    p = Process([str(BIN / "twistd"), "-n", "--pidfile=", "zmqwamp", "--config", str(config)])
    assert p.proc.wait(30) != 0
    assert "listen_on: unknown option" in p.output
