// Reconnect: the bridge is stopped and started again on the SAME port.  The SUB socket
// resubscribes by itself, with no duplicate handler; REQ while disconnected fails fast.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as zmq from "../dist/zmqwamp.mjs";
import { WebSocket, nextEvent, startBridge, startCounter, startEcho, waitUntil, withTimeout } from "./helpers.mjs";

describe("reconnect after the bridge restarts on the same port", () => {
  let bridge, echo, counter, ctx;

  before(async () => {
    [echo, counter] = await Promise.all([startEcho(), startCounter(0.05)]);
    bridge = await startBridge();
  });

  after(async () => {
    if (ctx) await withTimeout(ctx.close(), 5000, "context close").catch(() => {});
    await Promise.allSettled([bridge, echo, counter].filter(Boolean).map((p) => (p.stop ? p.stop() : p.proc.stop())));
  });

  test("SUB resumes without duplicates, REQ fails fast while down and works after", async () => {
    const port = bridge.port;
    ctx = zmq.Context(bridge.url, { reconnect: { initialDelay: 0.2, maxDelay: 1, growth: 1.5 }, WebSocket });
    const opens = [];
    const closes = [];
    ctx.on("open", (info) => opens.push(info));
    ctx.on("close", (info) => closes.push(info));

    const req = ctx.Socket(zmq.REQ, echo.address);
    const sub = ctx.Socket(zmq.SUB, counter.address, { filter: "hugo" });
    const received = []; // [phase, n]
    let phase = "before";
    const strays = [];
    sub.callback((msg) => {
      if (typeof msg !== "string" || !/^hugo \d+$/.test(msg)) strays.push(msg);
      else received.push([phase, Number(msg.split(" ")[1])]);
    });
    await withTimeout(sub.ready(), 5000, "first subscription");
    assert.equal(await withTimeout(req.request("one"), 5000, "request"), "got this one");
    await waitUntil(() => received.length >= 5, 5000, "events before the restart");

    // Stop the bridge: it says GOODBYE (wamp.close.system_shutdown); the client retries.
    const lost = nextEvent(ctx, "close", 15000);
    await bridge.stop();
    const closeInfo = await lost;
    assert.equal(closeInfo.willRetry, true, JSON.stringify(closeInfo));
    phase = "down";

    // While disconnected a request fails at once instead of hanging.
    const started = Date.now();
    await assert.rejects(withTimeout(req.request("while down"), 3000, "request while down"), (e) => {
      assert.equal(e.uri, zmq.ERRORS.DISCONNECTED);
      return true;
    });
    assert.ok(Date.now() - started < 500, `failed fast (${Date.now() - started} ms)`);
    assert.equal(sub.state, "reconnecting");

    // Same port again.
    const reopened = nextEvent(ctx, "open", 20000);
    bridge = await startBridge({ port });
    assert.equal(bridge.port, port);
    const info = await reopened;
    assert.equal(info.reconnected, true);
    phase = "after";
    await withTimeout(sub.ready(), 5000, "resubscription");
    await waitUntil(() => received.filter(([p]) => p === "after").length >= 20, 10000, "events after the restart");

    // No duplicate handlers: every counter value arrives exactly once.
    const after = received.filter(([p]) => p === "after").map(([, n]) => n);
    assert.equal(new Set(after).size, after.length, `duplicates in ${after}`);
    const all = received.map(([, n]) => n);
    assert.equal(new Set(all).size, all.length, "no value delivered twice across the restart");
    assert.equal(received.filter(([p]) => p === "down").length, 0, "nothing while disconnected");
    assert.deepEqual(strays, [], "only messages matching the filter");

    assert.equal(await withTimeout(req.request("two"), 5000, "request after"), "got this two");
    const health = await bridge.healthz();
    assert.equal(health.sessions, 1, "one session after reconnect");
    assert.deepEqual(health.zmq_endpoints.sub, [counter.address]);
    assert.equal(opens.length, 2);

    await withTimeout(ctx.close(), 5000, "close");
    await waitUntil(async () => (await bridge.healthz()).sessions === 0, 5000, "session released");
  });
});
