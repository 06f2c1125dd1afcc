// The client answers the bridge's GOODBYE with its own before it closes the WebSocket (WAMP: a GOODBYE
// is answered by a GOODBYE).  Until issue 23 the answer was lost: the transport's `send` was async, and
// the WebSocket was closed before the answer was written (the bridge never got it; Chromium logged
// "WebSocket is already in CLOSING or CLOSED state" once per session on every graceful bridge stop;
// browser.test.mjs checks that log).  Two views: an in-test router that records what the client sends
// after its GOODBYE, and the real bridge stopped with SIGTERM, its frames read on the wire by a tap.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as zmq from "../dist/zmqwamp.mjs";
import { WebSocket, nextEvent, startBridge, startEcho, startFrameTap, withTimeout } from "./helpers.mjs";
import { GOODBYE, startRouter } from "./wamprouter.mjs";

const quiet = { warn() {}, error() {} };

test("the router's GOODBYE is answered with a GOODBYE before the client closes the WebSocket", async () => {
  const router = await startRouter();
  const ctx = zmq.Context(router.url, { WebSocket, reconnect: false, logger: quiet });
  try {
    const req = ctx.Socket(zmq.REQ, "echo");
    assert.equal(await withTimeout(req.request("hi"), 5000, "request"), "hi");
    const closed = nextEvent(ctx, "close", 5000);
    const afterGoodbye = await withTimeout(router.last.goodbye(), 5000, "the router's goodbye");
    assert.ok(afterGoodbye.length >= 1 && Array.isArray(afterGoodbye[0]), JSON.stringify(afterGoodbye));
    assert.equal(afterGoodbye[0][0], GOODBYE, `the client's first message after our GOODBYE: ${afterGoodbye[0]}`);
    const info = await closed;
    assert.equal(info.uri, "wamp.close.system_shutdown");
  } finally {
    await ctx.close();
    await router.close();
  }
});

describe("a graceful bridge stop (SIGTERM): the bridge gets the client's GOODBYE", () => {
  let bridge, echo, tap;
  before(async () => {
    echo = await startEcho();
    bridge = await startBridge();
    tap = await startFrameTap(bridge.port);
  });
  after(async () => {
    await tap?.close();
    await Promise.allSettled([bridge, echo].filter(Boolean).map((p) => (p.stop ? p.stop() : p.proc.stop())));
  });

  test("on the wire: the bridge's GOODBYE, the client's GOODBYE, then the close; the bridge closes 1001 at once", async () => {
    const ctx = zmq.Context(tap.url, { WebSocket, reconnect: false, logger: quiet });
    const req = ctx.Socket(zmq.REQ, echo.address);
    assert.equal(await withTimeout(req.request("hi"), 5000, "request"), "got this hi");
    const closed = nextEvent(ctx, "close", 10000);
    const started = Date.now();
    await bridge.stop();
    const stopMs = Date.now() - started;
    await closed;
    const wamp = (f) => f.opcode === 1 && f.text.startsWith(`[${GOODBYE},`);
    const seen = tap.frames.filter((f) => wamp(f) || f.opcode === 8).map((f) => `${f.from}: ${f.text}`);
    const bridgeGoodbye = tap.frames.findIndex((f) => f.from === "server" && wamp(f));
    const clientGoodbye = tap.frames.findIndex((f, i) => i > bridgeGoodbye && f.from === "client" && wamp(f));
    const clientClose = tap.frames.findIndex((f) => f.from === "client" && f.opcode === 8);
    const bridgeClose = tap.frames.findIndex((f) => f.from === "server" && f.opcode === 8);
    assert.ok(bridgeGoodbye >= 0, `the bridge said GOODBYE: ${seen.join(" | ")}`);
    assert.ok(clientGoodbye > bridgeGoodbye, `the client answered with GOODBYE: ${seen.join(" | ")}`);
    assert.ok(clientClose < 0 || clientClose > clientGoodbye, `GOODBYE before the close: ${seen.join(" | ")}`);
    // With the answer in, the bridge closes with its own code (1001 "server shutdown") at once; without
    // it, the close the client started was what ended the connection (the bridge echoed the client's).
    assert.match(tap.frames[bridgeClose].text, /^1001 /, seen.join(" | "));
    assert.ok(stopMs < 900, `the bridge stopped in ${stopMs} ms (it waits up to 1 s for an answer)`);
    await ctx.close();
  });
});
