"""End to end, issue 17: a real twistd bridge with history aliases in its TOML file, real pyzmq PUBs, autobahn-python.

autobahn-python sends ``get_retained`` itself; ``_since``/``_epoch`` (custom options) are added to its SUBSCRIBE
by its serializer here, which also records what arrives, since autobahn's EventDetails drops custom details
(``_epoch``, ``_gap``).  Everything else is the stock ApplicationSession.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import pytest
from autobahn.asyncio.websocket import WampWebSocketClientFactory
from autobahn.wamp.serializer import JsonSerializer
from autobahn.wamp.types import ComponentConfig, SubscribeOptions

from zmqwamp.upstream.history import message_cost

from harness import BIN, start_bridge, start_pub
from probes import metric, metrics
from waiting import eventually
from wampclient import _Session, close

MS = 200  # get_retained: the last message within this many ms of SUBSCRIBED (issue 17)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


class Wire(JsonSerializer):
    """autobahn's JSON serializer, adding ``extra`` options to the next SUBSCRIBE and timing what comes in."""

    def __init__(self) -> None:
        super().__init__()
        self.extra: dict = {}
        self.received: list[tuple[float, list]] = []  # (monotonic time, raw message)
        inner = self._serializer
        serialize, unserialize = inner.serialize, inner.unserialize

        def out(obj):
            if obj[0] == 32 and self.extra:
                obj[2].update(self.extra)
                self.extra = {}
            return serialize(obj)

        def into(payload):
            messages = unserialize(payload)
            now = time.monotonic()
            self.received.extend((now, m) for m in messages)
            return messages

        inner.serialize, inner.unserialize = out, into

    def events(self) -> list[list]:
        return [m for _, m in self.received if m[0] == 36]


async def connect(url: str):
    loop = asyncio.get_running_loop()
    joined = loop.create_future()
    wire = Wire()
    factory = WampWebSocketClientFactory(
        lambda: _Session(ComponentConfig("zmqwamp"), joined, {}), url=url, serializers=[wire]
    )
    await asyncio.wait_for(loop.create_connection(factory, "127.0.0.1", int(url.split(":")[2].split("/")[0])), 10)
    return await asyncio.wait_for(joined, 10), wire


def count(message: list) -> int:
    """The counter PUB's ``tick <n>``: n."""
    return int(message[4][0].split()[1])


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    slow, slow_addr = start_pub(interval=2.0, topics="tick")
    fast, fast_addr = start_pub(interval=0.02, topics="tick")
    config = tmp_path_factory.mktemp("history") / "bridge.toml"
    config.write_text(
        f"""
anonymous = true
allow = ["tcp://127.0.0.1:*"]

[endpoints.slow]  # 1 message / 2 s, kept open: warm for the first subscriber
address = "{slow_addr}"
kind = "sub"
history = 10
keep_open = true

[endpoints.fast]  # 50 messages / s
address = "{fast_addr}"
kind = "sub"
history = 1000
keep_open = true

[endpoints.tiny]  # the same PUB, a history of 3
address = "{fast_addr}"
kind = "sub"
history = 3
history_bytes = 4096
"""
    )
    bridge, url = start_bridge("--config", str(config))
    yield {"url": url, "bridge": bridge, "fast": fast_addr}
    bridge.stop()
    slow.stop()
    fast.stop()


def test_keep_open_warms_the_cache_and_get_retained_brings_the_last_message_within_200ms(env):
    """Nobody has subscribed to 'slow' yet: keep_open filled its history; get_retained gets the newest, then live."""

    async def scenario():
        await eventually(
            lambda: metric(env["url"], "zmqwamp_history_messages", endpoint="slow") >= 1,
            what="a message held for 'slow' with keep_open",
            blocking=True,
        )
        session, wire = await connect(env["url"])
        got = []
        sub = await session.subscribe(
            lambda m, details: got.append((m, details)),
            "slow",
            SubscribeOptions(get_retained=True, details_arg="details"),
        )
        await eventually(lambda: len(got) >= 2, 6, "the retained message and a live one")
        subscribed_at = next(t for t, m in wire.received if m[0] == 33)
        retained_at, retained = next((t, m) for t, m in wire.received if m[0] == 36)
        assert retained[3]["retained"] is True and retained[3]["_epoch"]
        assert retained_at - subscribed_at < MS / 1000, f"{(retained_at - subscribed_at) * 1000:.0f} ms"
        live = wire.events()[1]
        assert "retained" not in live[3] and live[3]["_epoch"] == retained[3]["_epoch"]
        assert count(live) == count(retained) + 1  # it was the last message: the next one is live
        assert live[2] > retained[2]  # publication ids increase
        assert got[0][1].retained is True and got[0][1].publication == retained[2]
        await sub.unsubscribe()
        await close(session)

    run(scenario())


def resubscribe_after(env, alias: str, away: float, **since_options):
    """Subscribe, receive, disconnect for ``away`` seconds while the PUB goes on, resubscribe with ``_since``."""

    async def scenario():
        first, wire1 = await connect(env["url"])
        await first.subscribe(lambda m: None, alias)
        await eventually(lambda: len(wire1.events()) >= 10, 10, "10 events")
        first._transport.close()  # the connection drops, no UNSUBSCRIBE, no GOODBYE
        await asyncio.sleep(away)
        before = wire1.events()
        last = before[-1]
        session, wire2 = await connect(env["url"])
        wire2.extra = {"_since": last[2], "_epoch": last[3]["_epoch"], **since_options}
        await session.subscribe(lambda m: None, alias)
        await eventually(lambda: len(wire2.events()) >= 10, 10, "replayed and live events")
        await asyncio.sleep(0.3)
        await close(session)
        return before, wire2.events()

    return run(scenario())


def test_since_replays_what_a_dropped_connection_missed_no_gap_no_duplicate_in_order(env):
    before, after = resubscribe_after(env, "fast", 1.0)
    counts = [count(e) for e in before + after]
    assert counts == list(range(counts[0], counts[0] + len(counts))), counts  # every tick, once, in order
    assert len(after) > 40  # about 50 of them were published while away
    assert all("_gap" not in e[3] for e in after)
    ids = [e[2] for e in before + after]
    assert ids == sorted(set(ids))


def test_a_history_smaller_than_the_gap_says_history_on_the_first_event(env):
    before, after = resubscribe_after(env, "tiny", 1.0)
    gap = after[0][3]["_gap"]
    assert gap == {"since": before[-1][2], "reason": "history", "first": after[0][2]}
    assert count(after[0]) > count(before[-1]) + 1  # messages were lost in between
    counts = [count(e) for e in after]
    assert counts == list(range(counts[0], counts[0] + len(counts)))  # what it has, then live, in order
    assert all("_gap" not in e[3] for e in after[1:])


def test_an_id_from_another_process_says_epoch(env):
    before, after = resubscribe_after(env, "fast", 0.2, _epoch="another-bridge-process")
    gap = after[0][3]["_gap"]
    assert gap["reason"] == "epoch" and gap["since"] == before[-1][2] and gap["first"] == after[0][2]
    assert count(after[0]) < count(before[0])  # everything held, from before the first subscription too


def test_metrics_show_messages_and_bytes_held_per_alias(env):
    async def scenario():
        await eventually(
            lambda: metric(env["url"], "zmqwamp_history_messages", endpoint="fast") >= 100,
            what="100 messages held for 'fast'",
            blocking=True,
        )

    run(scenario())
    assert metric(env["url"], "zmqwamp_history_messages", endpoint="tiny") == 3  # 'fast' keeps the address open
    # the memory they take, overhead included (issue 21: what history_bytes bounds)
    held = metric(env["url"], "zmqwamp_history_bytes", endpoint="tiny")
    assert 3 * message_cost([b"tick 1"]) <= held <= 3 * message_cost([b"tick 1000000"])
    assert metric(env["url"], "zmqwamp_history_bytes", endpoint="fast") >= 100 * message_cost([b"tick 1"])
    assert metric(env["url"], "zmqwamp_history_messages", endpoint="slow") >= 1


def test_sighup_gives_an_alias_a_kept_open_history_and_takes_it_back(env, tmp_path: Path):
    config = tmp_path / "bridge.toml"
    alias = f'anonymous = true\n[endpoints.ticks]\naddress = "{env["fast"]}"\nkind = "sub"\n'
    config.write_text(alias)
    bridge, url = start_bridge("--config", str(config))
    try:
        assert metric(url, "zmqwamp_zmq_sockets_open", kind="sub") == 0
        assert ("zmqwamp_history_messages", (("endpoint", "ticks"),)) not in metrics(url)
        config.write_text(alias + "history = 5\nkeep_open = true\n")
        mark = len(bridge.lines)
        bridge.proc.send_signal(signal.SIGHUP)
        bridge.wait_for("configuration reloaded", start=mark)

        async def warm():
            await eventually(
                lambda: metric(url, "zmqwamp_history_messages", endpoint="ticks") == 5,
                what="5 messages held",
                blocking=True,
            )
            session, wire = await connect(url)
            await session.subscribe(lambda m: None, "ticks", SubscribeOptions(get_retained=True))
            await eventually(lambda: wire.events(), 5, "the retained event")
            assert wire.events()[0][3]["retained"] is True
            await close(session)

        run(warm())
        assert metric(url, "zmqwamp_zmq_sockets_open", kind="sub") == 1  # kept open with nobody subscribed
        config.write_text(alias)
        mark = len(bridge.lines)
        bridge.proc.send_signal(signal.SIGHUP)
        bridge.wait_for("configuration reloaded", start=mark)
        bridge.wait_for(r"closed \(no longer keep_open\)", start=mark)
        assert metric(url, "zmqwamp_zmq_sockets_open", kind="sub") == 0
        assert ("zmqwamp_history_messages", (("endpoint", "ticks"),)) not in metrics(url)
    finally:
        bridge.stop()


@pytest.mark.parametrize(
    "toml, args, error",
    [
        (
            '[endpoints.calc]\naddress = "tcp://127.0.0.1:5555"\nkind = "req"\nhistory = 10\n',
            [],
            'endpoints.calc.history: only a kind = "sub" alias keeps a history',
        ),
        (
            '[endpoints.a]\naddress = "tcp://127.0.0.1:5555"\nkind = "sub"\nhistory = 10\n',
            ["--max-history-bytes", "1000"],
            "history_bytes add up to 4194304 bytes (a: 4194304), over max_history_bytes (1000)",
        ),
    ],
)
def test_config_errors_are_clear_cli_errors(tmp_path: Path, toml, args, error):
    config = tmp_path / "bridge.toml"
    config.write_text(toml)
    result = subprocess.run(
        [str(BIN / "twistd"), "-n", "--pidfile=", "zmqwamp", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(tmp_path),
    )
    assert result.returncode != 0
    assert error in result.stdout + result.stderr, result.stdout + result.stderr
