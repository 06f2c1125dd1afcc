// Issue 17 end to end: a real twistd bridge with history aliases, real pyzmq PUBs (the example
// counter: `hugo <n>`, n counting up), js-client SUB sockets.  The connection is cut by a TCP proxy
// between client and bridge (every connection reset, new ones refused for 2 s); the bridge keeps
// running.  With a history longer than the cut the callback gets every message once, in order;
// with a shorter one it gets a "gap" event, then the held and live messages in order.  lastValue
// gets the retained message at once.  All on 127.0.0.1; every wait is bounded.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as zmq from "../dist/zmqwamp.mjs";
import { WebSocket, nextEvent, startBridge, startCounter, startProxy, waitUntil, withTimeout } from "./helpers.mjs";

const CUT_MS = 2000;

/** A SUB socket's messages (`hugo <n>` -> n) and gap events, in the order the socket emitted them. */
function record(sub) {
  const log = [];
  sub.on("gap", (gap) => log.push({ gap }));
  sub.callback((msg) => {
    const m = typeof msg === "string" && /^hugo (\d+)$/.exec(msg);
    log.push(m ? Number(m[1]) : { stray: msg });
  });
  return {
    sub,
    log,
    numbers: () => log.filter((x) => typeof x === "number"),
    last: () => log.filter((x) => typeof x === "number").at(-1) ?? -1,
  };
}

/** n, n+1, n+2, ...: every message once, in order. */
function assertConsecutive(numbers, what) {
  const bad = numbers.findIndex((n, i) => i > 0 && n !== numbers[i - 1] + 1);
  assert.equal(bad, -1, `${what}: ${numbers[bad - 1]} then ${numbers[bad]} (of ${numbers.length})`);
}

async function metric(bridge, line) {
  const text = await withTimeout(
    fetch(`${bridge.http}/metrics`).then((r) => r.text()),
    5000,
    "GET /metrics",
  );
  const m = new RegExp(`^${line.replace(/[{}"]/g, "\\$&")} (\\S+)$`, "m").exec(text);
  return m ? Number(m[1]) : null;
}

describe("history: gap-free resubscribe and last value against a real bridge", () => {
  let bridge, fast, slow, proxy;
  const contexts = new Set();
  const context = (url, options) => {
    const ctx = zmq.Context(url, { WebSocket, ...options });
    contexts.add(ctx);
    return ctx;
  };

  before(async () => {
    // fast: 100 messages/s; slow: one every 2 s.
    [fast, slow] = await Promise.all([startCounter(0.01, "hugo"), startCounter(2, "hugo")]);
    bridge = await startBridge({
      config: `
[endpoints.ticks]
address = "${fast.address}"
kind = "sub"
history = 1000
keep_open = true

[endpoints.short]
address = "${fast.address}"
kind = "sub"
history = 50
keep_open = true

[endpoints.slow]
address = "${slow.address}"
kind = "sub"
history = 10
keep_open = true
`,
    });
    proxy = await startProxy(bridge.port);
  });

  after(async () => {
    await Promise.allSettled([...contexts].map((c) => withTimeout(c.close(), 5000, "context close")));
    if (proxy) await proxy.close();
    await Promise.allSettled([bridge, fast, slow].filter(Boolean).map((p) => (p.stop ? p.stop() : p.proc.stop())));
  });

  test("across a 2 s cut: every message once and in order (history 1000), or a gap then in order (history 50)", async () => {
    const ctx = context(proxy.url, { reconnect: { initialDelay: 0.2, maxDelay: 0.5, growth: 1.5 } });
    const full = record(ctx.Socket(zmq.SUB, "ticks", { filter: "hugo" }));
    const short = record(ctx.Socket(zmq.SUB, "short", { filter: "hugo" }));
    await withTimeout(Promise.all([full.sub.ready(), short.sub.ready()]), 10000, "subscriptions");
    await waitUntil(
      () => full.numbers().length >= 50 && short.numbers().length >= 50,
      10000,
      "messages before the cut",
    );

    const lost = nextEvent(ctx, "close", 5000);
    const back = nextEvent(ctx, "open", 20000, (info) => info.reconnected);
    const cutAt = Date.now();
    proxy.cut(CUT_MS);
    await lost;
    const atLoss = { full: full.log.length, short: short.log.length };
    const lastFull = full.last();
    const lastShort = short.last();
    await back;
    const downMs = Date.now() - cutAt;
    assert.ok(downMs >= CUT_MS - 100, `the proxy refused reconnects for the whole cut (back after ${downMs} ms)`);
    assert.deepEqual(
      { full: full.log.length, short: short.log.length },
      atLoss,
      "nothing was delivered while disconnected",
    );

    // ~100 messages/s were published during the cut: wait until both are well past it.
    const past = lastFull + Math.ceil(((downMs + 2000) * 100) / 1000);
    await waitUntil(() => full.last() >= past && short.last() >= past, 20000, `both sockets past hugo ${past}`);

    // History 1000 > what the cut missed: all of it, once, in order, and no gap.
    assert.deepEqual(
      full.log.filter((x) => typeof x !== "number"),
      [],
    );
    assertConsecutive(full.numbers(), "history 1000");
    assert.ok(full.numbers().includes(lastFull + 1), "the message after the last one before the cut arrived");

    // History 50 < what the cut missed: one gap event, then the held messages and live ones, in order.
    const gapAt = short.log.findIndex((x) => x.gap);
    assert.equal(
      gapAt,
      atLoss.short,
      `the gap comes right after the messages before the cut: ${JSON.stringify(short.log.slice(gapAt - 2, gapAt + 3))}`,
    );
    const { gap } = short.log[gapAt];
    assert.equal(gap.reason, "history");
    assert.equal(typeof gap.since, "number");
    assert.ok(gap.first > gap.since + 1, JSON.stringify(gap));
    const before = short.log.slice(0, gapAt);
    const afterGap = short.log.slice(gapAt + 1);
    assert.ok(
      afterGap.every((x) => typeof x === "number"),
      "one gap event and no strays",
    );
    assertConsecutive(before, "history 50, before the cut");
    assertConsecutive(afterGap, "history 50, after the gap");
    assert.ok(afterGap[0] > lastShort + 1, `messages were missed: ${lastShort} then ${afterGap[0]}`);

    // The bridge replayed from its rings, and counted the gap.
    assert.ok((await metric(bridge, "zmqwamp_history_replayed_total")) > 100, "replayed from the history");
    assert.ok((await metric(bridge, 'zmqwamp_history_gaps_total{reason="history"}')) >= 1, "gap counted");
  });

  test("lastValue gets the retained message at once; a socket without it in the same session does not", async (t) => {
    const watcher = record(context(bridge.url).Socket(zmq.SUB, "slow"));
    await waitUntil(() => watcher.numbers().length >= 1, 10000, "a first message from the slow PUB");
    const k = watcher.last(); // the next one comes about 2 s later
    const started = Date.now();
    const ctx = context(bridge.url, { serializer: "msgpack" }); // the bridge's details in a binary serializer too
    const plain = record(ctx.Socket(zmq.SUB, "slow")); // same session and subscription id as `last`
    const last = record(ctx.Socket(zmq.SUB, "slow", { lastValue: true }));
    await waitUntil(() => last.numbers().length >= 1, 5000, "the retained message");
    const ms = Date.now() - started;
    t.diagnostic(`retained message ${ms} ms after the socket was made (connect included)`);
    assert.equal(last.numbers()[0], k, "the newest message published before subscribing");
    assert.ok(ms < 1000, `at once, not with the next publication (${ms} ms)`);
    await waitUntil(() => plain.numbers().length >= 1 && last.numbers().length >= 2, 10000, "the next message");
    assert.deepEqual(last.numbers().slice(0, 2), [k, k + 1]);
    assert.equal(plain.numbers()[0], k + 1, "the socket without lastValue starts with the next live message");
    assert.deepEqual(
      [...plain.log, ...last.log].filter((x) => typeof x !== "number"),
      [],
    );
  });
});
