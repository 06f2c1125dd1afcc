"""The bench's load generator: an autobahn-python (asyncio) WAMP client.

The same program drives every target (zmqwamp, Crossbar + forwarder, the limit
server); only --url, --realm, --procedure and --topic differ.  Two clients:

* ``--client lean`` (default for rpc/sub/idle): autobahn's asyncio
  WebSocketClientProtocol and autobahn's WAMP serializers, with the WAMP
  caller/subscriber side written out (HELLO, CALL/RESULT, SUBSCRIBE/EVENT) and
  no Future per call: about 2.5x less client CPU per call than
  ApplicationSession, so the 2-core machine spends its CPU on the servers.
* ``--client session``: the stock ``ApplicationSession`` (always used by probe,
  so every target is checked with the unmodified client first).

The bench (run.py: targets.py starts, scenarios.py drives) runs one or several of these
processes and talks to them on stdin/stdout:

  probe  join, CALL --procedure once, print the reply, leave.
  rpc    join --sessions sessions, print READY, wait for "GO <t0> <t1>" on stdin
         (CLOCK_MONOTONIC seconds, shared by all processes on this machine),
         keep --inflight calls in flight (spread over the sessions) until t1,
         print RESULT {ok, errors, hist}: completions and latencies in [t0, t1].
  sub    join --sessions sessions, each subscribing --topic, print READY; for each
         "REPORT <step>" print RESULT {step stats}; "QUIT" ends.  Events carry
         {"s": step, "n": seq, "t": publish time, "w0", "w1": measure window}.
  idle   join --sessions sessions, print READY joined=<n> failed=<n>, hold them
         until "QUIT" (or stdin closes).

Every loop is bounded by time; the process exits by itself after --max-seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from urllib.parse import urlparse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from autobahn.asyncio.wamp import ApplicationSession  # noqa: E402
from autobahn.asyncio.websocket import (  # noqa: E402
    WampWebSocketClientFactory,
    WebSocketClientFactory,
    WebSocketClientProtocol,
)
from autobahn.wamp import serializer as ser  # noqa: E402
from autobahn.wamp.types import ComponentConfig  # noqa: E402
from common import hist_add  # noqa: E402

SERIALIZERS = {"json": ser.JsonSerializer, "msgpack": ser.MsgPackSerializer, "cbor": ser.CBORSerializer}


class Session(ApplicationSession):
    def __init__(self, config, joined: asyncio.Future) -> None:
        super().__init__(config)
        self._joined = joined

    def onConnect(self):
        self.join(self.config.realm)

    def onJoin(self, details):
        if not self._joined.done():
            self._joined.set_result(self)

    def onLeave(self, details):
        if not self._joined.done():
            self._joined.set_exception(RuntimeError(f"session ended: {details.reason} {details.message}"))
        self.disconnect()

    def onDisconnect(self):
        if not self._joined.done():
            self._joined.set_exception(RuntimeError("transport closed before WELCOME"))


async def connect(url: str, realm: str, serializer: str, timeout: float = 15.0) -> Session:
    loop = asyncio.get_running_loop()
    joined = loop.create_future()
    factory = WampWebSocketClientFactory(
        lambda: Session(ComponentConfig(realm), joined), url=url, serializers=[SERIALIZERS[serializer]()]
    )
    factory.setProtocolOptions(openHandshakeTimeout=timeout, autoPingInterval=0)
    parsed = urlparse(url)
    transport, _ = await asyncio.wait_for(loop.create_connection(factory, parsed.hostname, parsed.port), timeout)
    try:
        return await asyncio.wait_for(joined, timeout)
    except BaseException:
        transport.abort()
        raise


# -- the lean client -------------------------------------------------------------
HELLO, WELCOME, ABORT, GOODBYE, ERROR, SUBSCRIBE, SUBSCRIBED, EVENT, CALL, RESULT = 1, 2, 3, 6, 8, 32, 33, 36, 48, 50
OBJ_SERIALIZERS = {"json": ser.JsonObjectSerializer, "msgpack": ser.MsgPackObjectSerializer, "cbor": ser.CBORObjectSerializer}
HELLO_DETAILS = {"roles": {"caller": {}, "subscriber": {}}}


class LeanStats:
    """Shared by all lean sessions of a process."""

    def __init__(self) -> None:
        self.hist: dict = {}
        self.ok = self.errors = self.calls = 0
        self.first_error: list[str] = []
        self.t0 = self.t1 = 0.0
        self.outstanding = 0
        self.drained: asyncio.Future | None = None
        self.on_event = None


class LeanSession(WebSocketClientProtocol):
    def __init__(self) -> None:
        super().__init__()
        loop = asyncio.get_event_loop()
        self.joined = loop.create_future()
        self.subscribed = loop.create_future()
        self.pending: dict[int, float] = {}
        self.next_id = 1

    def onOpen(self) -> None:
        f = self.factory
        self.sendMessage(f.ser.serialize([HELLO, f.realm, HELLO_DETAILS]), f.ser.BINARY)

    def onClose(self, wasClean, code, reason) -> None:
        if not self.joined.done():
            self.joined.set_exception(RuntimeError(f"closed before WELCOME: {code} {reason}"))
        if not self.subscribed.done():
            self.subscribed.set_exception(RuntimeError(f"closed before SUBSCRIBED: {code} {reason}"))
        stats = self.factory.stats
        if self.pending:
            stats.errors += len(self.pending)
            stats.outstanding -= len(self.pending)
            self.pending.clear()
            if stats.first_error == []:
                stats.first_error.append(f"connection closed: {code} {reason}")
            self._maybe_drained()

    def call(self) -> None:
        rid = self.next_id
        self.next_id += 1
        self.pending[rid] = time.monotonic()
        self.factory.stats.outstanding += 1
        f = self.factory
        self.sendMessage(f.ser.serialize([CALL, rid, {}, f.procedure, [f.payload]]), f.ser.BINARY)

    def subscribe(self, topic: str) -> None:
        self.sendMessage(self.factory.ser.serialize([SUBSCRIBE, 1, {}, topic]), self.factory.ser.BINARY)

    def _maybe_drained(self) -> None:
        stats = self.factory.stats
        if stats.outstanding == 0 and stats.drained is not None and not stats.drained.done():
            stats.drained.set_result(None)

    # Fast path for received frames, once the session is up (see data_received).
    want_fast = False  # set at WELCOME (unless --autobahn-frames)
    fast = False  # in use: autobahn's buffers were empty when data arrived
    _tail = b""

    def data_received(self, data: bytes) -> None:
        """Read the server's frames here once nothing is left in autobahn's own buffers.

        Autobahn's asyncio adapter costs a Future and a callback per received
        chunk, and its frame parser ~20 us per frame in Python: with 1,000
        subscribers on 2 cores that, not the server, set the fan-out ceiling for
        every target.  Server frames are unmasked, so reading the final text or
        binary frames that carry WAMP messages is a few lines; anything else (a
        ping, a close, a fragment) hands the rest back to autobahn until its
        buffers are empty again.
        """
        if not self.fast:
            if self.want_fast and not self.receive_queue and not self.data and self.current_frame is None:
                self.fast = True
            else:
                return super().data_received(data)
        buf = self._tail + data if self._tail else data
        n, i = len(buf), 0
        while n - i >= 2:
            b0, b1 = buf[i], buf[i + 1]
            size, head = b1 & 0x7F, 2
            if size == 126:
                if n - i < 4:
                    break
                size, head = int.from_bytes(buf[i + 2:i + 4], "big"), 4
            elif size == 127:
                if n - i < 10:
                    break
                size, head = int.from_bytes(buf[i + 2:i + 10], "big"), 10
            if b0 & 0x8F not in (0x81, 0x82) or b1 & 0x80:  # not a final text/binary frame, or masked
                # autobahn takes it from here (a ping gets its pong); the fast path
                # resumes once autobahn's buffers are empty again
                self.fast = False
                self._tail = b""
                return super().data_received(buf[i:])
            end = i + head + size
            if end > n:
                break
            self.handle(self.decode(buf[i + head:end]))
            i = end
        self._tail = buf[i:] if i < n else b""

    def decode(self, payload: bytes) -> list:
        """The WAMP messages in a payload; JSON with the stdlib's C decoder unless it carries WAMP binary."""
        ser = self.factory.ser
        if ser.NAME == "json" and b"\\u0000" not in payload:
            return [json.loads(payload)]
        return ser.unserialize(payload)

    def onMessage(self, payload, isBinary) -> None:
        self.handle(self.decode(payload))

    def handle(self, messages: list) -> None:
        stats = self.factory.stats
        for msg in messages:
            kind = msg[0]
            if kind == EVENT:
                args = msg[4] if len(msg) > 4 else None
                stats.on_event(args[0] if args else None)
            elif kind == RESULT or (kind == ERROR and msg[1] == CALL):
                rid = msg[1] if kind == RESULT else msg[2]
                sent = self.pending.pop(rid, None)
                if sent is None:
                    continue
                stats.outstanding -= 1
                now = time.monotonic()
                if kind == RESULT:
                    stats.calls += 1
                    if stats.t0 <= now <= stats.t1:
                        stats.ok += 1
                        hist_add(stats.hist, now - sent)
                    if now < stats.t1:
                        self.call()
                else:
                    stats.errors += 1
                    if not stats.first_error:
                        stats.first_error.append(f"ERROR {msg[4] if len(msg) > 4 else msg}")
                    if now < stats.t1:
                        asyncio.get_event_loop().call_later(0.01, self._retry)
                self._maybe_drained()
            elif kind == WELCOME:
                self.want_fast = self.factory.fast_frames
                self.joined.set_result(self)
            elif kind == SUBSCRIBED:
                self.subscribed.set_result(msg[2])
            elif kind == ERROR and msg[1] == SUBSCRIBE:
                self.subscribed.set_exception(RuntimeError(f"SUBSCRIBE refused: {msg[4:]}"))
            elif kind == ABORT:
                if not self.joined.done():
                    self.joined.set_exception(RuntimeError(f"ABORT {msg[2:]}"))
            elif kind == GOODBYE:
                self.sendClose(1000)

    def _retry(self) -> None:
        if time.monotonic() < self.factory.stats.t1 and self.state == self.STATE_OPEN:
            self.call()


_lean_factories: dict = {}


def lean_factory(args) -> WebSocketClientFactory:
    key = args.serializer
    f = _lean_factories.get(key)
    if f is None:
        obj = OBJ_SERIALIZERS[args.serializer]()
        f = WebSocketClientFactory(url=args.url, protocols=[f"wamp.2.{obj.NAME}"])
        f.protocol = LeanSession
        f.setProtocolOptions(openHandshakeTimeout=15, autoPingInterval=0)
        f.ser = obj
        f.realm = args.realm
        f.procedure = args.procedure
        f.payload = args.payload
        f.stats = LeanStats()
        f.fast_frames = not args.autobahn_frames
        _lean_factories[key] = f
    return f


async def connect_lean(args, timeout: float = 15.0) -> LeanSession:
    loop = asyncio.get_running_loop()
    parsed = urlparse(args.url)
    transport, proto = await asyncio.wait_for(loop.create_connection(lean_factory(args), parsed.hostname, parsed.port), timeout)
    try:
        return await asyncio.wait_for(proto.joined, timeout)
    except BaseException:
        transport.abort()
        raise


async def connect_many(args, count: int) -> tuple[list[Session], list[str]]:
    sem = asyncio.Semaphore(args.connect_concurrency)
    errors: list[str] = []

    async def one():
        async with sem:
            try:
                if args.client == "lean":
                    return await connect_lean(args)
                return await connect(args.url, args.realm, args.serializer)
            except Exception as e:  # counted, reported
                errors.append(f"{type(e).__name__}: {e}")
                return None

    sessions = await asyncio.gather(*(one() for _ in range(count)))
    return [s for s in sessions if s is not None], errors


async def stdin_lines():
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            return
        yield line.decode().strip()


def leave(sessions) -> None:
    """Not measured: close without ceremony (the process exits right after)."""
    for s in sessions:
        if isinstance(s, ApplicationSession):
            if s.is_attached():
                s.leave()
        elif s.transport is not None:
            s.transport.abort()


def emit(tag: str, obj) -> None:
    sys.stdout.write(f"{tag} {json.dumps(obj)}\n")
    sys.stdout.flush()


# -- modes ---------------------------------------------------------------------
async def probe(args) -> None:
    session = await connect(args.url, args.realm, args.serializer)
    reply = await asyncio.wait_for(session.call(args.procedure, args.payload), 10)
    emit("RESULT", {"reply": reply})
    session.leave()
    await asyncio.sleep(0.05)


async def rpc(args) -> None:
    sessions, errors = await connect_many(args, args.sessions)
    if errors:
        emit("FAILED", {"joined": len(sessions), "errors": errors[:5]})
        return
    print(f"READY sessions={len(sessions)}", flush=True)
    lines = stdin_lines()
    go = await asyncio.wait_for(lines.__anext__(), args.max_seconds)
    _, t0, t1 = go.split()
    t0, t1 = float(t0), float(t1)
    loop = asyncio.get_running_loop()
    now = time.monotonic
    hist: dict = {}
    stats = {"ok": 0, "errors": 0, "calls": 0}
    first_error: list[str] = []
    proc, payload = args.procedure, args.payload

    async def slot(session: Session) -> None:
        call = session.call
        while True:
            s = now()
            if s >= t1:
                return
            try:
                await call(proc, payload)
            except Exception as e:
                stats["errors"] += 1
                if not first_error:
                    first_error.append(f"{type(e).__name__}: {e}")
                await asyncio.sleep(0.01)
                continue
            e = now()
            stats["calls"] += 1
            if t0 <= e <= t1:
                stats["ok"] += 1
                hist_add(hist, e - s)

    if args.client == "lean":
        stats = lean_factory(args).stats
        stats.t0, stats.t1 = t0, t1
        for i in range(args.inflight):
            sessions[i % len(sessions)].call()
        await asyncio.sleep(max(0.0, t1 - now()))
        if stats.outstanding:
            stats.drained = loop.create_future()
            try:
                await asyncio.wait_for(stats.drained, 10.0)
            except TimeoutError:
                pass
        emit("RESULT", {"ok": stats.ok, "errors": stats.errors, "calls": stats.calls, "stuck": stats.outstanding,
                        "hist": stats.hist, "first_error": stats.first_error[:1]})
        return

    slots = [sessions[i % len(sessions)] for i in range(args.inflight)]
    tasks = [loop.create_task(slot(s)) for s in slots]
    done, pending = await asyncio.wait(tasks, timeout=max(0.0, t1 - now()) + 10.0)
    for t in pending:
        t.cancel()
    emit("RESULT", {**stats, "stuck": len(pending), "hist": hist, "first_error": first_error[:1]})
    leave(sessions)


async def sub(args) -> None:
    now = time.monotonic
    steps: dict = {}

    def on_event(payload, *rest):
        t = now()
        try:
            step = payload["s"]
        except (TypeError, KeyError):
            return
        st = steps.get(step)
        if st is None:
            st = steps[step] = {"total": 0, "window": 0, "hist": {}, "last": 0.0}
        st["total"] += 1
        st["last"] = t
        if payload["w0"] <= t <= payload["w1"]:
            st["window"] += 1
        hist_add(st["hist"], t - payload["t"])

    sessions, errors = await connect_many(args, args.sessions)
    if errors:
        emit("FAILED", {"joined": len(sessions), "errors": errors[:5]})
        return
    sem = asyncio.Semaphore(args.connect_concurrency)

    async def subscribe(s):
        async with sem:
            if args.client == "lean":
                s.subscribe(args.topic)
                await asyncio.wait_for(s.subscribed, 15)
            else:
                await asyncio.wait_for(s.subscribe(on_event, args.topic), 15)

    lean_factory(args).stats.on_event = on_event

    await asyncio.gather(*(subscribe(s) for s in sessions))
    print(f"READY sessions={len(sessions)}", flush=True)
    async for line in stdin_lines():
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "REPORT":
            st = steps.get(int(cmd[1]), {"total": 0, "window": 0, "hist": {}, "last": 0.0})
            emit("RESULT", st)
        elif cmd[0] == "QUIT":
            break
    leave(sessions)


async def idle(args) -> None:
    sessions, errors = await connect_many(args, args.sessions)
    print(f"READY joined={len(sessions)} failed={len(errors)} first_error={errors[:1]}", flush=True)
    async for line in stdin_lines():
        if line == "QUIT":
            break
    # 'sessions' is held until here; leaving thousands of sessions politely is
    # not what is measured: the process exits and the kernel closes the sockets.


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["probe", "rpc", "sub", "idle"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--realm", default="zmqwamp")
    parser.add_argument("--procedure", default="")
    parser.add_argument("--topic", default="")
    parser.add_argument("--payload", default="hello")
    parser.add_argument("--serializer", default="json", choices=sorted(SERIALIZERS))
    parser.add_argument("--client", default="lean", choices=["lean", "session"])
    parser.add_argument("--autobahn-frames", action="store_true",
                        help="lean client: read every frame with autobahn's parser (default: only until WELCOME)")
    parser.add_argument("--sessions", type=int, default=1)
    parser.add_argument("--inflight", type=int, default=1)
    parser.add_argument("--connect-concurrency", type=int, default=100)
    parser.add_argument("--max-seconds", type=float, default=900.0, help="hard bound on this process's life")
    args = parser.parse_args()
    if not urlparse(args.url).hostname.startswith("127."):
        parser.error("the bench only talks to 127.0.0.0/8")
    mode = {"probe": probe, "rpc": rpc, "sub": sub, "idle": idle}[args.mode]

    async def bounded():
        try:
            await asyncio.wait_for(mode(args), args.max_seconds)
        except TimeoutError:
            print("TIMEOUT: --max-seconds reached", flush=True)

    asyncio.run(bounded())
    sys.stdout.flush()
    os._exit(0)  # do not wait for thousands of transports to be torn down


if __name__ == "__main__":
    main()
