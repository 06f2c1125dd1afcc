# One process runs both the bridge's code (Twisted, in unit tests) and autobahn's
# asyncio clients (end-to-end tests; the bridge itself runs in twistd). txaio allows
# one framework per process: the clients need asyncio, and nothing in this process
# runs autobahn's Twisted side, so pin asyncio before anything imports autobahn.
import txaio

txaio.use_asyncio()
txaio.use_twisted = lambda: None

import pytest  # noqa: E402

from harness import start_bridge, start_pub, start_rep  # noqa: E402


@pytest.fixture(scope="module")
def services():
    """A REP (echo), a REP that never answers in time, and a PUB ticking every 50 ms."""
    rep, rep_addr = start_rep()
    slow, slow_addr = start_rep(delay=30)
    pub, pub_addr = start_pub(interval=0.05)
    yield {"rep": rep_addr, "slow": slow_addr, "pub": pub_addr, "procs": {"rep": rep, "slow": slow, "pub": pub}}
    for p in (rep, slow, pub):
        p.stop()


@pytest.fixture(scope="module")
def bridge(services):
    """A twistd zmqwamp allowing exactly the three services, anonymous sessions on."""
    proc, url = start_bridge("--anonymous", "--allow", services["rep"], "--allow", services["slow"], "--allow", services["pub"])
    yield {"url": url, "proc": proc, **services}
    proc.stop()


@pytest.fixture
def world():
    """A bridge core in memory (tests/memory.py): router, hub, logins, registry, on a MemoryReactorClock."""
    from memory import make_world

    w = make_world()
    yield w
    w.close()


@pytest.fixture
def log_events():
    """Every twisted.logger event logged in this process during the test, in order: the one way tests capture logs
    (filter it in the test; ``log_events.clear()`` to look at what one step logs)."""
    from twisted.logger import capturedLogs

    with capturedLogs() as events:
        yield events
