// The client against a real twistd bridge and the real example pyzmq services (anonymous).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:net";
import * as zmq from "../dist/zmqwamp.mjs";
import { WebSocket, startBridge, startCounter, startEcho, waitUntil, withTimeout } from "./helpers.mjs";

const TEXT = new TextEncoder();

/** A 127.0.0.1 port nothing listens on: bound by the OS for us, then closed again. */
function closedPort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

describe("zmqwamp-client against a real bridge", () => {
  let bridge, echo, slow, counter;
  const contexts = new Set();
  const context = (options) => {
    const ctx = zmq.Context(bridge.url, { realm: "zmqwamp", WebSocket, ...options });
    contexts.add(ctx);
    return ctx;
  };

  before(async () => {
    [echo, slow, counter] = await Promise.all([startEcho(), startEcho(["--delay", "30"]), startCounter(0.1)]);
    // idle_close: the bridge drops an unused zmq REQ connection after 0.5 s, so /healthz
    // shows whether close() really released everything.
    bridge = await startBridge({ config: "idle_close = 0.5\n" });
  });

  after(async () => {
    await Promise.allSettled([...contexts].map((c) => withTimeout(c.close(), 5000, "context close")));
    await Promise.allSettled(
      [bridge, echo, slow, counter].filter(Boolean).map((p) => (p.stop ? p.stop() : p.proc.stop())),
    );
  });

  test("REQ callback form: send() hands the echo reply to the callback", async () => {
    const ctx = context();
    const req = ctx.Socket(zmq.REQ, echo.address);
    const reply = await withTimeout(
      new Promise((resolve, reject) => req.send({ myrequest: "hello" }, resolve, { errback: reject })),
      5000,
      "callback reply",
    );
    assert.equal(reply, 'got this {"myrequest":"hello"}');
    // The callback also gets the frames.
    const frames = await withTimeout(
      new Promise((resolve, reject) => req.send("hi", (r, f) => resolve(f), { errback: reject, timeout: 2000 })),
      5000,
      "frames",
    );
    assert.deepEqual(frames, ["got this hi"]);
    await ctx.close();
  });

  test("the old send(msg, callback, errback, options) form still works, with one deprecation warning (logger)", async () => {
    const warnings = [];
    const ctx = context({ logger: { warn: (...a) => warnings.push(a.join(" ")), error: console.error } });
    const req = ctx.Socket(zmq.REQ, echo.address);
    const slowReq = ctx.Socket(zmq.REQ, slow.address);
    const reply = await withTimeout(new Promise((resolve, reject) => req.send("old", resolve, reject)), 5000, "reply");
    assert.equal(reply, "got this old");
    // The errback (3rd argument) hears the failure; the options (4th) are honoured.
    const late = await withTimeout(
      new Promise((resolve) => slowReq.send("late", () => resolve(null), resolve, { timeout: 200 })),
      5000,
      "errback",
    );
    assert.equal(late.uri, "wamp.error.canceled");
    // No errback (null): the failure goes to the context's "error" listeners, as before.
    const heard = new Promise((resolve) => ctx.on("error", resolve));
    slowReq.send("late", () => {}, null, { timeout: 200 });
    assert.equal((await withTimeout(heard, 5000, "error event")).uri, "wamp.error.canceled");
    // The new form: no further warnings.
    await withTimeout(
      new Promise((resolve, reject) => req.send("new", resolve, { errback: reject })),
      5000,
      "new form",
    );
    assert.deepEqual(warnings, [
      "zmqwamp-client: req.send(msg, callback, errback, options) is deprecated and goes away in the next release: " +
        "use req.send(msg, callback, {errback, timeout, multipart})",
    ]);
    await ctx.close();
  });

  test("REQ promise form: request() resolves; 50 concurrent requests are matched", async () => {
    const ctx = context();
    const req = ctx.Socket(zmq.REQ, echo.address);
    assert.equal(await withTimeout(req.request("hello", { timeout: 2000 }), 5000, "request"), "got this hello");
    const replies = await withTimeout(
      Promise.all(Array.from({ length: 50 }, (_, i) => req.request(`n${i}`))),
      10000,
      "50 requests",
    );
    replies.forEach((r, i) => assert.equal(r, `got this n${i}`));
    await ctx.close();
  });

  for (const serializer of ["json", "msgpack", "cbor"]) {
    test(`bytes and multipart round trip with the ${serializer} serializer`, async () => {
      const ctx = context({ serializer });
      const req = ctx.Socket(zmq.REQ, echo.address);
      const bytes = new Uint8Array([0xff, 0x00, 0x80, 0x01]);
      const reply = await withTimeout(req.request(bytes), 5000, "bytes request");
      assert.ok(reply instanceof Uint8Array, `a reply that is not UTF-8 arrives as bytes, got ${typeof reply}`);
      assert.deepEqual([...reply], [...TEXT.encode("got this "), ...bytes]);
      // An ArrayBuffer is bytes too; multipart: one frame per element, the reply as frames.
      const frames = await withTimeout(
        req.request(["a", bytes.buffer, { x: 1 }], { multipart: true }),
        5000,
        "multipart",
      );
      assert.equal(frames.length, 3);
      assert.equal(frames[0], "got this a");
      assert.deepEqual([...frames[1]], [...bytes]);
      assert.deepEqual(frames[2], { x: 1 });
      await ctx.close();
    });
  }

  test("SUB filter: only messages starting with the filter arrive; no filter: all", async () => {
    const ctx = context();
    const hugo = ctx.Socket(zmq.SUB, counter.address, { filter: "hugo" });
    const all = ctx.Socket(zmq.SUB, counter.address);
    const gotHugo = [];
    const gotAll = [];
    hugo.callback((msg) => gotHugo.push(msg));
    all.callback((msg, frames) => gotAll.push(frames[0]));
    await withTimeout(Promise.all([hugo.ready(), all.ready()]), 5000, "subscriptions");
    await waitUntil(() => gotHugo.length >= 5 && gotAll.some((m) => m.startsWith("otto")), 10000, "events");
    assert.ok(
      gotHugo.every((m) => typeof m === "string" && m.startsWith("hugo ")),
      JSON.stringify(gotHugo),
    );
    assert.ok(gotAll.some((m) => m.startsWith("hugo ")));
    await ctx.close();
  });

  test("two SUB sockets on the same endpoint and filter each get every message once; closing one leaves the other", async () => {
    const ctx = context();
    const a = ctx.Socket(zmq.SUB, counter.address, { filter: "otto" });
    const b = ctx.Socket(zmq.SUB, counter.address, { filter: "otto" });
    const gotA = [];
    const gotB = [];
    a.callback((m) => gotA.push(m));
    b.callback((m) => gotB.push(m));
    await withTimeout(Promise.all([a.ready(), b.ready()]), 5000, "subscriptions");
    await waitUntil(() => gotA.length >= 5 && gotB.length >= 5, 5000, "events on both");
    assert.equal(new Set(gotA).size, gotA.length, "no duplicates on a");
    assert.equal(new Set(gotB).size, gotB.length, "no duplicates on b");
    await withTimeout(a.close(), 5000, "close a");
    const seenA = gotA.length;
    const seenB = gotB.length;
    await waitUntil(() => gotB.length >= seenB + 5, 5000, "b still receiving");
    assert.equal(gotA.length, seenA, "a closed: nothing more");
    await ctx.close();
  });

  test("sockets with equal credentials share one WAMP session", async () => {
    const ctx = context();
    const a = ctx.Socket(zmq.REQ, echo.address);
    const b = ctx.Socket(zmq.REQ, echo.address);
    const s = ctx.Socket(zmq.SUB, counter.address, { filter: "otto" });
    s.callback(() => {});
    await withTimeout(Promise.all([a.request("a"), b.request("b"), s.ready()]), 5000, "sockets");
    assert.equal(ctx.sessionCount, 1);
    assert.equal((await bridge.healthz()).sessions, 1);
    await ctx.close();
  });

  test("denied endpoint: wamp.error.not_authorized reaches errback, promise and SUB errback", async () => {
    const ctx = context();
    const denied = "tcp://10.255.255.1:5555";
    const req = ctx.Socket(zmq.REQ, denied);
    const viaErrback = await withTimeout(
      new Promise((resolve) => req.send("x", () => resolve(null), { errback: resolve })),
      5000,
      "errback",
    );
    assert.ok(viaErrback instanceof zmq.ZmqError);
    assert.equal(viaErrback.uri, "wamp.error.not_authorized");
    assert.match(viaErrback.message, /not allowed/);
    await assert.rejects(withTimeout(req.request("x"), 5000, "request"), (e) => e.uri === "wamp.error.not_authorized");
    const sub = ctx.Socket(zmq.SUB, denied);
    const subError = await withTimeout(new Promise((resolve) => sub.callback(() => {}, resolve)), 5000, "SUB errback");
    assert.equal(subError.uri, "wamp.error.not_authorized");
    await assert.rejects(sub.ready(), (e) => e.uri === "wamp.error.not_authorized");
    // A malformed endpoint is an invalid URI.
    const bad = ctx.Socket(zmq.REQ, "tcp://no-port");
    await assert.rejects(withTimeout(bad.request("x"), 5000, "bad"), (e) => e.uri === "wamp.error.invalid_uri");
    // Errors without an errback go to the context's "error" listeners.
    const heard = new Promise((resolve) => ctx.on("error", resolve));
    req.send("x", () => {});
    assert.equal((await withTimeout(heard, 5000, "error event")).uri, "wamp.error.not_authorized");
    await ctx.close();
  });

  test("timeout: a REP that does not answer in time gives wamp.error.canceled", async () => {
    const ctx = context();
    const req = ctx.Socket(zmq.REQ, slow.address);
    const started = Date.now();
    await assert.rejects(withTimeout(req.request("late", { timeout: 300 }), 5000, "timeout"), (e) => {
      assert.equal(e.uri, "wamp.error.canceled");
      assert.match(e.message, /timed out/);
      return true;
    });
    // "timed out" is the bridge's message; the client's own guard (at timeout + timeoutGrace) says "no reply".
    assert.ok(Date.now() - started < 2300, "the bridge's timeout came before the client's guard");
    // Socket-level default timeout, callback form.
    const req2 = ctx.Socket(zmq.REQ, slow.address, { timeout: 200 });
    const err = await withTimeout(
      new Promise((resolve) => req2.send("late", () => resolve(null), { errback: resolve })),
      5000,
      "errback",
    );
    assert.equal(err.uri, "wamp.error.canceled");
    await ctx.close();
  });

  test("close() releases everything on the bridge (/healthz: sessions, zmq endpoints)", async () => {
    await waitUntil(async () => (await bridge.healthz()).sessions === 0, 5000, "no sessions before the test");
    const ctx = context();
    const req = ctx.Socket(zmq.REQ, echo.address);
    const sub = ctx.Socket(zmq.SUB, counter.address, { filter: "hugo" });
    const got = [];
    sub.callback((m) => got.push(m));
    await withTimeout(Promise.all([req.request("x"), sub.ready()]), 5000, "open sockets");
    const open = await bridge.healthz();
    assert.equal(open.sessions, 1);
    assert.ok(open.zmq_endpoints.sub.includes(counter.address), JSON.stringify(open));
    assert.ok(open.zmq_endpoints.req.includes(echo.address), JSON.stringify(open));

    // Closing the SUB socket alone unsubscribes: the bridge closes its zmq SUB socket.
    await withTimeout(sub.close(), 5000, "sub.close");
    await waitUntil(async () => (await bridge.healthz()).zmq_endpoints.sub.length === 0, 5000, "zmq SUB released");
    const count = got.length;
    assert.equal((await bridge.healthz()).sessions, 1, "the REQ socket keeps the session");

    await withTimeout(ctx.close(), 5000, "ctx.close");
    const released = await waitUntil(
      async () => {
        const h = await bridge.healthz();
        return h.sessions === 0 && h.zmq_endpoints.sub.length === 0 && !h.zmq_endpoints.req.includes(echo.address) && h;
      },
      5000,
      "bridge to release session and zmq endpoints",
    );
    assert.deepEqual(released.zmq_endpoints.sub, []);
    assert.equal(got.length, count, "no events after close");
    await assert.rejects(req.request("x"), (e) => e.uri === zmq.ERRORS.CLOSED);
    assert.throws(
      () => ctx.Socket(zmq.REQ, echo.address),
      (e) => e.uri === zmq.ERRORS.CLOSED,
    );
  });

  test("unreachable bridge: a request fails fast with zmqwamp.error.disconnected", async () => {
    const port = await closedPort();
    const ctx = zmq.Context(`ws://127.0.0.1:${port}/ws`, { reconnect: false, WebSocket });
    contexts.add(ctx);
    const errors = [];
    ctx.on("error", (e) => errors.push(e));
    const req = ctx.Socket(zmq.REQ, echo.address);
    const started = Date.now();
    await assert.rejects(withTimeout(req.request("x"), 5000, "request"), (e) => e.uri === zmq.ERRORS.DISCONNECTED);
    assert.ok(Date.now() - started < 3000);
    assert.equal(errors[0]?.uri, zmq.ERRORS.DISCONNECTED, "the context reports the failed connection");
    await ctx.close();
  });
});
