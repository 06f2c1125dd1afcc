"""The anchor's forwarder: what a team would run today instead of zmqwamp.

A WAMP component embedded in the Crossbar router worker (``type: class``, so
INVOCATION/YIELD and PUBLISH do not cross a socket), doing the same ZeroMQ work
as zmqwamp, written as well as we can:

* CALL -> one shared ``zmq.DEALER`` to the REP (message-id envelope, many
  requests in flight, replies matched by id, a per-call timeout like zmqwamp's);
  no socket per call.
* one ``zmq.SUB`` to the PUB -> ``session.publish(topic, ...)`` (unacknowledged).
* the same "auto" codec as zmqwamp: str -> UTF-8 frame; a reply/event frame is
  JSON if it parses, else text, else bytes.
* the zmq sockets' FDs sit in the Twisted reactor directly (no txZMQ); each
  wakeup drains every pending message (the FD is edge-triggered), and sends are
  followed by a check for pending input.

Configured through the component's ``extra``: rep, pub, procedure, topic, timeout.
Runs in Crossbar's own virtualenv (bench/.crossbar-venv), never in the project's.
"""

from __future__ import annotations

import itertools
import json

import zmq
from autobahn.twisted.wamp import ApplicationSession
from autobahn.wamp.types import PublishOptions, RegisterOptions
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReadDescriptor
from zope.interface import implementer


def _reject_constant(name):
    raise ValueError(name)


def decode_frame(frame: bytes):
    try:
        return json.loads(frame, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        pass
    try:
        return frame.decode("utf-8")
    except UnicodeDecodeError:
        return frame


def encode_arg(value) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@implementer(IReadDescriptor)
class ZmqReader:
    """A zmq socket's FD in the reactor; drains all pending messages per wakeup."""

    BATCH = 1000  # then yield to the reactor and come back

    def __init__(self, sock: zmq.Socket, on_message) -> None:
        self.sock = sock
        self._fd = sock.getsockopt(zmq.FD)
        self._on_message = on_message
        self._scheduled = False
        reactor.addReader(self)

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "zmq"

    def connectionLost(self, reason) -> None:
        pass

    def doRead(self) -> None:
        self._scheduled = False
        recv, on_message = self.sock.recv_multipart, self._on_message
        for _ in range(self.BATCH):
            try:
                frames = recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            on_message(frames)
        self.kick()

    def kick(self) -> None:
        """Read soon if input is pending (after a send, or a capped batch)."""
        if not self._scheduled and self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            self._scheduled = True
            reactor.callLater(0, self.doRead)

    def close(self) -> None:
        reactor.removeReader(self)
        self.sock.close(linger=0)


class Forwarder(ApplicationSession):
    @inlineCallbacks
    def onJoin(self, details):
        extra = self.config.extra
        self._timeout = float(extra.get("timeout", 10.0))
        self._topic = extra["topic"]
        ctx = zmq.Context.instance()

        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.SNDHWM, 1000)
        dealer.connect(extra["rep"])
        self._send = dealer.send_multipart
        self._pending: dict[bytes, tuple[Deferred, object]] = {}
        self._ids = itertools.count(1)
        self._dealer = ZmqReader(dealer, self._reply)

        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 10000)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(extra["pub"])
        self._publish_options = PublishOptions(acknowledge=False)
        self._sub = ZmqReader(sub, self._event)

        yield self.register(self.forward, extra["procedure"], options=RegisterOptions(details_arg=None))
        print(f"FORWARDER READY procedure={extra['procedure']} topic={self._topic}", flush=True)

    # CALL -> zmq request
    def forward(self, *args):
        rid = b"%x" % next(self._ids)
        frames = [rid, b"", *map(encode_arg, args)] if args else [rid, b"", b""]
        d = Deferred(lambda _: self._forget(rid))
        timer = reactor.callLater(self._timeout, self._expire, rid)
        self._pending[rid] = (d, timer)
        self._send(frames, zmq.NOBLOCK)
        self._dealer.kick()
        return d

    def _reply(self, frames):
        entry = self._pending.pop(frames[0], None)
        if entry is None:
            return  # late reply: its call timed out
        d, timer = entry
        timer.cancel()
        args = [decode_frame(f) for f in frames[2:]]
        d.callback(args[0] if len(args) == 1 else args)

    def _expire(self, rid):
        entry = self._pending.pop(rid, None)
        if entry is not None:
            entry[0].errback(Exception(f"no reply within {self._timeout}s"))

    def _forget(self, rid):
        entry = self._pending.pop(rid, None)
        if entry is not None and entry[1].active():
            entry[1].cancel()

    # zmq SUB -> WAMP publish
    def _event(self, frames):
        self.publish(self._topic, *[decode_frame(f) for f in frames], options=self._publish_options)

    def onLeave(self, details):
        self._dealer.close()
        self._sub.close()
        super().onLeave(details)
