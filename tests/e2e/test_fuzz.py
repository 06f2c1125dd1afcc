"""Hypothesis against a real bridge: hostile WebSocket/WAMP input, while a good session keeps working.

Every example opens its own WebSocket, sends what Hypothesis drew, then a probe
(a SUBSCRIBE that policy refuses: ERROR ``wamp.error.not_authorized``, no zmq
socket).  Whatever comes back must be well-formed: WAMP messages of the kinds a
router sends, ERRORs and ABORTs with an error URI, or a WebSocket close with a
proper code.  Silence (the probe never answered, the connection not closed) fails.

Meanwhile a well-behaved session (one per test, so that no test depends on
another having run first) calls a REP and receives a PUB's events; at the end of
each test it must have had every reply right, and its events must have kept
coming (no gap over 2 s: checked under ``make soak``, ZMQWAMP_STRICT_TIMING=1).

``ZMQWAMP_FUZZ_EXAMPLES`` sets the examples per test (default 150; ``make soak``
runs thousands).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import start_bridge, start_pub, start_rep
from minws import (
    ABORT,
    ERROR,
    EVENT,
    GOODBYE,
    RESULT,
    SUBSCRIBED,
    UNSUBSCRIBED,
    WELCOME,
    Closed,
    WSClient,
    encode_frame,
)
from probes import healthz
from waiting import timing_bound, wait_for

EXAMPLES = int(os.environ.get("ZMQWAMP_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
PROBE_ID = 4242424242
PROBE = json.dumps([32, PROBE_ID, {}, "tcp://10.255.255.1:1"]).encode()  # denied by policy
HELLO = json.dumps([1, "zmqwamp", {"roles": {"caller": {}, "subscriber": {}}}]).encode()
# What a router may send a client, and the close codes it may use.
ROUTER_SENDS = {WELCOME, ABORT, 4, GOODBYE, ERROR, SUBSCRIBED, UNSUBSCRIBED, EVENT, RESULT}
CLOSE_CODES = {1000, 1001, 1002, 1003, 1007, 1008, 1009}
TRIED = {"examples": 0, "closed": 0, "alive": 0}


# -- the bridge, and a good session running alongside --------------------------------


class GoodSession(threading.Thread):
    """Calls the REP in a loop and follows the PUB; records anything wrong."""

    def __init__(self, url: str, rep: str, pub: str) -> None:
        super().__init__(daemon=True)
        self.url, self.rep, self.pub = url, rep, pub
        self.stop = threading.Event()
        self.calls = self.events = 0
        self.longest_silence = 0.0
        self.problems: list[str] = []

    def run(self) -> None:
        try:
            asyncio.run(self._run())
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.problems.append(f"good session failed: {e!r}")

    async def _run(self) -> None:
        ws = await WSClient.connect(self.url)
        await ws.hello()
        sub = await ws.subscribe(self.pub)
        assert sub[0] == SUBSCRIBED, sub
        last_event = time.monotonic()
        while not self.stop.is_set():
            request = ws.next_id()
            text = f"good {request}"
            ws.send_json([48, request, {}, self.rep, [text]])
            while True:
                msg = await ws.recv_json(timeout=10)
                now = time.monotonic()
                if msg[0] == EVENT:
                    self.events += 1
                    self.longest_silence = max(self.longest_silence, now - last_event)
                    last_event = now
                    continue
                if msg[:2] == [RESULT, request] and msg[3] == [f"got this {text}"]:
                    self.calls += 1
                    break
                self.problems.append(f"unexpected reply {msg!r}")
                return
            await asyncio.sleep(0.01)
        await ws.goodbye()


@pytest.fixture(scope="module")
def bridge():
    rep, rep_addr = start_rep()
    pub, pub_addr = start_pub(interval=0.05)
    proc, url = start_bridge("--anonymous", "--allow", "tcp://127.0.0.1:*")
    loop = asyncio.new_event_loop()
    yield {"url": url, "rep": rep_addr, "pub": pub_addr, "proc": proc, "loop": loop}
    loop.close()
    for p in (proc, rep, pub):
        p.stop()


@pytest.fixture
def good(bridge):
    """The well-behaved session of one test, under way (a reply and an event) before the test's examples start."""
    session = GoodSession(bridge["url"], bridge["rep"], bridge["pub"])
    session.start()
    wait_for(lambda: (session.calls and session.events) or session.problems, what="the good session under way")
    yield session
    session.stop.set()
    session.join(15)


def served_throughout(bridge, good: GoodSession) -> None:
    """How every test here ends: the good session got every reply right and kept getting events, the bridge
    lives, every hostile session is gone, nothing unhandled was logged."""
    wait_for(lambda: (good.calls > 50 and good.events > 20) or good.problems, timeout=30, what="50 calls and 20 events")
    good.stop.set()
    good.join(15)
    print(f"fuzz: {TRIED}; good session: {good.calls} calls, {good.events} events, "
          f"longest event gap {good.longest_silence:.2f}s")
    assert not good.is_alive(), "the good session did not end"
    assert good.problems == []
    timing_bound(good.longest_silence < 2.0, f"longest gap between the good session's events {good.longest_silence:.2f} s (bound 2 s)")
    assert bridge["proc"].proc.poll() is None, "the bridge died"
    wait_for(lambda: healthz(bridge["url"])["sessions"] == 0, what="every session gone")
    assert "Traceback" not in bridge["proc"].output and "Unhandled" not in bridge["proc"].output


# -- one example -------------------------------------------------------------------------


async def exchange(url: str, hello_first: bool, payloads: list[tuple[bytes, bool]], raw: bytes | None = None) -> str:
    """Send the payloads (then ``raw`` bytes, then the probe); check every answer; return the outcome."""
    ws = await WSClient.connect(url)
    try:
        welcomed = False
        if hello_first:
            await ws.hello()
            welcomed = True
        for payload, binary in payloads:
            ws.send_frame(2 if binary else 1, payload)
        if raw is not None:
            ws.send_raw(raw)
            try:
                ws.writer.write_eof()  # whatever frame the garbage started, it ends here
            except OSError:
                pass  # the bridge has already closed the connection
        ws.send_frame(1, PROBE) if raw is None else None
        ended = False  # the router said ABORT or GOODBYE: nothing may follow but the close
        while True:
            try:
                frame = await ws.recv(timeout=10)
            except Closed as e:
                if raw is not None and e.code is None:
                    return "closed"  # the garbage, then EOF: nothing else to say
                assert e.code in CLOSE_CODES, f"close code {e.code} ({e.reason!r})"
                return "closed"
            except TimeoutError:
                raise AssertionError("no answer and no close within 10 s") from None
            assert not ended, "a message after ABORT or GOODBYE"
            assert frame.opcode == 1, f"a {frame.opcode} frame on a JSON session"
            msg = json.loads(frame.payload)
            assert isinstance(msg, list) and msg and msg[0] in ROUTER_SENDS, msg
            if msg[0] == WELCOME:
                assert not welcomed, "a second WELCOME"
                welcomed = True
            elif msg[0] == ABORT:
                assert isinstance(msg[2], str) and msg[2].startswith("wamp."), msg
                ended = True
            elif msg[0] == GOODBYE:
                ended = True
            elif msg[0] == ERROR:
                assert isinstance(msg[4], str) and msg[4].split(".")[0] in ("wamp", "zmqwamp"), msg
                if msg[2] == PROBE_ID:
                    assert msg[4] == "wamp.error.not_authorized", msg
                    return "alive"
    finally:
        ws.abort()


def play(bridge, hello_first, payloads, raw=None) -> None:
    outcome = bridge["loop"].run_until_complete(asyncio.wait_for(exchange(bridge["url"], hello_first, payloads, raw), 30))
    TRIED["examples"] += 1
    TRIED[outcome] += 1


# -- strategies ----------------------------------------------------------------------------

KNOWN_TYPES = [1, 2, 3, 4, 5, 6, 8, 16, 17, 32, 33, 34, 35, 36, 48, 49, 50, 64, 65, 66, 67, 68, 69, 70]
ids = st.one_of(
    st.integers(min_value=0, max_value=2**53 + 2),
    st.sampled_from([-1, 0, 2**53, 2**53 + 1, 2**63, 2**64 + 1, 10**30, -(10**30)]),
    st.floats(allow_nan=False, allow_infinity=False),
)
scalars = st.one_of(st.none(), st.booleans(), ids, st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40))
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=20,
)
uris = st.one_of(
    st.sampled_from(
        ["tcp://127.0.0.1:1", "tcp://10.255.255.1:1", "ipc:///nonexistent", "not a uri", "", "tcp://[::1", "x" * 3000,
         "tcp://127.0.0.1:99999", "tcp://127.0.0.1:1?filter=%ff", "tcp://127.0.0.1:1?x=y"]
    ),
    st.text(max_size=30),
    json_values,
)
option_dicts = st.one_of(st.dictionaries(st.sampled_from(["timeout", "filter", "receive_progress", "match", "x"]), json_values,
                                          max_size=3), json_values)


@st.composite
def wamp_messages(draw):
    """Lists shaped like WAMP messages: a (mostly known) type, then the right or wrong fields."""
    kind = draw(st.sampled_from(["call", "subscribe", "unsubscribe", "cancel", "publish", "register", "other", "hello",
                                 "goodbye", "abort", "authenticate"]))
    if kind == "call":
        msg = [48, draw(ids), draw(option_dicts), draw(uris), draw(json_values), draw(json_values)]
    elif kind == "subscribe":
        msg = [32, draw(ids), draw(option_dicts), draw(uris)]
    elif kind == "unsubscribe":
        msg = [34, draw(ids), draw(ids)]
    elif kind == "cancel":
        msg = [49, draw(ids), draw(option_dicts)]
    elif kind == "publish":
        msg = [16, draw(ids), draw(option_dicts), draw(uris), draw(json_values)]
    elif kind == "register":
        msg = [64, draw(ids), draw(option_dicts), draw(uris)]
    elif kind == "hello":
        msg = [1, draw(st.one_of(st.just("zmqwamp"), st.text(max_size=10), json_values)), draw(option_dicts)]
    elif kind == "goodbye":
        msg = [6, draw(option_dicts), draw(uris)]
    elif kind == "abort":
        msg = [3, draw(option_dicts), draw(uris)]
    elif kind == "authenticate":
        msg = [5, draw(json_values), draw(option_dicts)]
    else:
        msg = [draw(st.one_of(st.sampled_from(KNOWN_TYPES), ids, st.text(max_size=5)))] + draw(st.lists(json_values, max_size=6))
    cut = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=len(msg))))
    if cut is not None:
        msg = msg[:cut]  # wrong length
    if draw(st.booleans()):
        msg += draw(st.lists(json_values, max_size=3))  # extra fields
    return msg


good_ids = st.integers(min_value=1, max_value=2**53)
small_dicts = st.dictionaries(st.sampled_from(["timeout", "filter", "acknowledge", "match", "disclose_me", "x"]), scalars,
                              max_size=3)


@st.composite
def plausible_messages(draw):
    """Well-typed requests with hostile values: each should get its ERROR (or RESULT) and the session carry on."""
    kind = draw(st.sampled_from(["call", "subscribe", "unsubscribe", "cancel", "publish", "register", "unregister"]))
    uri = draw(st.one_of(uris.filter(lambda u: isinstance(u, str)), st.text(max_size=20)))
    if kind == "call":
        msg = [48, draw(good_ids), draw(small_dicts), uri, draw(st.lists(json_values, max_size=3))]
        if draw(st.booleans()):
            msg.append(draw(st.dictionaries(st.text(max_size=5), json_values, max_size=2)))
    elif kind == "subscribe":
        msg = [32, draw(good_ids), draw(small_dicts), uri]
    elif kind == "unsubscribe":
        msg = [34, draw(good_ids), draw(good_ids)]
    elif kind == "cancel":
        msg = [49, draw(good_ids), {}]
    elif kind == "publish":
        msg = [16, draw(good_ids), {"acknowledge": draw(st.booleans())}, uri, draw(st.lists(json_values, max_size=2))]
    elif kind == "register":
        msg = [64, draw(good_ids), {}, uri]
    else:
        msg = [66, draw(good_ids), draw(good_ids)]
    return msg


def deep(depth: int, kind: str) -> bytes:
    inner = ("[" * depth + "]" * depth) if kind == "list" else ('{"a":' * depth + "1" + "}" * depth)
    return f'[48, 1, {{}}, "tcp://127.0.0.1:1", [{inner}]]'.encode()


payload_items = st.one_of(
    plausible_messages().map(lambda m: (json.dumps(m).encode(), False)),
    wamp_messages().map(lambda m: (json.dumps(m).encode(), False)),
    json_values.map(lambda v: (json.dumps(v).encode(), False)),  # not a message at all
    st.binary(max_size=200).map(lambda b: (b, False)),  # random bytes in a text frame: often invalid UTF-8
    st.binary(max_size=200).map(lambda b: (b, True)),  # a binary frame on a JSON session
    st.text(max_size=100).map(lambda t: (t.encode(), False)),
    st.tuples(st.sampled_from([10, 100, 999, 1001, 5000, 100000]), st.sampled_from(["list", "dict"])).map(
        lambda d: (deep(*d), False)
    ),
    st.sampled_from([b'\xff\xfe[48', b'[48, 1, {}, "\xc3\x28"]', b"[1, \"zmqwamp\", {}]\xed\xa0\x80"]).map(lambda b: (b, False)),
)


# -- the tests -----------------------------------------------------------------------------
# Each test draws its examples in an inner @given function and then checks the good session of that test.


def test_fuzz_messages(bridge, good):
    """Random and malformed WAMP/JSON/bytes, before or after HELLO: a proper answer or a proper close."""

    @FUZZ
    @given(hello_first=st.booleans(), payloads=st.lists(payload_items, min_size=1, max_size=4))
    def examples(hello_first, payloads):
        play(bridge, hello_first, payloads)

    examples()
    served_throughout(bridge, good)


def test_fuzz_requests(bridge, good):
    """Well-formed requests with hostile values (URIs, ids, options, arguments): answers, and the session lives on."""

    @FUZZ
    @given(requests=st.lists(plausible_messages(), min_size=1, max_size=5))
    def examples(requests):
        play(bridge, True, [(json.dumps(m).encode(), False) for m in requests])

    examples()
    served_throughout(bridge, good)


def test_fuzz_session_states(bridge, good):
    """Second HELLO, anything after GOODBYE or ABORT: never processed, never a hang."""

    @FUZZ
    @given(
        first=st.sampled_from(["hello", "goodbye", "abort"]),
        then=st.lists(wamp_messages().map(lambda m: (json.dumps(m).encode(), False)), min_size=1, max_size=3),
    )
    def examples(first, then):
        lead = {
            "hello": HELLO,
            "goodbye": json.dumps([6, {}, "wamp.close.close_realm"]).encode(),
            "abort": json.dumps([3, {}, "wamp.close.normal"]).encode(),
        }[first]
        play(bridge, True, [(lead, False)] + then)

    examples()
    served_throughout(bridge, good)


def test_fuzz_frames(bridge, good):
    """Raw WebSocket-level garbage: bad opcodes, RSV bits, unmasked, fragmented control frames, junk."""

    @FUZZ
    @given(
        hello_first=st.booleans(),
        frames=st.lists(
            st.one_of(
                st.binary(max_size=64),  # bytes that are not frames
                st.builds(
                    lambda opcode, payload, fin, mask, rsv: encode_frame(opcode, payload, fin=fin, mask=mask, rsv=rsv),
                    st.integers(min_value=0, max_value=15),
                    st.binary(max_size=300),
                    st.booleans(),
                    st.booleans(),
                    st.integers(min_value=0, max_value=7),
                ),
            ),
            min_size=1,
            max_size=3,
        ),
    )
    def examples(hello_first, frames):
        play(bridge, hello_first, [], raw=b"".join(frames))

    examples()
    served_throughout(bridge, good)


def test_good_session_was_served_throughout(bridge, good):
    """Many hostile sessions at once (not one after another as above): the good session is still served."""
    cases = [
        (False, [(b"{{{", False)], None),  # not JSON, before HELLO
        (True, [(b"\x93\x01", True)], None),  # binary on a JSON session
        (True, [], b"\x00" * 64),  # not frames
        (True, [(json.dumps([48, 2**64, {}, "x"]).encode(), False)], None),  # an id over 2**53
        (True, [], None),  # only the probe
    ]

    async def burst():
        return await asyncio.gather(*(exchange(bridge["url"], *case) for _ in range(10) for case in cases))

    outcomes = bridge["loop"].run_until_complete(asyncio.wait_for(burst(), 60))
    assert len(outcomes) == 50 and set(outcomes) <= {"closed", "alive"} and "alive" in outcomes, outcomes
    served_throughout(bridge, good)
