// No global side effects: importing zmqwamp-client changes nothing global (no global WebSocket is
// set, Autobahn's logger is not patched), and a context uses the WebSocket class and the logger
// given in its options.  No network: the WebSocket here is a stand-in that never connects.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

/** A WebSocket that records how it was made and fails like a refused connection. */
function failingWebSocket() {
  const made = [];
  class RefusedWebSocket {
    constructor(url, protocols) {
      made.push({ url, protocols });
      this.protocol = "";
      setTimeout(() => {
        this.onerror?.({});
        this.onclose?.({ code: 1006, reason: "", wasClean: false });
      }, 0);
    }
    send() {}
    close() {}
  }
  return { RefusedWebSocket, made };
}

function recordingLogger() {
  const lines = { warn: [], error: [] };
  return {
    lines,
    logger: { warn: (...a) => lines.warn.push(a.join(" ")), error: (...a) => lines.error.push(a.join(" ")) },
  };
}

function globals() {
  return {
    WebSocket: globalThis.WebSocket,
    names: Object.getOwnPropertyNames(globalThis).sort().join(","),
  };
}

test("importing the ES module and the browser bundle changes no global and leaves Autobahn's logger alone", async () => {
  const autobahn = (await import("autobahn")).default;
  const warn = autobahn.log.warn;
  const before = globals();
  const zmq = await import("../dist/zmqwamp.mjs");
  const browser = require("../dist/zmqwamp.browser.cjs");
  assert.deepEqual(globals(), before, "globals after import");
  assert.equal(autobahn.log.warn, warn, "autobahn.log.warn is untouched");
  assert.equal(zmq.autobahn, autobahn, "the ES module uses the installed autobahn");

  // Making contexts (with a WebSocket class of their own) and using them changes no global either.
  for (const api of [zmq, browser]) {
    const { RefusedWebSocket, made } = failingWebSocket();
    const { logger } = recordingLogger();
    const ctx = api.Context("ws://127.0.0.1:9/ws", { WebSocket: RefusedWebSocket, reconnect: false, logger });
    const req = ctx.Socket(api.REQ, "tcp://127.0.0.1:5555");
    await assert.rejects(req.request("x"), (e) => e.uri === api.ERRORS.DISCONNECTED);
    assert.deepEqual(made, [{ url: "ws://127.0.0.1:9/ws", protocols: ["wamp.2.json"] }]);
    await ctx.close();
  }
  assert.deepEqual(globals(), before, "globals after using contexts");
  assert.equal(autobahn.log.warn, warn, "autobahn.log.warn is untouched after using contexts");
});

test("each context uses its own WebSocket class and logger", async () => {
  const zmq = await import("../dist/zmqwamp.mjs");
  const a = failingWebSocket();
  const b = failingWebSocket();
  const logA = recordingLogger();
  const ctxA = zmq.Context("ws://127.0.0.1:9/a", {
    WebSocket: a.RefusedWebSocket,
    reconnect: false,
    logger: logA.logger,
  });
  const ctxB = zmq.Context("ws://127.0.0.1:9/b", {
    WebSocket: b.RefusedWebSocket,
    serializer: "cbor",
    reconnect: false,
  });
  const reqA = ctxA.Socket(zmq.REQ, "tcp://127.0.0.1:5555");
  const reqB = ctxB.Socket(zmq.REQ, "tcp://127.0.0.1:5555");
  ctxB.on("error", () => {}); // B has a listener: nothing reaches the console
  await Promise.all([
    assert.rejects(reqA.request("x"), (e) => e.uri === zmq.ERRORS.DISCONNECTED),
    assert.rejects(reqB.request("x"), (e) => e.uri === zmq.ERRORS.DISCONNECTED),
  ]);
  assert.deepEqual(a.made, [{ url: "ws://127.0.0.1:9/a", protocols: ["wamp.2.json"] }]);
  assert.deepEqual(b.made, [{ url: "ws://127.0.0.1:9/b", protocols: ["wamp.2.cbor"] }]);
  // A's "error" (the link gave up) had no listener: it went to A's logger, not the console.
  assert.equal(logA.lines.warn.length, 1, JSON.stringify(logA.lines));
  assert.match(
    logA.lines.warn[0],
    /^zmqwamp-client: zmqwamp\.error\.disconnected connection to ws:\/\/127\.0\.0\.1:9\/a failed/,
  );
  // An exception in a listener goes to the logger's error().
  ctxA.on("close", () => {
    throw new Error("listener bug");
  });
  ctxA.Socket(zmq.REQ, "tcp://127.0.0.1:5556", { token: "t" });
  await new Promise((r) => setTimeout(r, 50));
  assert.ok(
    logA.lines.error.some((l) => /exception in a close listener/.test(l)),
    JSON.stringify(logA.lines),
  );
  await Promise.all([ctxA.close(), ctxB.close()]);
});

test("a context needs a WebSocket and a logger with warn() and error()", async () => {
  const zmq = await import("../dist/zmqwamp.mjs");
  const { RefusedWebSocket } = failingWebSocket();
  assert.throws(
    () => zmq.Context("ws://127.0.0.1:9/ws", { WebSocket: RefusedWebSocket, logger: { warn() {} } }),
    TypeError,
  );
  if (typeof globalThis.WebSocket === "undefined") {
    assert.throws(() => zmq.Context("ws://127.0.0.1:9/ws"), /no WebSocket in this JavaScript runtime/);
  }
});
