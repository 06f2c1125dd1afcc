"""TOML ``auth`` and ``anonymous`` against a real bridge: a unit file can log people in.
The parsing: tests/unit/service/test_tap.py."""

from __future__ import annotations

import asyncio
import signal

import pytest

from harness import start_bridge
from wampclient import SessionClosed, close, connect


def test_bridge_logs_in_with_checkers_from_the_file(services, tmp_path):
    """A bridge whose only credentials come from its TOML file: ticket login works, anonymous is refused;
    a SIGHUP that changes auth keeps the running checkers and says so."""
    config = tmp_path / "z.toml"
    config.write_text(f'auth = ["memory:alice:alice-pw"]\nanonymous = false\nallow = ["{services["rep"]}"]\n')
    proc, url = start_bridge("--config", str(config))
    try:

        async def scenario():
            s = await connect(url, authmethods=["ticket"], authid="alice", on_challenge=lambda c: "alice-pw")
            assert await s.call(services["rep"], "hi") == "got this hi"
            with pytest.raises(SessionClosed) as e:
                await connect(url)
            assert e.value.reason == "wamp.error.not_authorized"
            config.write_text(f'auth = ["memory:alice:other"]\nanonymous = false\nallow = ["{services["rep"]}"]\n')
            mark = len(proc.lines)
            proc.proc.send_signal(signal.SIGHUP)
            await asyncio.get_running_loop().run_in_executor(None, lambda: proc.wait_for("configuration reloaded", start=mark))
            assert any("checkers change only at a restart" in line for line in proc.lines[mark:])
            again = await connect(url, authmethods=["ticket"], authid="alice", on_challenge=lambda c: "alice-pw")
            await close(again)
            await close(s)

        asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        proc.stop()
    assert "alice-pw" not in proc.output
