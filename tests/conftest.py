import pytest

from harness import start_bridge, start_pub, start_rep


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
