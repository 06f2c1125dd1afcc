"""zmqwamp.transport.frames: the fast path for whole client data frames must do exactly what autobahn's parser does.

Unit tests of :func:`whole_data_frame`, then a differential test: the same
bytes, cut into the same reads, go to an autobahn server protocol with
:class:`WholeFrameReader` and to one without; the messages delivered, the bytes
sent back (pongs, close frames with their codes) and whether the connection is
being dropped must be the same.
"""

from __future__ import annotations

import os

import pytest
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zmqwamp import internals
from zmqwamp.testing import open_websocket
from zmqwamp.transport import frames as frames_module
from zmqwamp.transport.frames import FragmentLimit, WholeFrameReader, whole_data_frame

from minws import encode_frame

TEXT, BINARY, CONT, CLOSE, PING, PONG = 1, 2, 0, 8, 9, 10
KEY = b"\x12\x34\xab\xcd"


@pytest.mark.parametrize("length", [0, 1, 3, 4, 5, 125, 126, 127, 1000, 65535])
@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_whole_frame_is_read_and_unmasked(opcode, length):
    """A whole masked text or binary frame, of any length the limit allows, is read and unmasked in one go."""
    payload = (b"abcdefghij" * 6554)[:length]
    frame = encode_frame(opcode, payload, key=KEY)
    assert whole_data_frame(frame, 0, 65535) == (payload, opcode == BINARY, len(frame))


def test_frames_back_to_back_are_read_one_after_the_other():
    """Frames back to back in one read are taken one after the other; a partial frame at the end waits."""
    data = encode_frame(TEXT, b"one", key=KEY) + encode_frame(BINARY, b"\x00two", key=os.urandom(4)) + b"\x81"
    first = whole_data_frame(data, 0, 1000)
    assert first[:2] == (b"one", False)
    second = whole_data_frame(data, first[2], 1000)
    assert second[:2] == (b"\x00two", True)
    assert second[2] == len(data) - 1
    assert whole_data_frame(data, second[2], 1000) is None  # one byte of the next frame: wait for more


@pytest.mark.parametrize(
    "frame, why",
    [
        (encode_frame(TEXT, b"hello", fin=False, key=KEY), "a fragment"),
        (encode_frame(CONT, b"hello", key=KEY), "a continuation"),
        (encode_frame(PING, b"hello", key=KEY), "a ping"),
        (encode_frame(PONG, b"hello", key=KEY), "a pong"),
        (encode_frame(CLOSE, b"\x03\xe8", key=KEY), "a close"),
        (encode_frame(TEXT, b"hello", rsv=4, key=KEY), "RSV1 (compressed)"),
        (encode_frame(TEXT, b"hello", rsv=1, key=KEY), "RSV3"),
        (encode_frame(BINARY, b"hello", mask=False) + encode_frame(BINARY, b"next", key=KEY), "unmasked"),
        (encode_frame(TEXT, b"hello", key=KEY, length_bytes=2), "a 16-bit length under 126"),
        (encode_frame(TEXT, b"x" * 200, key=KEY, length_bytes=8), "a 64-bit length"),
        (encode_frame(TEXT, b"x" * 1001, key=KEY), "over the limit"),
        (encode_frame(TEXT, b"[\"\xff\"]", key=KEY), "text that is not UTF-8"),
        (encode_frame(TEXT, b"\xed\xa0\x80", key=KEY), "a UTF-16 surrogate in UTF-8"),
        (encode_frame(TEXT, b"\xc0\xaf", key=KEY), "an overlong encoding"),
        (encode_frame(0x3, b"hello", key=KEY), "a reserved opcode"),
    ],
)
def test_anything_else_is_left_to_autobahn(frame, why):
    """Fragments, control frames, reserved bits or opcodes, unmasked or oddly sized frames, over the limit, bad UTF-8: left to autobahn."""
    assert whole_data_frame(frame, 0, 1000) is None, why


def test_every_prefix_of_a_frame_waits_for_the_rest():
    """No prefix of a frame is taken for a frame: the fast path waits for the rest."""
    frame = encode_frame(TEXT, b"x" * 300, key=KEY)
    for cut in range(len(frame)):
        assert whole_data_frame(frame, 0, 1000) is not None
        assert whole_data_frame(frame[:cut], 0, 1000) is None, cut


def test_binary_payloads_need_not_be_utf8():
    """A binary frame's payload is taken as it is, UTF-8 or not."""
    frame = encode_frame(BINARY, b"\xff", key=KEY)
    assert whole_data_frame(frame, 0, 1000) == (b"\xff", True, len(frame))


# -- differential: the fast path against autobahn's own parser ---------------------------------------------


class Recording(WebSocketServerProtocol):
    """Records messages; a text message ``bye`` makes it start the closing handshake, as a session's ABORT does."""

    def onOpen(self) -> None:
        self.messages: list[tuple[bytes, bool]] = []
        if isinstance(self, WholeFrameReader):
            self.read_whole_frames()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.append((payload, isBinary))
        if payload == b"bye":
            self.sendClose(code=1000)
        elif payload == b"drop":
            self.dropConnection(abort=True)


class FastRecording(WholeFrameReader, Recording):
    pass


def open_protocol(cls, limit: int = 1000, validate_utf8: bool = True):
    factory = WebSocketServerFactory()
    factory.protocol = cls
    factory.setProtocolOptions(
        maxMessagePayloadSize=limit, maxFramePayloadSize=limit, failByDrop=False, utf8validateIncoming=validate_utf8,
        openHandshakeTimeout=0, closeHandshakeTimeout=0, autoPingInterval=0,
    )
    return open_websocket(factory)


def test_the_fast_path_is_taken():
    """The differential test below would pass with no fast path at all: make sure there is one."""
    proto, _ = open_protocol(FastRecording)
    calls = []
    frame_begin = proto.onFrameBegin
    proto.onFrameBegin = lambda: (calls.append("autobahn"), frame_begin())[1]
    proto.dataReceived(encode_frame(TEXT, b"[1]", key=KEY) + encode_frame(BINARY, b"\x01", key=KEY))
    assert proto.messages == [(b"[1]", False), (b"\x01", True)] and calls == []
    proto.dataReceived(encode_frame(PING, b"p", key=KEY) + encode_frame(TEXT, b"[2]", key=KEY))
    assert proto.messages[-1] == (b"[2]", False) and calls == ["autobahn", "autobahn"]  # after the ping: autobahn


def test_an_autobahn_without_the_internals_keeps_every_frame_in_its_parser(monkeypatch, log_events):
    """If autobahn renames a piece of parser state the fast path reads, frames go through autobahn's parser
    (still delivered), and that is logged once per process."""
    missing = "_renamed_in_a_future_autobahn"
    monkeypatch.setattr(frames_module, "AUTOBAHN_INTERNALS", (*frames_module.AUTOBAHN_INTERNALS, missing))
    monkeypatch.setattr(internals, "_warned", set())
    proto, _ = open_protocol(FastRecording)
    open_protocol(FastRecording)
    seen = [e for e in log_events if e.get("what") == "this autobahn's WebSocket protocol"]
    assert len(seen) == 1 and missing in seen[0]["missing"]
    calls = []
    frame_begin = proto.onFrameBegin
    proto.onFrameBegin = lambda: (calls.append("autobahn"), frame_begin())[1]
    proto.dataReceived(encode_frame(TEXT, b"[1]", key=KEY))
    assert proto.messages == [(b"[1]", False)] and calls == ["autobahn"]


def outcome(cls, reads: list[bytes], validate_utf8: bool = True):
    proto, transport = open_protocol(cls, validate_utf8=validate_utf8)
    for chunk in reads:
        if chunk:
            proto.dataReceived(chunk)
    return proto.messages, transport.value(), proto.state, transport.disconnecting


def split_after_header(frame: bytes) -> list[bytes]:
    return [frame[:6], frame[6:]]  # a masked frame with a 7-bit length: 2 bytes, then the 4-byte key


@pytest.mark.parametrize(
    "reads, why",
    [
        ([encode_frame(TEXT, b"frag", fin=False, key=KEY), encode_frame(TEXT, b"whole", key=KEY)],
         "a whole frame inside a fragmented message is a violation"),
        ([encode_frame(BINARY, b"frag", fin=False, key=KEY), encode_frame(PING, b"p", key=KEY),
          encode_frame(CONT, b"ment", key=KEY), encode_frame(TEXT, b"[1]", key=KEY)],
         "a ping between fragments, then the message ends and a whole frame follows"),
        (split_after_header(encode_frame(BINARY, encode_frame(TEXT, b"inner", key=KEY), key=b"\0\0\0\0")),
         "a payload that looks like a whole frame, in the read after its frame's header, is payload"),
        (split_after_header(encode_frame(PING, encode_frame(TEXT, b"inner", key=KEY), key=b"\0\0\0\0")),
         "the same for a ping's payload (a control frame: no message begun)"),
        ([encode_frame(TEXT, b"drop", key=KEY) + encode_frame(TEXT, b"after", key=KEY)], "nothing after a dropped connection"),
        ([encode_frame(TEXT, b"bye", key=KEY) + encode_frame(TEXT, b"after", key=KEY) + encode_frame(CLOSE, b"\x03\xe8", key=KEY)],
         "what comes while closing"),
    ],
)
def test_fast_path_does_what_autobahn_does_at_the_edges(reads, why):
    """At the edges (fragments around pings, a frame inside a payload, after a drop or a close) the fast path and autobahn agree."""
    assert outcome(FastRecording, reads) == outcome(Recording, reads), why


payloads = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=40).map(str.encode),
    st.binary(min_size=120, max_size=140),
    st.binary(min_size=990, max_size=1010),
    st.just(b"bye"),
)
frames = st.one_of(
    st.tuples(st.sampled_from([TEXT, BINARY]), payloads).map(lambda t: encode_frame(t[0], t[1], key=KEY)),
    st.tuples(st.sampled_from([TEXT, BINARY, CONT, PING, PONG, CLOSE, 3, 11]), payloads, st.booleans(),
              st.booleans(), st.integers(0, 7), st.sampled_from([0, 0, 2, 8])).map(
        lambda t: encode_frame(t[0], t[1][:125] if t[0] >= 8 else t[1], fin=t[2], mask=t[3], rsv=t[4], key=KEY,
                               length_bytes=t[5])),
    st.binary(min_size=1, max_size=8),  # junk
    st.tuples(st.sampled_from([TEXT, BINARY, CONT]), payloads, st.booleans()).map(  # fragments
        lambda t: encode_frame(t[0], t[1], fin=t[2], key=KEY)),
    st.tuples(st.sampled_from([PING, PONG]), st.binary(max_size=20)).map(lambda t: encode_frame(t[0], t[1], key=KEY)),
    st.just(encode_frame(CLOSE, b"\x03\xe8", key=KEY)),
    st.just(encode_frame(TEXT, b"drop", key=KEY)),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stream=st.lists(frames, min_size=1, max_size=8),
    cuts=st.one_of(st.none(), st.lists(st.integers(1, 2000), max_size=6)),
    validate_utf8=st.booleans(),
)
def test_fast_path_does_what_autobahn_does(stream, cuts, validate_utf8):
    """Reads cut anywhere, or one read per frame (so the fast path sees each frame start, as between fragments)."""
    if cuts is None:
        reads = stream
    else:
        data = b"".join(stream)
        reads, pos = [], 0
        for n in cuts:
            reads.append(data[pos:pos + n])
            pos += n
        reads.append(data[pos:])
    assert outcome(FastRecording, reads, validate_utf8) == outcome(Recording, reads, validate_utf8)


# -- frames per message (FragmentLimit) -----------------------------------------------------------


class Capped(FragmentLimit, FastRecording):
    max_message_fragments = 4


def fragmented(parts: list[bytes], opcode: int = TEXT) -> bytes:
    return b"".join(
        encode_frame(opcode if i == 0 else CONT, part, fin=i == len(parts) - 1, key=KEY) for i, part in enumerate(parts)
    )


def test_messages_of_up_to_max_message_fragments_frames_are_delivered():
    """The count is per message: two messages of 4 frames each, with a ping between fragments (not counted)."""
    first = fragmented([b"a", b"b", b"c", b"d"])
    ping_inside = (
        encode_frame(TEXT, b"w", fin=False, key=KEY) + encode_frame(PING, b"p", key=KEY)
        + encode_frame(CONT, b"x", fin=False, key=KEY) + encode_frame(CONT, b"y", fin=False, key=KEY)
        + encode_frame(CONT, b"z", key=KEY)
    )
    messages, sent, state, dropping = outcome(Capped, [first + ping_inside + encode_frame(TEXT, b"[1]", key=KEY)])
    assert messages == [(b"abcd", False), (b"wxyz", False), (b"[1]", False)]
    assert sent == b"\x8a\x01p" and not dropping  # the pong


def test_one_frame_over_max_message_fragments_closes_1009_and_reads_nothing_more():
    """The 5th frame of a message: close 1009 naming the limit, the connection dropped, what follows not parsed."""
    data = fragmented([b""] * 5 + [b"end"]) + encode_frame(TEXT, b"after", key=KEY)
    messages, sent, state, dropping = outcome(Capped, [data])
    assert messages == []
    assert sent[0] == 0x88 and sent[2:4] == (1009).to_bytes(2, "big") and b"max_message_fragments" in sent
    assert state == Capped.STATE_CLOSED and dropping


def test_without_autobahns_internals_max_message_fragments_holds(monkeypatch):
    """An autobahn without the parser state zmqwamp reads (failedByMe among it): the 5th frame still closes 1009
    and drops the connection, through autobahn's public close and drop."""
    monkeypatch.setattr(frames_module, "AUTOBAHN_INTERNALS", (*frames_module.AUTOBAHN_INTERNALS, "_renamed"))
    monkeypatch.setattr(internals, "_warned", set())
    data = fragmented([b""] * 5 + [b"end"]) + encode_frame(TEXT, b"after", key=KEY)
    messages, sent, state, dropping = outcome(Capped, [fragmented([b"a", b"b"]) + data])
    assert messages == [(b"ab", False)]
    assert sent[0] == 0x88 and sent[2:4] == (1009).to_bytes(2, "big") and b"max_message_fragments" in sent
    assert state == Capped.STATE_CLOSED and dropping
