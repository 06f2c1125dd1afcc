"""zmqwamp.auth.throttle: slow guessing down without locking the real user out (issue 13, item 9; issue 21, item 4):
failures per address and per authid, the penalty, one check at a time, known addresses, the login deadline.
LoginThrottle alone and through the login service, on a Clock.  A real bridge with a ``memory:`` checker:
tests/e2e/test_login_throttle.py.
"""

from __future__ import annotations

import pytest
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from zope.interface import implementer

from zmqwamp.auth.cred import Challenge, build_portal
from zmqwamp.auth.login import LoginService
from zmqwamp.auth.throttle import LoginThrottle, throttle_host
from zmqwamp.metrics import BridgeMetrics
from zmqwamp.testing import pending


@implementer(ICredentialsChecker)
class HeldChecker:
    """A checker whose answers the test gives: ``answer(i, ok)`` fires the i-th check."""

    credentialInterfaces = (IUsernamePassword,)
    authprovider = "held"

    def __init__(self):
        self.checks: list[tuple[bytes, Deferred]] = []

    def requestAvatarId(self, credentials):
        d = Deferred()
        self.checks.append((credentials.username, d))
        return d

    def answer(self, i: int, ok: bool) -> None:
        username, d = self.checks[i]
        d.callback(username) if ok else d.errback(UnauthorizedLogin())


class Session:
    def __init__(self, peer: str):
        self.peer = peer
        self.state = "login"


@pytest.fixture
def clock():
    return MemoryReactorClock()


@pytest.fixture
def checker():
    return HeldChecker()


def make_logins(clock, checker, **throttle):
    """The login side of a bridge (:class:`zmqwamp.auth.login.LoginService`) with ``checker`` and a throttle on ``clock``."""
    options = {"floor": 0.5, "cap": 30.0, "login_timeout": 10.0, "max_queue": 2, **throttle}
    return LoginService("zmqwamp", build_portal([checker], anonymous=False), LoginThrottle(clock, **options), BridgeMetrics())


def attempt(logins, authid: str, peer: str = "tcp4:192.0.2.1:1000", session=None) -> list:
    """AUTHENTICATE with a ticket; the list gets the avatar or the Failure once there is an answer."""
    return pending(logins.authenticate(session or Session(peer), Challenge("ticket", authid, {}), "some-ticket"))


def refusal(result: list) -> str:
    [failure] = result
    assert failure.value.error == "wamp.error.not_authorized"
    return failure.value.args[0]


def fail_logins(throttle, n, host="tcp4:192.0.2.1", authid="alice"):
    for _ in range(n):
        throttle.failed(host, authid)


# -- failures and the penalty ------------------------------------------------------------------------------------------


def test_throttle_grows_per_address_and_expires():
    """Free failures, then 1, 2, 4 ... seconds up to the cap; per address; forgotten after the window."""
    clock = Clock()
    t = LoginThrottle(clock, floor=0.5, cap=5.0, free=2, base=1.0, window=60.0, login_timeout=20.0)
    delays = []
    for _ in range(7):
        delays.append(t.delay("a"))
        t.failed("a")
    assert delays == [0, 0, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert t.delay("b") == 0
    clock.advance(61)
    assert t.delay("a") == 0


def test_throttle_is_bounded():
    """The failure table never holds more than max_records (peer, authid) pairs; the oldest go first."""
    t = LoginThrottle(Clock(), max_records=3)
    for i in range(10):
        t.failed(f"h{i}", "alice")
    assert list(t._pairs) == [("h7", "alice"), ("h8", "alice"), ("h9", "alice")]
    assert t._counts == {("peer", "h7"): 1, ("peer", "h8"): 1, ("peer", "h9"): 1, ("authid", "alice"): 3}


def test_failures_count_per_address_and_per_authid():
    """Many authids from one address, or one authid from many addresses: both are slowed down; others are not."""
    t = LoginThrottle(Clock(), free=3, base=1.0, cap=30.0, login_timeout=20.0)
    for i in range(5):
        t.failed("tcp4:192.0.2.1", f"user{i}")  # one address, five authids
    assert t.delay("tcp4:192.0.2.1", "someone-else") == 4.0
    assert t.delay("tcp4:192.0.2.2", "user0") == 0.0
    for i in range(5):
        t.failed(f"tcp4:198.51.100.{i}", "bob")  # five addresses, one authid
    assert t.delay("tcp4:203.0.113.9", "bob") == 4.0
    assert t.delay("tcp4:203.0.113.9", "carol") == 0.0


def test_a_success_clears_only_its_own_pair():
    """alice's own typos stop counting once she logs in from there; a guesser's failures from the same
    address against other authids still count."""
    t = LoginThrottle(Clock(), free=3, cap=30.0, login_timeout=20.0)
    fail_logins(t, 5, "tcp4:192.0.2.1", "alice")
    assert t.delay("tcp4:192.0.2.1", "alice") == 4.0
    t.succeeded("tcp4:192.0.2.1", "alice")
    assert t.delay("tcp4:192.0.2.1", "alice") == 0.0
    fail_logins(t, 5, "tcp4:192.0.2.1", "bob")
    t.succeeded("tcp4:192.0.2.1", "alice")
    assert t.delay("tcp4:192.0.2.1", "alice") == 4.0


def test_the_penalty_leaves_time_to_finish_the_login():
    """However many failures, the penalty stays within half the login deadline: with the floor delay and
    the check, a login still completes in time; login_penalty_max below that is kept."""
    t = LoginThrottle(Clock(), floor=0.5, cap=30.0, login_timeout=10.0)
    fail_logins(t, 1000)
    assert t.delay("tcp4:192.0.2.1", "alice") == t.budget == 5.0
    assert t.budget + t.floor < t.login_timeout
    assert LoginThrottle(Clock(), cap=2.0, login_timeout=10.0).cap == 2.0
    assert LoginThrottle(Clock(), cap=0.0).delay("x") == 0.0  # penalty off


def test_right_ticket_after_many_wrong_ones_is_checked_before_the_deadline(clock, checker):
    """1000 failures for alice from her address: her right ticket is checked after 5 s (not 10 minutes) and
    accepted; then her record from there is clear and the next login is not delayed."""
    logins = make_logins(clock, checker)
    fail_logins(logins.throttle, 1000, "tcp4:192.0.2.1", "alice")
    result = attempt(logins, "alice")
    clock.advance(4.99)
    assert checker.checks == []
    clock.advance(0.01)
    checker.answer(0, True)
    assert result[0].authid == "alice"
    again = attempt(logins, "alice")
    checker.answer(1, True)
    assert again[0].authid == "alice"


# -- one check at a time -----------------------------------------------------------------------------------------------


def test_one_check_at_a_time_per_address_and_per_authid(clock, checker):
    """A second attempt from the same address, or for the same authid, is checked only after the first;
    an unrelated attempt is checked at once."""
    logins = make_logins(clock, checker)
    first = attempt(logins, "alice", "tcp4:192.0.2.1:1")
    same_peer = attempt(logins, "bob", "tcp4:192.0.2.1:2")
    same_authid = attempt(logins, "alice", "tcp4:192.0.2.2:1")
    other = attempt(logins, "carol", "tcp4:192.0.2.3:1")
    assert [name for name, _ in checker.checks] == [b"alice", b"carol"]
    checker.answer(0, False)
    assert sorted(name for name, _ in checker.checks[2:]) == [b"alice", b"bob"]
    for i in (1, 2, 3):
        checker.answer(i, False)
    clock.advance(0.5)
    assert [refusal(r) for r in (first, same_peer, same_authid, other)] == ["authentication failed"] * 4


def test_a_full_line_is_refused_at_once(clock, checker):
    """Beyond max_queue attempts waiting from one address: ABORT 'too many login attempts' at once, counted
    in zmqwamp_limit_exceeded_total{limit="max_pending_logins"}, never checked."""
    logins = make_logins(clock, checker, max_queue=2)
    results = [attempt(logins, f"user{i}") for i in range(5)]
    assert len(checker.checks) == 1
    assert [refusal(r) for r in results[3:]] == ["too many login attempts"] * 2
    assert results[1] == results[2] == []
    limit = logins.metrics.registry.get_sample_value("zmqwamp_limit_exceeded_total", {"limit": "max_pending_logins"})
    assert limit == 2
    checker.answer(0, False)
    checker.answer(1, False)
    checker.answer(2, False)
    assert len(checker.checks) == 3


def test_an_attempt_that_could_not_be_checked_in_time_is_refused_at_once(clock, checker):
    """Under a penalty, an attempt that would wait past the budget behind the one being delayed is refused
    at once instead of waiting for the login deadline."""
    logins = make_logins(clock, checker, max_queue=10)
    fail_logins(logins.throttle, 5)  # penalty 4 s
    first = attempt(logins, "alice")
    second = attempt(logins, "alice")
    assert first == [] and refusal(second) == "too many login attempts"
    clock.advance(4)
    checker.answer(0, True)
    assert first[0].authid == "alice"


def test_gone_sessions_are_not_checked(clock, checker):
    """An attempt whose session ended while it waited is dropped when its turn comes; the next one goes on."""
    logins = make_logins(clock, checker)
    attempt(logins, "alice")
    gone = Session("tcp4:192.0.2.1:2")
    attempt(logins, "alice", session=gone)
    third = attempt(logins, "alice")
    gone.state = "closed"
    checker.answer(0, False)
    assert len(checker.checks) == 2
    checker.answer(1, True)
    assert third[0].authid == "alice"


def test_a_checker_that_never_answers_does_not_block_the_line(clock, checker):
    """A check with no answer is given up after the login timeout (a refusal); the attempt that waited
    behind it all that time is refused ('too many login attempts'), and the next one is checked at once."""
    logins = make_logins(clock, checker)
    first = attempt(logins, "alice")
    second = attempt(logins, "alice")
    clock.advance(10)
    assert len(checker.checks) == 1 and refusal(second) == "too many login attempts"
    clock.advance(0.5)
    assert refusal(first) == "authentication failed"
    third = attempt(logins, "alice")
    checker.answer(1, True)
    assert third[0].authid == "alice"


def test_lines_are_forgotten_when_empty(clock, checker):
    """No per-address or per-authid state is kept once nothing waits (only failure records, bounded)."""
    logins = make_logins(clock, checker)
    attempt(logins, "alice")
    attempt(logins, "alice")
    checker.answer(0, True)
    checker.answer(1, True)
    assert logins.throttle._lines == {}


# -- issue 21, item 4: a guesser elsewhere cannot lock the user out; guessing stays slow -------------------------------


HOME = "tcp4:192.0.2.1"


GUESSER = "tcp4:203.0.113.66"


@implementer(ICredentialsChecker)
class Counting:
    """Accepts the ticket 'right' for any authid, refuses anything else at once; counts its checks."""

    credentialInterfaces = (IUsernamePassword,)
    authprovider = "counting"

    def __init__(self):
        self.checks = 0

    def requestAvatarId(self, credentials):
        self.checks += 1
        if credentials.password == b"right":
            return credentials.username
        raise UnauthorizedLogin()


def ticket(logins, authid: str, peer: str, secret: str = "wrong") -> list:
    return pending(logins.authenticate(Session(peer + ":1000"), Challenge("ticket", authid, {}), secret))


def test_a_known_address_does_not_wait_behind_a_guesser_elsewhere(clock, checker):
    """alice logged in from HOME before.  A guesser elsewhere has failed 10 times for her (the authid's penalty
    is at its 5 s cap) and its attempt sits in that penalty, holding alice's line: alice's attempt from HOME is
    checked at once (before: refused at once, 'too many login attempts')."""
    logins = make_logins(clock, checker, max_queue=32)
    logins.throttle.succeeded(HOME, "alice")
    fail_logins(logins.throttle, 10, GUESSER, "alice")
    guess = attempt(logins, "alice", GUESSER + ":1")
    assert checker.checks == [] and logins.throttle.delay(GUESSER, "alice") == 5.0
    home = attempt(logins, "alice", HOME + ":2")
    assert len(checker.checks) == 1 and logins.throttle.delay(HOME, "alice") == 0.0
    checker.answer(0, True)
    assert home[0].authid == "alice"
    clock.advance(5)
    checker.answer(1, False)
    clock.advance(0.5)
    assert refusal(guess) == "authentication failed"


def test_a_known_address_keeps_its_own_line_and_penalty(clock, checker):
    """Known is not exempt: failures from HOME itself still slow HOME down, one check at a time there."""
    logins = make_logins(clock, checker, max_queue=32)
    logins.throttle.succeeded(HOME, "alice")
    fail_logins(logins.throttle, 5, HOME, "bob")  # someone at the same address guesses bob's secret
    assert logins.throttle.known(HOME, "alice") and logins.throttle.delay(HOME, "alice") == 4.0
    first = attempt(logins, "alice", HOME + ":1")
    second = attempt(logins, "alice", HOME + ":2")
    assert refusal(second) == "too many login attempts" and checker.checks == []
    clock.advance(4)
    checker.answer(0, True)
    assert first[0].authid == "alice"


def test_a_new_address_does_not_wait_behind_addresses_that_keep_failing(clock, checker):
    """alice at an address she never used: she waits the authid's penalty (it is under attack), but in the line
    of addresses that have not failed for alice, not behind the guesser's attempt: checked within the budget."""
    logins = make_logins(clock, checker, max_queue=32)
    fail_logins(logins.throttle, 10, GUESSER, "alice")
    guess = attempt(logins, "alice", GUESSER + ":1")
    clock.advance(1)
    again = attempt(logins, "alice", GUESSER + ":2")  # the guesser's second attempt: its line is taken
    assert refusal(again) == "too many login attempts"
    new = attempt(logins, "alice", "tcp4:198.51.100.7:1")
    clock.advance(4)
    assert len(checker.checks) == 1  # the guesser's, after its 5 s
    clock.advance(1)
    assert len(checker.checks) == 2  # hers, 5 s after she came: within the 5 s budget
    checker.answer(1, True)
    assert new[0].authid == "alice"
    checker.answer(0, False)
    clock.advance(0.5)
    assert refusal(guess) == "authentication failed"


def test_guessing_one_authid_from_ever_new_addresses_stays_slow(clock):
    """A new address every 100 ms, each guessing alice's ticket once, for 10 minutes: at most one check per
    5 s penalty in each of the authid's two lines (plus the 3 free ones), about 240 of 6,000; the rest
    refused at once.  alice, known at HOME, logs in every minute meanwhile, at once."""
    checker = Counting()
    logins = LoginService(
        "zmqwamp", build_portal([checker], anonymous=False), LoginThrottle(clock, floor=0.5), BridgeMetrics()
    )
    logins.throttle.succeeded(HOME, "alice")
    results = []
    for i in range(6000):
        results.append(ticket(logins, "alice", f"tcp4:10.{i // 65536}.{i // 256 % 256}.{i % 256}"))
        if i % 600 == 0:
            before = checker.checks
            assert ticket(logins, "alice", HOME, "right")[0].authid == "alice"
            assert checker.checks == before + 1
        clock.advance(0.1)
    for _ in range(3):
        clock.advance(10)
    guesses = checker.checks - 10
    assert 100 <= guesses <= 2 * 600 / 5 + 3 + 5, guesses
    assert sum(1 for r in results if refusal(r) == "too many login attempts") == 6000 - guesses


def test_known_pairs_are_bounded_and_expire():
    """Only a success adds a known pair; at most max_known_per_authid per authid and max_known in all, the least
    recently used forgotten first; none older than trust_window."""
    clock = Clock()
    t = LoginThrottle(clock, trust_window=100.0, max_known=5, max_known_per_authid=2)
    t.failed(HOME, "alice")
    assert not t.known(HOME, "alice")
    for host in ("a", "b", "c"):
        t.succeeded(host, "alice")
        clock.advance(1)
    assert [t.known(h, "alice") for h in ("a", "b", "c")] == [False, True, True]
    t.succeeded("b", "alice")  # b is now the most recently used of alice's
    t.succeeded("d", "alice")
    assert [t.known(h, "alice") for h in ("b", "c", "d")] == [True, False, True]
    for authid in ("u1", "u2", "u3", "u4"):
        t.succeeded("x", authid)
    assert len(t._known) == 5 and not t.known("b", "alice") and t.known("x", "u4")
    clock.advance(101)
    assert not t.known("x", "u4") and t._known == {} and t._known_hosts == {}


def test_the_throttle_keys_addresses_as_the_connection_counter_does():
    """An IPv4-mapped IPv6 peer is its IPv4 address; an IPv6 peer its /64 (a guesser does not get 2**64 fresh
    addresses); anything else the address without the port."""
    assert throttle_host("tcp6:::ffff:192.0.2.1:443") == "tcp4:192.0.2.1"
    assert throttle_host("tcp6:2001:db8:1:2:3:4:5:6:443") == throttle_host("tcp6:2001:db8:1:2::9:443")
    assert throttle_host("tcp6:2001:db8:1:2::9:443") == "tcp6:2001:db8:1:2::/64"
    assert throttle_host("tcp4:192.0.2.1:443") == "tcp4:192.0.2.1"
    assert throttle_host("unix") == "unix"
