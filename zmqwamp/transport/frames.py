"""Whole WebSocket data frames from a client, read without autobahn's frame machinery.

Nearly every frame a WAMP client sends is one small, final, masked text or
binary frame, and it usually arrives whole in one TCP read.  Autobahn parses
each one through ``processData`` twice (header, then payload), ``onFrameBegin``,
``onFrameData``, ``onFrameEnd``, ``onMessageBegin`` ... ``onMessageEnd`` and an
observer signal.  Reading such frames here took the bridge's CPU per call from
78 to 62 us with 16 sessions of one call each, and from 56 to 35 us with 64
calls over 16 sessions (bench runs of the old and the new code, alternating).

:func:`whole_data_frame` reads such a frame, only such a frame, and stops at
anything else: a frame not complete yet, a control frame (ping, pong, close),
a fragment, RSV bits, an unmasked frame, a 64-bit length, a non-minimal
length, a payload over the limit, or text that is not UTF-8.  The caller
hands everything from there on to autobahn's parser, which handles and
rejects those exactly as before (1002, 1007, 1009 ...).  So the fast path
never has to decide anything about a bad frame.
"""

from __future__ import annotations

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.util import encode_truncate

from zmqwamp.internals import lacks

_TEXT = 0x81  # FIN, no RSV bits, opcode 1
_BINARY = 0x82  # FIN, no RSV bits, opcode 2


def whole_data_frame(data: bytes, pos: int, max_payload: int) -> tuple[bytes, bool, int] | None:
    """The complete, final, masked data frame at ``data[pos:]``: ``(payload, is_binary, end)``, or None.

    None means: not such a frame (or not all of it yet); leave it to autobahn.
    ``end`` is where the next frame starts.
    """
    if len(data) - pos < 6:
        return None
    first = data[pos]
    if first != _TEXT and first != _BINARY:
        return None
    second = data[pos + 1]
    if not second & 0x80:  # unmasked: a protocol violation autobahn reports
        return None
    length = second & 0x7F
    if length < 126:
        start = pos + 2
    elif length == 126:
        length = (data[pos + 2] << 8) | data[pos + 3]
        if length < 126:  # not the minimal encoding: autobahn reports it
            return None
        start = pos + 4
    else:
        return None
    if length > max_payload:
        return None
    end = start + 4 + length
    if end > len(data):
        return None
    if length:
        mask = (data[start : start + 4] * (length // 4 + 1))[:length]
        payload = (int.from_bytes(data[start + 4 : end], "little") ^ int.from_bytes(mask, "little")).to_bytes(
            length, "little"
        )
    else:
        payload = b""
    if first == _TEXT:
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:  # autobahn closes with 1007 (or delivers it, if told not to check)
            return None
    return payload, first == _BINARY, end


# What zmqwamp reads of autobahn's WebSocketProtocol beyond its documented interface (IWebSocketChannel, the
# protocol options): the parser's state (whole frames, control frames, has the connection failed) and what
# decides whether a frame may skip sendMessage (compression, timings, autobahn's own send queue).
AUTOBAHN_INTERNALS = (
    "_dataReceived",
    "data",
    "current_frame",
    "inside_message",
    "autoPingPending",
    "failedByMe",
    "send_queue",
    "_perMessageCompress",
    "trackedTimings",
)
# and of a control frame (autobahn makes it at the first one: checked then)
AUTOBAHN_CONTROL_FRAME = ("control_frame_data",)
AUTOBAHN = "this autobahn's WebSocket protocol"


class AutobahnInternals(WebSocketServerProtocol):
    """Autobahn's ``WebSocketServerProtocol``, and whether zmqwamp may read its internals on this connection.

    :attr:`reads_internals` asks :func:`~zmqwamp.internals.lacks` once per connection (after
    autobahn's ``connectionMade`` has made its state).  Without them, every frame
    goes through autobahn's parser and ``sendMessage``, and the limits on control
    frames apply in ``onPing``/``onPong``: slower, and autobahn logs each pong it
    did not ask for (:mod:`zmqwamp.transport.websocket`).
    """

    # autobahn's protocol options, set on each protocol from its factory's (setProtocolOptions)
    logFrames: bool
    logOctets: bool
    autoFragmentSize: int
    maskServerFrames: bool
    maxFramePayloadSize: int
    maxMessagePayloadSize: int

    _internals: bool | None = None  # reads_internals, once asked
    _control_internals: bool | None = None  # reads_control_frames, once asked
    _failing = False  # closed by close_and_drop

    @property
    def reads_internals(self) -> bool:
        """Does this autobahn have all of :data:`AUTOBAHN_INTERNALS`?"""
        known = self._internals
        if known is None:
            fallback = "every frame goes through its parser and sendMessage (slower)"
            known = self._internals = not lacks(self, AUTOBAHN_INTERNALS, AUTOBAHN, fallback)
        return known

    @property
    def reads_control_frames(self) -> bool:
        """And :data:`AUTOBAHN_CONTROL_FRAME`?  Ask only once autobahn reads a control frame."""
        known = self._control_internals
        if known is None:
            fallback = "pings and pongs go through its own processControlFrame"
            known = self.reads_internals and not lacks(self, AUTOBAHN_CONTROL_FRAME, AUTOBAHN, fallback)
            self._control_internals = known
        return known

    @property
    def failing(self) -> bool:
        """Is this connection being failed: by :meth:`close_and_drop`, or by autobahn (a protocol error)?"""
        return self._failing or (self.reads_internals and self.failedByMe)

    def close(self, code: int, reason: str | None) -> None:
        """A close frame with any code (autobahn's ``sendClose`` refuses 1001, 1008, 1009)."""
        self.sendCloseFrame(code=code, reasonUtf8=encode_truncate(reason, 123) if reason else None, isReply=False)

    def close_and_drop(self, code: int, reason: str) -> None:
        """Close with ``code`` and ``reason``, then drop the TCP connection: what the client still sends is not
        parsed, and autobahn delivers nothing more.  Its warning on dropping says why."""
        self._failing = True
        if self.reads_internals:
            self.failedByMe = True
        self.wasNotCleanReason = reason
        self.close(code, reason)
        self.dropConnection(abort=False)


class WholeFrameReader(AutobahnInternals):
    """Autobahn's ``WebSocketServerProtocol``, whole data frames straight to ``onMessage``.

    Call :meth:`read_whole_frames` in ``onOpen``.  Only between frames (autobahn
    holds no part of a frame or message) on an open connection; the first frame
    :func:`whole_data_frame` does not take, and all after it in that read, go to
    autobahn's parser, as does everything once the connection is closing.
    """

    _frame_limit = 0  # the largest payload read here; 0: all frames through autobahn

    def read_whole_frames(self, max_payload: int = 0) -> None:
        """Take the fast path from now on, unless autobahn must see every frame (compression, logging, timings).

        Frames over ``max_payload`` bytes (0: autobahn's own limits) are left to
        autobahn's parser, so that its ``onMessageFrameBegin`` sees their length
        before their payload is read; call again to change it.  It reads
        autobahn's parser state (:data:`AUTOBAHN_INTERNALS`): an autobahn without
        one of them keeps every frame in its own parser (logged once per process).
        """
        if not self.reads_internals:
            return
        if self._perMessageCompress is None and not self.logFrames and not self.logOctets and not self.trackedTimings:
            limits = (max_payload, self.maxFramePayloadSize, self.maxMessagePayloadSize, 0xFFFF)
            self._frame_limit = min(x for x in limits if x)

    def _dataReceived(self, data: bytes) -> None:
        limit = self._frame_limit
        if (
            limit
            and self.state == self.STATE_OPEN
            and not self.data
            and self.current_frame is None
            and not self.inside_message
        ):
            pos = 0
            while True:
                frame = whole_data_frame(data, pos, limit)
                if frame is None:
                    break
                payload, is_binary, pos = frame
                self.onMessage(payload, is_binary)
                if self.state != self.STATE_OPEN:  # closing: autobahn reads the rest (the close reply)
                    break
            if pos:
                data = data[pos:]
                if not data:
                    return
        super()._dataReceived(data)


class FragmentLimit(AutobahnInternals):
    """Autobahn's ``WebSocketServerProtocol``, at most ``max_message_fragments`` frames per message.

    Autobahn bounds a message's bytes, not its frames: 300,042 one-byte
    fragments cost 3.2 s of CPU, 1,000,000 empty continuation frames 5.1 s
    (each frame goes through its parser, and the unparsed rest of a read is
    copied per frame).  Browsers never fragment what they send.  One frame
    over the limit closes the connection with 1009 (message too big: the
    code for a message an endpoint will not take in, here by its number of
    frames) and drops it after the close frame, so the frames still coming
    are discarded unparsed.  Whole frames (:class:`WholeFrameReader`) are
    single-frame messages and never get here.
    """

    max_message_fragments = 64
    _fragments = 0  # frames of the message being received

    def onMessageBegin(self, isBinary: bool) -> None:
        self._fragments = 0
        super().onMessageBegin(isBinary)

    def onMessageFrameBegin(self, length: int) -> None:
        self._fragments += 1
        if self._fragments > self.max_message_fragments and not self.failing:
            self.message_fragments_exceeded()
            return
        super().onMessageFrameBegin(length)

    def message_fragments_exceeded(self) -> None:
        """Close with 1009, then drop the connection: what the client still sends is not parsed."""
        reason = f"max_message_fragments: a message of more than {self.max_message_fragments} frames"
        self.close_and_drop(self.CLOSE_STATUS_CODE_MESSAGE_TOO_BIG, reason)
