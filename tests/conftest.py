# txaio allows one networking framework per process. tests/unit runs the bridge's code in memory on Twisted, as
# the bridge runs it; tests/e2e and tests/deploy drive real bridges with autobahn's asyncio clients. Each folder's
# conftest pins its framework before anything imports autobahn, so the two run in separate processes
# (make test-unit, make test-e2e).
import txaio


def pin_txaio(framework: str) -> None:
    """Pin txaio to ``framework`` ("twisted" or "asyncio"), or say clearly why this process cannot."""
    import pytest

    chosen = getattr(txaio, "_explicit_framework", None)
    if chosen not in (None, framework):
        raise pytest.UsageError(
            f"tests/unit runs on Twisted and tests/e2e, tests/deploy on asyncio (txaio: one framework per process); "
            f"this process already uses {chosen}: run them separately (make test-unit, make test-e2e, make test-deploy)"
        )
    getattr(txaio, f"use_{framework}")()
    if framework == "asyncio":
        # end-to-end tests import some of the bridge's modules (config, constants); importing
        # autobahn.twisted calls txaio.use_twisted(), which would refuse the asyncio clients
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
    """A bridge core in memory (zmqwamp.testing.make_world): router, hub, logins, registry, on a MemoryReactorClock."""
    from zmqwamp.testing import make_world

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
