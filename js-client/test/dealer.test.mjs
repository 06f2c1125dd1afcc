// DEALER sockets (streamed replies: WAMP progressive call results, CANCEL) and PUSH sockets
// (acknowledged PUBLISH) against an in-test WAMP router (test/wamprouter.mjs) that plays the bridge's
// side of the contract: what the client sends, what the application sees of each answer, cancel in
// each mode, timeouts between parts, a connection lost mid-stream.  streaming.test.mjs runs what the
// real bridge offers today.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as zmq from "../dist/zmqwamp.mjs";
import { WebSocket, drain, nextEvent, sleep, waitUntil, withTimeout } from "./helpers.mjs";
import { CALL, PUBLISH, startRouter } from "./wamprouter.mjs";

/** A context on `router` whose errors and warnings are collected instead of logged. */
function context(router, options = {}) {
  const errors = [];
  const logged = [];
  const ctx = zmq.Context(router.url, {
    WebSocket,
    reconnect: { initialDelay: 0.05, maxDelay: 0.05, jitter: 0 },
    logger: { warn: (...a) => logged.push(a.join(" ")), error: (...a) => logged.push(a.join(" ")) },
    ...options,
  });
  ctx.on("error", (e) => errors.push(e));
  return { ctx, errors, logged };
}

/** Run `fn(router, ctx, extras)` with a fresh router and context; close both afterwards. */
async function withRouter(fn, options) {
  const router = await startRouter();
  const c = context(router, options);
  try {
    await fn(router, c.ctx, c);
  } finally {
    await withTimeout(c.ctx.close(), 5000, "context close").catch(() => {});
    await router.close();
  }
}

/** Collect what a send() callback and errback hear, in order. */
function recorder() {
  const log = [];
  return {
    log,
    callback: (part, info) => log.push(["part", part, info.last, info.frames]),
    errback: (e) => log.push(["error", e.uri, e.message]),
  };
}

test("send(): the CALL asks for progressive results; each part reaches the callback, the last with last: true", () =>
  withRouter(async (router, ctx, { errors }) => {
    router.onCall = (call) => {
      call.progress(["Once"]);
      call.progress(["upon"]);
      call.progress([{ a: 1 }]);
      call.result(); // a final RESULT without arguments: the end
    };
    const dealer = ctx.Socket(zmq.DEALER, "words");
    const r = recorder();
    const stream = dealer.send("tell me", r.callback, { errback: r.errback });
    assert.equal(stream.state, "open");
    await waitUntil(() => stream.state !== "open", 5000, "the end of the stream");
    assert.deepEqual(r.log, [
      ["part", "Once", false, ["Once"]],
      ["part", "upon", false, ["upon"]],
      ["part", { a: 1 }, false, [{ a: 1 }]],
      ["part", undefined, true, []],
    ]);
    assert.equal(stream.state, "done");
    assert.equal(stream.parts, 3);
    const [call] = router.last.sent(CALL);
    assert.deepEqual(call.slice(2), [{ receive_progress: true }, "words", ["tell me"]]);
    assert.deepEqual(errors, []);
  }));

test("a final RESULT with arguments is the last part; a REP endpoint's single answer is one last part", () =>
  withRouter(async (router, ctx) => {
    router.onCall = (call) => {
      if (call.args[0] === "two") call.progress(["first"]);
      call.result(["final"]);
    };
    const dealer = ctx.Socket("DEALER", "tcp://127.0.0.1:9999");
    for (const [msg, expected] of [
      ["two", ["first", "final"]],
      ["one", ["final"]],
    ]) {
      const r = recorder();
      const stream = dealer.send(msg, r.callback);
      await waitUntil(() => stream.state === "done", 5000, "done");
      assert.deepEqual(
        r.log.map(([, part, last]) => [part, last]),
        expected.map((p, i) => [p, i === expected.length - 1]),
      );
      const parts = [];
      for await (const part of dealer.stream(msg)) parts.push(part);
      assert.deepEqual(parts, expected, "the same through for await");
    }
  }));

test("stream(): for await yields every part (multipart: arrays of frames), bytes included", () =>
  withRouter(async (router, ctx) => {
    router.onCall = (call) => {
      call.progress(["a", new Uint8Array([1, 2]).length]);
      call.progress(["\u0000AP8=", "x"]); // the WAMP JSON convention for the bytes 00 ff
      call.result(["end", "!"]);
    };
    const dealer = ctx.Socket(zmq.DEALER, "rows");
    const parts = [];
    for await (const part of dealer.stream(["q", new Uint8Array([7])], { multipart: true })) parts.push(part);
    assert.deepEqual(parts, [
      ["a", 2],
      [new Uint8Array([0, 0xff]), "x"],
      ["end", "!"],
    ]);
    const [call] = router.last.sent(CALL);
    assert.deepEqual(call[4], ["q", "\u0000Bw=="], "a frame of bytes travels as WAMP JSON bytes");
  }));

test("parts that arrive before the loop starts wait in the stream; the request leaves at once", () =>
  withRouter(async (router, ctx) => {
    router.onCall = (call) => {
      for (const w of ["a", "b", "c"]) call.progress([w]);
      call.result();
    };
    const stream = ctx.Socket(zmq.DEALER, "words").stream("x");
    await waitUntil(() => stream.state === "done", 5000, "all parts in");
    assert.equal(stream.parts, 3);
    const parts = [];
    for await (const part of stream) parts.push(part);
    assert.deepEqual(parts, ["a", "b", "c"]);
    assert.throws(() => stream[Symbol.asyncIterator](), /iterated once/);
  }));

test("an ERROR ends the stream: the errback (or the loop) gets the parts before it, then the ZmqError", () =>
  withRouter(async (router, ctx, { errors }) => {
    router.onCall = (call) => {
      call.progress(["p1"]);
      call.error("zmqwamp.error.backend_unavailable", "the worker went away");
    };
    const dealer = ctx.Socket(zmq.DEALER, "words");
    const r = recorder();
    const stream = dealer.send("x", r.callback, { errback: r.errback });
    await waitUntil(() => stream.state === "failed", 5000, "failed");
    assert.deepEqual(r.log, [
      ["part", "p1", false, ["p1"]],
      ["error", "zmqwamp.error.backend_unavailable", "the worker went away"],
    ]);
    assert.equal(stream.error.uri, "zmqwamp.error.backend_unavailable");

    const parts = [];
    await assert.rejects(
      (async () => {
        for await (const part of dealer.stream("y")) parts.push(part);
      })(),
      (e) => e instanceof zmq.ZmqError && e.uri === "zmqwamp.error.backend_unavailable",
    );
    assert.deepEqual(parts, ["p1"]);

    // Without an errback the failure goes to the context's "error" listeners.
    const silent = dealer.send("z", () => {});
    await waitUntil(() => silent.state === "failed", 5000, "failed");
    assert.deepEqual(
      errors.map((e) => e.message),
      ["the worker went away"],
    );
  }));

test("cancel(): CANCEL with the mode; nothing of the stream reaches the application afterwards, the session stays up", async () => {
  for (const mode of ["skip", "kill", "killnowait", undefined]) {
    await withRouter(async (router, ctx, { errors, logged }) => {
      let routerCall;
      router.onCall = (call) => {
        if (call.procedure !== "words") return call.result(call.args);
        routerCall = call;
        call.progress(["one"]);
        call.progress(["two"]);
        // After the CANCEL: parts that were already on their way, then the router's ERROR.
        call.onCancel = () =>
          setTimeout(() => {
            call.progress(["late 1"]);
            call.progress(["late 2"]);
            call.error("wamp.error.canceled", "canceled");
          }, 50);
      };
      const closes = [];
      ctx.on("close", (info) => closes.push(info));
      const dealer = ctx.Socket(zmq.DEALER, "words");
      const r = recorder();
      const stream = dealer.send("x", r.callback, { errback: r.errback });
      await waitUntil(() => r.log.length === 2, 5000, "two parts");
      let answered = false;
      const canceled = stream.cancel(mode).then(() => (answered = true));
      assert.equal(stream.state, "canceled");
      await sleep(10);
      assert.equal(answered, false, "cancel() resolves once the router has answered");
      await withTimeout(canceled, 5000, "the router's answer to CANCEL");
      await sleep(50);
      assert.deepEqual(
        r.log.map((e) => e[1]),
        ["one", "two"],
        "no late part, no error",
      );
      assert.deepEqual(router.cancels, [{ request: routerCall.request, mode: mode ?? "killnowait" }]);
      assert.equal(routerCall.canceled, mode ?? "killnowait");
      // The late RESULTs and the ERROR did not upset Autobahn: same connection, still serving.
      const req = ctx.Socket(zmq.REQ, "echo");
      assert.equal(await withTimeout(req.request("still here"), 5000, "request"), "still here");
      assert.equal(router.connections.length, 1);
      assert.deepEqual(closes, []);
      assert.deepEqual(errors, []);
      assert.deepEqual(logged, []);
      assert.equal(await stream.cancel(), undefined, "a second cancel() is a no-op");
      assert.equal(router.cancels.length, 1);
    });
  }
});

test("cancel() rejects an unknown mode; leaving a for await early cancels (killnowait)", () =>
  withRouter(async (router, ctx) => {
    router.onCall = (call) => {
      let n = 0;
      const t = setInterval(() => (call.canceled ? clearInterval(t) : call.progress([`w${n++}`])), 5);
    };
    const dealer = ctx.Socket(zmq.DEALER, "words");
    const s = dealer.stream("x");
    assert.throws(() => s.cancel("stop"), TypeError);
    const seen = [];
    for await (const part of s) {
      seen.push(part);
      if (seen.length === 3) break;
    }
    assert.deepEqual(seen, ["w0", "w1", "w2"]);
    assert.equal(s.state, "canceled");
    await waitUntil(() => router.cancels.length === 1, 5000, "CANCEL");
    assert.equal(router.cancels[0].mode, "killnowait");

    // An exception in the loop's body cancels too, and propagates.
    const s2 = dealer.stream("y");
    await assert.rejects(
      (async () => {
        for await (const part of s2) throw new Error(`stop at ${part}`);
      })(),
      /stop at w0/,
    );
    assert.equal(s2.state, "canceled");
    await waitUntil(() => router.cancels.length === 2, 5000, "second CANCEL");
  }));

test("cancel() from outside ends a loop that is waiting for the next part", () =>
  withRouter(async (router, ctx) => {
    router.onCall = (call) => call.progress(["only"]);
    const s = ctx.Socket(zmq.DEALER, "words").stream("x");
    const seen = [];
    const loop = (async () => {
      for await (const part of s) seen.push(part);
      return "ended";
    })();
    await waitUntil(() => seen.length === 1, 5000, "first part");
    await s.cancel();
    assert.equal(await withTimeout(loop, 2000, "the loop"), "ended");
    assert.deepEqual(seen, ["only"]);
  }));

test("a stream canceled before the first connect is done never sends its CALL", () =>
  withRouter(async (router, ctx) => {
    const dealer = ctx.Socket(zmq.DEALER, "words");
    assert.equal(dealer.state, "connecting");
    const s = dealer.send("x", () => assert.fail("no part"));
    await s.cancel();
    assert.equal(s.state, "canceled");
    const req = ctx.Socket(zmq.REQ, "echo");
    assert.equal(await withTimeout(req.request("after"), 5000, "request"), "after");
    assert.deepEqual(
      router.last.sent(CALL).map((c) => c[3]),
      ["echo"],
    );
    assert.deepEqual(router.cancels, []);
  }));

test("timeout: sent as the CALL option; the client's guard runs to the first part and then between parts", () =>
  withRouter(
    async (router, ctx) => {
      router.onCall = (call) => {
        if (call.args[0] === "silent") return;
        let n = 0;
        // A part every 80 ms, five of them, then silence.
        const t = setInterval(() => {
          if (call.canceled || n === 5) return clearInterval(t);
          call.progress([n++]);
        }, 80);
      };
      const dealer = ctx.Socket(zmq.DEALER, "words", { timeout: 150 });
      const r = recorder();
      const started = Date.now();
      const s = dealer.send("slow", r.callback, { errback: r.errback });
      await waitUntil(() => s.state !== "open", 5000, "the end");
      const elapsed = Date.now() - started;
      assert.deepEqual(
        r.log.slice(0, 5).map((e) => e[1]),
        [0, 1, 2, 3, 4],
        "parts 80 ms apart never time out",
      );
      assert.deepEqual(r.log[5], ["error", zmq.ERRORS.CANCELED, "no reply from the bridge within 150 ms"]);
      assert.ok(elapsed >= 400 + 200 && elapsed < 2000, `failed ${elapsed} ms after the request`);
      assert.equal(router.calls[0].options.timeout, 150);
      await waitUntil(() => router.cancels.length === 1, 2000, "the guard's CANCEL");
      assert.equal(router.cancels[0].mode, "killnowait", "the client tells the bridge to stop");

      // Per request, and to the first part.
      const s2 = dealer.stream("silent", { timeout: 100 });
      await assert.rejects(drain(s2), (e) => e.uri === zmq.ERRORS.CANCELED);
      assert.equal(router.calls[1].options.timeout, 100);
    },
    { timeoutGrace: 50 },
  ));

test("a connection lost mid-stream fails the stream with a clear error; new streams work after the reconnect", () =>
  withRouter(async (router, ctx) => {
    router.onCall = (call) => {
      call.progress(["a"]);
      call.progress(["b"]);
    };
    const dealer = ctx.Socket(zmq.DEALER, "words");
    const r = recorder();
    const s = dealer.send("x", r.callback, { errback: r.errback });
    const iterated = dealer.stream("y");
    await waitUntil(() => r.log.length === 2 && iterated.parts === 2, 5000, "two parts each");
    const reopened = nextEvent(ctx, "open", 5000);
    router.last.drop();
    await waitUntil(() => s.state === "failed", 5000, "failed");
    const [kind, uri, message] = r.log[2];
    assert.equal(kind, "error");
    assert.equal(uri, zmq.ERRORS.DISCONNECTED);
    assert.match(message, /lost .*the stream ended after 2 part\(s\) and is not resumed/);
    const parts = [];
    await assert.rejects(
      (async () => {
        for await (const p of iterated) parts.push(p);
      })(),
      (e) => e.uri === zmq.ERRORS.DISCONNECTED,
    );
    assert.deepEqual(parts, ["a", "b"], "the parts received before the loss are read first");

    // While reconnecting, a new stream fails fast (as a REQ request does); after, streams work.
    const down = dealer.stream("z");
    await assert.rejects(drain(down), (e) => e.uri === zmq.ERRORS.DISCONNECTED);
    await reopened;
    router.onCall = (call) => call.result(["again"]);
    const after = [];
    for await (const p of dealer.stream("w")) after.push(p);
    assert.deepEqual(after, ["again"]);
  }));

test("closing the socket cancels its open streams (they fail with zmqwamp.error.closed); so does ctx.close()", () =>
  withRouter(async (router, ctx) => {
    router.onCall = (call) => call.progress(["a"]);
    const dealer = ctx.Socket(zmq.DEALER, "words");
    const other = ctx.Socket(zmq.DEALER, "words"); // keeps the session open
    const r = recorder();
    const s = dealer.send("x", r.callback, { errback: r.errback });
    await waitUntil(() => r.log.length === 1, 5000, "a part");
    await dealer.close();
    assert.deepEqual(r.log[1].slice(0, 2), ["error", zmq.ERRORS.CLOSED]);
    assert.equal(s.state, "failed");
    await waitUntil(() => router.cancels.length === 1, 2000, "CANCEL");
    assert.equal(router.cancels[0].mode, "killnowait");
    const closed = dealer.send("y", r.callback, { errback: r.errback });
    await waitUntil(() => closed.state === "failed", 2000, "send on a closed socket fails");
    assert.equal(closed.error.uri, zmq.ERRORS.CLOSED);

    const s2 = other.stream("z");
    await waitUntil(() => s2.parts === 1, 5000, "a part");
    await ctx.close();
    assert.equal(s2.state, "failed");
    assert.equal(s2.error.uri, zmq.ERRORS.CLOSED);
  }));

test("a callback that throws: the exception goes to the context's 'error', the stream goes on", () =>
  withRouter(async (router, ctx, { errors }) => {
    router.onCall = (call) => {
      call.progress(["a"]);
      call.result(["b"]);
    };
    const seen = [];
    const s = ctx.Socket(zmq.DEALER, "words").send("x", (part) => {
      seen.push(part);
      throw new Error(`bad ${part}`);
    });
    await waitUntil(() => s.state === "done", 5000, "done");
    assert.deepEqual(seen, ["a", "b"]);
    assert.deepEqual(
      errors.map((e) => e.message),
      ["bad a", "bad b"],
    );
  }));

test("many streams at once on one session, interleaved with REQ calls: each part reaches its own stream", () =>
  withRouter(async (router, ctx) => {
    const calls = [];
    router.onCall = (call) => (call.procedure === "words" ? calls.push(call) : call.result(call.args));
    const dealer = ctx.Socket(zmq.DEALER, "words");
    const req = ctx.Socket(zmq.REQ, "echo");
    const n = 20;
    const streams = Array.from({ length: n }, (_, i) => dealer.stream(i));
    await waitUntil(() => calls.length === n, 5000, "all CALLs");
    const replies = [];
    for (let k = 0; k < 3; k++) {
      for (const call of [...calls].reverse()) call.progress([`${call.args[0]}.${k}`]);
      replies.push(req.request(`r${k}`));
    }
    for (const call of calls) call.result();
    const got = await Promise.all(
      streams.map(async (s) => {
        const parts = [];
        for await (const p of s) parts.push(p);
        return parts;
      }),
    );
    assert.deepEqual(
      got,
      streams.map((_, i) => [`${i}.0`, `${i}.1`, `${i}.2`]),
    );
    assert.deepEqual(await Promise.all(replies), ["r0", "r1", "r2"]);
    const ids = router.last.sent(CALL).map((c) => c[1]);
    assert.equal(new Set(ids).size, ids.length, "request ids never collide with Autobahn's");
  }));

test("PUSH: send() resolves on PUBLISHED (PUBLISH with acknowledge), rejects with the router's ERROR", () =>
  withRouter(async (router, ctx) => {
    const push = ctx.Socket(zmq.PUSH, "jobs");
    assert.equal(push.type, zmq.PUSH);
    assert.equal(await push.send({ job: 1 }), undefined);
    assert.equal(await push.send(["a", new Uint8Array([1])], { multipart: true }), undefined);
    const sent = router.last.sent(PUBLISH);
    assert.deepEqual(
      sent.map((m) => m.slice(2)),
      [
        [{ acknowledge: true }, "jobs", [{ job: 1 }]],
        [{ acknowledge: true }, "jobs", ["a", "\u0000AQ=="]],
      ],
    );
    for (const [uri, message] of [
      ["zmqwamp.error.backend_unavailable", "no PULL worker took the message (high-water mark or no peer)"],
      ["zmqwamp.error.limit_exceeded", "max_pushes_per_second: more than 100 pushes per second"],
    ]) {
      router.onPublish = (pub) => pub.error(uri, message);
      await assert.rejects(push.send("x"), (e) => {
        assert.ok(e instanceof zmq.ZmqError);
        assert.equal(e.uri, uri);
        assert.equal(e.message, message);
        return true;
      });
    }
    await assert.rejects(push.send([], { multipart: true }), (e) => e.uri === zmq.ERRORS.INVALID_ARGUMENT);
  }));

test("PUSH: waits for the first connect; fails fast while reconnecting; a timeout bounds the wait for the answer", () =>
  withRouter(
    async (router, ctx) => {
      const push = ctx.Socket(zmq.PUSH, "jobs");
      assert.equal(push.state, "connecting");
      await push.send("during the first connect");

      router.onPublish = () => {}; // no answer
      const started = Date.now();
      await assert.rejects(push.send("x", { timeout: 200 }), (e) => {
        assert.equal(e.uri, zmq.ERRORS.CANCELED);
        assert.match(e.message, /no acknowledgement .* within 200 ms: the message may or may not have been pushed/);
        return true;
      });
      assert.ok(Date.now() - started < 1500);

      const pending = push.send("in flight when the connection drops");
      await waitUntil(() => router.publishes.length === 3, 2000, "the PUBLISH");
      const reopened = nextEvent(ctx, "open", 5000);
      router.last.drop();
      await assert.rejects(pending, (e) => e.uri === zmq.ERRORS.DISCONNECTED);
      await assert.rejects(push.send("while down"), (e) => e.uri === zmq.ERRORS.DISCONNECTED);
      await reopened;
      router.onPublish = (pub) => pub.published();
      await push.send("after");
      await push.close();
      await assert.rejects(push.send("closed"), (e) => e.uri === zmq.ERRORS.CLOSED);
    },
    { timeoutGrace: 50 },
  ));

test("a value the serializer cannot carry fails the request at once (REQ, DEALER, PUSH), the session goes on", () =>
  withRouter(async (router, ctx) => {
    // Before issue 23 the transport's send was async: the serializer's exception became an unhandled
    // rejection and the request waited for its timeout (or forever).
    const invalid = (e) =>
      e.uri === zmq.ERRORS.INVALID_ARGUMENT && /json serializer cannot carry it.*BigInt/.test(e.message);
    const req = ctx.Socket(zmq.REQ, "echo");
    await assert.rejects(withTimeout(req.request(10n), 2000, "the REQ's failure"), invalid);
    const s = ctx.Socket(zmq.DEALER, "words").stream({ n: 10n });
    await assert.rejects(withTimeout(drain(s), 2000, "the stream's failure"), invalid);
    await assert.rejects(withTimeout(ctx.Socket(zmq.PUSH, "jobs").send([1n]), 2000, "the PUSH's failure"), invalid);
    assert.equal(await req.request("fine"), "fine");
    assert.equal(router.connections.length, 1);
  }));

test("socket types by number and name; unknown types are refused", () =>
  withRouter(async (router, ctx) => {
    assert.equal(zmq.DEALER, 5);
    assert.equal(zmq.PUSH, 8);
    assert.ok(ctx.Socket("dealer", "x") instanceof zmq.DealerSocket);
    assert.ok(ctx.socket("PUSH", "x") instanceof zmq.PushSocket);
    assert.ok(ctx.Socket(zmq.DEALER, "x").stream("y") instanceof zmq.ReplyStream);
    assert.throws(() => ctx.Socket(6, "x"), /REQ, zmq.SUB, zmq.DEALER and zmq.PUSH/);
    assert.throws(() => ctx.Socket(zmq.DEALER, "x").send("y", "not a function"), TypeError);
  }));
