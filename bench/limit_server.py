"""The limit: a minimal WAMP-over-WebSocket server with no ZeroMQ at all.

Same reactor (Twisted epoll) and WebSocket layer (autobahn) as zmqwamp, doing
the least a WAMP router can: HELLO -> WELCOME, CALL -> a canned RESULT
(["got this hello"]), SUBSCRIBE -> SUBSCRIBED (one subscription id for all),
GOODBYE -> GOODBYE.  Fan-out: "STEP <step> <rate> <duration> <w0> <w1>" on
stdin publishes like bench/timed_pub.py does, but each EVENT is serialized once
per serializer and sent as one prepared WebSocket message to every subscriber;
prints "DONE <step> <count>".

    python bench/limit_server.py [--port 0]      # prints "LISTENING <port>"
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from twisted.internet import epollreactor

epollreactor.install()

from autobahn.twisted.websocket import ConnectionDeny, WebSocketServerFactory, WebSocketServerProtocol  # noqa: E402
from autobahn.wamp.serializer import CBORObjectSerializer, JsonObjectSerializer, MsgPackObjectSerializer  # noqa: E402
from twisted.internet import reactor, stdio  # noqa: E402
from twisted.protocols.basic import LineReceiver  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import event_payload  # noqa: E402

SERIALIZERS = {
    "wamp.2.json": JsonObjectSerializer(),
    "wamp.2.msgpack": MsgPackObjectSerializer(),
    "wamp.2.cbor": CBORObjectSerializer(),
}
CANNED = ["got this hello"]
SUBSCRIPTION = 1
ROLES = {"roles": {"broker": {"features": {}}, "dealer": {"features": {}}}, "authmethod": "anonymous",
         "authrole": "anonymous", "authid": "limit"}

HELLO, WELCOME, GOODBYE, CALL, RESULT, SUBSCRIBE, SUBSCRIBED, UNSUBSCRIBE, UNSUBSCRIBED, EVENT, ERROR = (
    1, 2, 6, 48, 50, 32, 33, 34, 35, 36, 8)


class LimitProtocol(WebSocketServerProtocol):
    serializer = None
    subscribed = False

    def onConnect(self, request):
        for offered in request.protocols:
            if offered in SERIALIZERS:
                return offered
        raise ConnectionDeny(ConnectionDeny.BAD_REQUEST, "no WAMP subprotocol")

    def onOpen(self):
        self.serializer = SERIALIZERS[self.websocket_protocol_in_use]
        self.factory.sessions += 1

    def onMessage(self, payload, isBinary):
        ser = self.serializer
        for msg in ser.unserialize(payload):
            kind = msg[0]
            if kind == CALL:
                self.sendMessage(ser.serialize([RESULT, msg[1], {}, CANNED]), isBinary)
            elif kind == HELLO:
                self.factory.next_session += 1
                self.sendMessage(ser.serialize([WELCOME, self.factory.next_session, ROLES]), isBinary)
            elif kind == SUBSCRIBE:
                self.subscribed = True
                self.factory.subscribers.setdefault(self.websocket_protocol_in_use, set()).add(self)
                self.sendMessage(ser.serialize([SUBSCRIBED, msg[1], SUBSCRIPTION]), isBinary)
            elif kind == UNSUBSCRIBE:
                self._unsubscribe()
                self.sendMessage(ser.serialize([UNSUBSCRIBED, msg[1]]), isBinary)
            elif kind == GOODBYE:
                self.sendMessage(ser.serialize([GOODBYE, {}, "wamp.close.goodbye_and_out"]), isBinary)
                self.sendClose(1000)
            else:
                self.sendMessage(ser.serialize([ERROR, kind, msg[1] if len(msg) > 1 else 0, {}, "limit.error.not_supported"]), isBinary)

    def _unsubscribe(self):
        if self.subscribed:
            self.factory.subscribers.get(self.websocket_protocol_in_use, set()).discard(self)
            self.subscribed = False

    def onClose(self, wasClean, code, reason):
        if self.serializer is not None:
            self.factory.sessions -= 1
            self._unsubscribe()


class LimitFactory(WebSocketServerFactory):
    protocol = LimitProtocol

    def __init__(self):
        super().__init__(protocols=list(SERIALIZERS))
        self.setProtocolOptions(openHandshakeTimeout=10, closeHandshakeTimeout=5)
        self.subscribers: dict[str, set] = {}
        self.sessions = 0
        self.next_session = 0
        self.publication = 0

    def broadcast(self, payload: dict) -> None:
        self.publication += 1
        msg = [EVENT, SUBSCRIPTION, self.publication, {}, [payload]]
        for name, subs in self.subscribers.items():
            if not subs:
                continue
            ser = SERIALIZERS[name]
            prepared = self.prepareMessage(ser.serialize(msg), ser.BINARY)
            for proto in subs:
                proto.sendPreparedMessage(prepared)


class Control(LineReceiver):
    delimiter = b"\n"

    def __init__(self, factory: LimitFactory):
        self.ws = factory

    def lineReceived(self, line):
        cmd = line.decode().split()
        if not cmd:
            return
        if cmd[0] == "QUIT":
            reactor.stop()
        elif cmd[0] == "STEP":
            step, rate, duration, w0, w1 = int(cmd[1]), float(cmd[2]), float(cmd[3]), float(cmd[4]), float(cmd[5])
            Pacer(self, step, rate, duration, w0, w1).tick()

    def connectionLost(self, reason):
        if reactor.running:
            reactor.stop()


class Pacer:
    """rate*duration broadcasts, paced on the reactor (same catch-up rule as common.paced)."""

    def __init__(self, control: Control, step, rate, duration, w0, w1):
        self.control, self.step, self.rate, self.duration, self.w0, self.w1 = control, step, rate, duration, w0, w1
        self.total = int(rate * duration)
        self.sent = 0
        self.start = time.monotonic()

    def tick(self):
        now = time.monotonic()
        due = min(self.total, int((now - self.start) * self.rate) + 1)
        if now - self.start > self.duration + 5.0:
            due = self.sent  # hopelessly behind: stop
            self.total = self.sent
        broadcast = self.control.ws.broadcast
        while self.sent < due:
            broadcast(event_payload(self.step, self.sent, self.w0, self.w1))
            self.sent += 1
        if self.sent >= self.total:
            self.control.sendLine(f"DONE {self.step} {self.sent}".encode())
            return
        delay = self.start + self.sent / self.rate - time.monotonic()
        reactor.callLater(max(0.0, min(delay, 0.05)), self.tick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--backlog", type=int, default=1024)
    args = parser.parse_args()
    factory = LimitFactory()
    port = reactor.listenTCP(args.port, factory, backlog=args.backlog, interface="127.0.0.1")
    print(f"LISTENING {port.getHost().port}", flush=True)
    stdio.StandardIO(Control(factory))
    reactor.run()


if __name__ == "__main__":
    main()
