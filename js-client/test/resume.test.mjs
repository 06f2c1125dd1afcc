// The SUB socket's resume logic (issue 17) against an in-process WAMP peer: which SUBSCRIBE options
// it sends (get_retained for lastValue, _since/_epoch after a reconnect), which EVENTs reach the
// callback (each publication once, in order, even when another socket's SUBSCRIBE shares the
// subscription id), and the "gap" event before the message after a gap.  No network: the
// WebSocket is a stand-in speaking WAMP JSON.  history.test.mjs runs the same against a real bridge.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as zmq from "../dist/zmqwamp.mjs";
import { waitUntil } from "./helpers.mjs";

const HELLO = 1;
const WELCOME = 2;
const GOODBYE = 6;
const SUBSCRIBE = 32;
const SUBSCRIBED = 33;
const UNSUBSCRIBE = 34;
const UNSUBSCRIBED = 35;
const EVENT = 36;
const ERROR = 8;

/**
 * A WAMP peer behind a WebSocket class: answers HELLO, SUBSCRIBE, UNSUBSCRIBE and GOODBYE, records
 * every SUBSCRIBE, gives one subscription id per (topic, filter) within a session (as the bridge
 * does), and lets the test send EVENTs and drop the connection.
 */
class FakePeer {
  constructor() {
    /** @type {{session: number, topic: string, options: object, id: number}[]} */
    this.subscribes = [];
    /** Answers for the next SUBSCRIBEs, in order: an ERROR [uri, message] instead of SUBSCRIBED (null: SUBSCRIBED). */
    this.refusals = [];
    /** UNSUBSCRIBE requests received. */
    this.unsubscribes = [];
    this.sessions = 0;
    this.ws = null;
    const peer = this;
    this.WebSocket = class FakeWebSocket {
      constructor(url, protocols) {
        this.protocol = protocols[0];
        this.binaryType = "blob";
        this.onopen = this.onmessage = this.onclose = this.onerror = null;
        this.closed = false;
        this.session = ++peer.sessions;
        this.subIds = new Map();
        peer.ws = this;
        setTimeout(() => this.onopen?.(), 0);
      }
      // Answers as a real WebSocket does: in a later task, never from inside the client's send().
      send(data) {
        queueMicrotask(() => this.receive(data));
      }
      receive(data) {
        const msg = JSON.parse(data);
        if (msg[0] === HELLO) {
          this.deliver([WELCOME, this.session, { roles: { broker: { features: {} } }, authmethod: "anonymous" }]);
        } else if (msg[0] === SUBSCRIBE) {
          const [, request, options, topic] = msg;
          const key = `${topic}\u0000${options.filter ?? ""}`;
          if (!this.subIds.has(key)) this.subIds.set(key, 1000 * this.session + this.subIds.size);
          const id = this.subIds.get(key);
          peer.subscribes.push({ session: this.session, topic, options, id });
          const refusal = peer.refusals.shift();
          if (refusal) this.deliver([ERROR, SUBSCRIBE, request, {}, refusal[0], [refusal[1]]]);
          else this.deliver([SUBSCRIBED, request, id]);
        } else if (msg[0] === UNSUBSCRIBE) {
          peer.unsubscribes.push(msg[2]);
          this.deliver([UNSUBSCRIBED, msg[1]]);
        } else if (msg[0] === GOODBYE) {
          this.deliver([GOODBYE, {}, "wamp.close.goodbye_and_out"]);
          this.close(1000, "", true);
        }
      }
      deliver(msg) {
        if (!this.closed) this.onmessage?.({ data: JSON.stringify(msg) });
      }
      close(code = 1000, reason = "", wasClean = true) {
        if (this.closed) return;
        this.closed = true;
        setTimeout(() => this.onclose?.({ code, reason, wasClean }), 0);
      }
    };
  }

  /** The connection dropped (not a clean close): the client reconnects. */
  drop() {
    this.ws.close(1006, "", false);
  }

  /** An EVENT on the current connection. */
  event(subscriptionId, publication, details, args) {
    this.ws.deliver([EVENT, subscriptionId, publication, details, args]);
  }
}

function context(peer, options = {}) {
  return zmq.Context("ws://fake/ws", {
    WebSocket: peer.WebSocket,
    reconnect: { initialDelay: 0.01, maxDelay: 0.01, jitter: 0 },
    logger: { warn() {}, error() {} },
    ...options,
  });
}

/** A SUB socket whose messages and gaps land in one log, in the order the socket emits them. */
async function loggedSub(ctx, endpoint, options) {
  const sub = ctx.Socket(zmq.SUB, endpoint, options);
  const log = [];
  sub.on("gap", (gap) => log.push(["gap", gap]));
  sub.callback((msg) => log.push(msg));
  await sub.ready();
  return { sub, log };
}

const E = "e1"; // the bridge's epoch in these tests

test("lastValue asks for the retained message; a resubscription resumes after the last message instead", async () => {
  const peer = new FakePeer();
  const ctx = context(peer);
  const { sub, log } = await loggedSub(ctx, "ticks", { lastValue: true, filter: "t" });
  assert.deepEqual(peer.subscribes[0].options, { filter: "t", get_retained: true });
  const id = peer.subscribes[0].id;
  peer.event(id, 7, { retained: true, _epoch: E }, ["t 7"]);
  peer.event(id, 9, { _epoch: E }, ["t 9"]);
  assert.deepEqual(log, ["t 7", "t 9"]);

  const reopened = new Promise((resolve) => ctx.on("open", resolve));
  peer.drop();
  await reopened;
  await waitUntil(() => peer.subscribes.length === 2, 2000, "the resubscription");
  assert.deepEqual(peer.subscribes[1].options, { filter: "t", _since: 9, _epoch: E }, "no get_retained any more");
  await sub.ready();
  const id2 = peer.subscribes[1].id;
  peer.event(id2, 10, { _epoch: E }, ["t 10"]);
  assert.deepEqual(log, ["t 7", "t 9", "t 10"], "no gap reported when the bridge reports none");
  await ctx.close();
});

test("a socket that never got a message subscribes afresh after a reconnect (get_retained again with lastValue)", async () => {
  const peer = new FakePeer();
  const ctx = context(peer);
  const a = await loggedSub(ctx, "ticks", { lastValue: true });
  const b = await loggedSub(ctx, "other");
  peer.drop();
  await waitUntil(() => peer.subscribes.length === 4, 2000, "the resubscriptions");
  assert.deepEqual(
    peer.subscribes.slice(2).map((s) => [s.topic, s.options]),
    [
      ["ticks", { get_retained: true }],
      ["other", {}],
    ],
  );
  assert.deepEqual([a.log, b.log], [[], []]);
  await ctx.close();
});

test('"gap" is emitted once, before the callback gets the first message after the gap', async () => {
  const peer = new FakePeer();
  const ctx = context(peer);
  const { sub, log } = await loggedSub(ctx, "ticks");
  peer.event(peer.subscribes[0].id, 3, { _epoch: E }, ["m3"]);
  peer.drop();
  await waitUntil(() => peer.subscribes.length === 2, 2000, "the resubscription");
  await sub.ready();
  assert.deepEqual(peer.subscribes[1].options, { _since: 3, _epoch: E });
  const id = peer.subscribes[1].id;
  peer.event(id, 50, { _epoch: E, _gap: { since: 3, first: 50, reason: "history" } }, ["m50"]);
  peer.event(id, 51, { _epoch: E, _gap: { since: 3, first: 51, reason: "history" } }, ["m51"]);
  peer.event(id, 52, { _epoch: E }, ["m52"]);
  assert.deepEqual(log, ["m3", ["gap", { since: 3, first: 50, reason: "history" }], "m50", "m51", "m52"]);

  // Another bridge process (new epoch): ids start again, the socket follows the new epoch.
  peer.drop();
  await waitUntil(() => peer.subscribes.length === 3, 2000, "the second resubscription");
  await sub.ready();
  assert.deepEqual(peer.subscribes[2].options, { _since: 52, _epoch: E });
  const id3 = peer.subscribes[2].id;
  peer.event(id3, 2, { _epoch: "e2", _gap: { since: 52, first: 2, reason: "epoch" } }, ["n2"]);
  peer.event(id3, 3, { _epoch: "e2" }, ["n3"]);
  assert.deepEqual(log.slice(5), [["gap", { since: 52, first: 2, reason: "epoch" }], "n2", "n3"]);
  await ctx.close();
});

test("an endpoint without history: _since without _epoch, and the bridge's no_history gap is passed on", async () => {
  const peer = new FakePeer();
  const ctx = context(peer);
  const { sub, log } = await loggedSub(ctx, "tcp://127.0.0.1:9000");
  peer.event(peer.subscribes[0].id, 4, {}, ["a"]);
  peer.event(peer.subscribes[0].id, 5, {}, ["b"]);
  peer.drop();
  await waitUntil(() => peer.subscribes.length === 2, 2000, "the resubscription");
  await sub.ready();
  assert.deepEqual(peer.subscribes[1].options, { _since: 5 });
  // Without an epoch ids are not compared across sessions: a lower id is a message, not a duplicate.
  peer.event(peer.subscribes[1].id, 1, { _gap: { since: 5, first: 1, reason: "no_history" } }, ["c"]);
  assert.deepEqual(log, ["a", "b", ["gap", { since: 5, first: 1, reason: "no_history" }], "c"]);
  await ctx.close();
});

test("sockets sharing a subscription id each get every message once, and only the retained message they asked for", async () => {
  const peer = new FakePeer();
  const ctx = context(peer);
  const a = await loggedSub(ctx, "ticks");
  const id = peer.subscribes[0].id;
  peer.event(id, 1, { _epoch: E }, ["m1"]);
  peer.event(id, 2, { _epoch: E }, ["m2"]);
  // b's SUBSCRIBE gets the same subscription id; its retained message reaches a's handler too.
  const b = await loggedSub(ctx, "ticks", { lastValue: true });
  assert.equal(peer.subscribes[1].id, id);
  peer.event(id, 2, { _epoch: E, retained: true }, ["m2"]);
  peer.event(id, 3, { _epoch: E }, ["m3"]);
  assert.deepEqual(a.log, ["m1", "m2", "m3"]);
  assert.deepEqual(b.log, ["m2", "m3"]);

  // After a reconnect both resubscribe with _since 3; the peer replays for each SUBSCRIBE (the
  // second replay reaches both handlers): each socket still sees 4 and 5 once.  The gap that
  // answers a _since only the other socket sent is not this socket's.
  peer.drop();
  await waitUntil(() => peer.subscribes.length === 4, 2000, "the resubscriptions");
  await Promise.all([a.sub.ready(), b.sub.ready()]);
  const id2 = peer.subscribes[2].id;
  assert.deepEqual(
    peer.subscribes.slice(2).map((s) => s.options),
    [
      { _since: 3, _epoch: E },
      { _since: 3, _epoch: E },
    ],
  );
  for (let round = 0; round < 2; round++) {
    peer.event(id2, 4, { _epoch: E }, ["m4"]);
    peer.event(id2, 5, { _epoch: E }, ["m5"]);
  }
  peer.event(id2, 6, { _epoch: E, _gap: { since: 1, first: 6, reason: "history" } }, ["m6"]);
  assert.deepEqual(a.log, ["m1", "m2", "m3", "m4", "m5", "m6"]);
  assert.deepEqual(b.log, ["m2", "m3", "m4", "m5", "m6"]);
  await ctx.close();
});

test("a socket that did not ask for the retained message does not take another socket's", async () => {
  const peer = new FakePeer();
  const ctx = context(peer);
  const a = await loggedSub(ctx, "ticks");
  const b = await loggedSub(ctx, "ticks", { lastValue: true });
  const id = peer.subscribes[1].id;
  assert.equal(peer.subscribes[0].id, id);
  peer.event(id, 5, { _epoch: E, retained: true }, ["m5"]);
  peer.event(id, 6, { _epoch: E }, ["m6"]);
  assert.deepEqual(a.log, ["m6"]);
  assert.deepEqual(b.log, ["m5", "m6"]);
  await ctx.close();
});

test("a gap listener that throws goes to the context's error listeners; events and options are checked", async () => {
  const peer = new FakePeer();
  const ctx = context(peer);
  const errors = [];
  ctx.on("error", (e) => errors.push(e));
  const sub = ctx.Socket(zmq.SUB, "ticks");
  const got = [];
  sub.callback((msg) => got.push(msg));
  sub.on("gap", () => {
    throw new Error("listener bug");
  });
  await sub.ready();
  peer.event(peer.subscribes[0].id, 1, { _epoch: E }, ["m1"]);
  peer.drop();
  await waitUntil(() => peer.subscribes.length === 2, 2000, "the resubscription");
  await sub.ready();
  peer.event(peer.subscribes[1].id, 9, { _epoch: E, _gap: { since: 1, first: 9, reason: "history" } }, ["m9"]);
  assert.deepEqual(got, ["m1", "m9"], "the callback still gets the message");
  assert.equal(errors.length, 1);
  assert.match(errors[0].message, /listener bug/);

  assert.throws(() => sub.on("message", () => {}), /unknown event "message" \(gap\)/);
  assert.throws(() => sub.on("gap", "not a function"), TypeError);
  assert.throws(() => ctx.Socket(zmq.SUB, "ticks", { lastValue: "yes" }), /lastValue must be true or false/);
  await ctx.close();
});

// Issue 21: the bridge replays in steps, stops a replay at a full outgoing buffer ("slow_consumer" gap), and
// refuses a SUBSCRIBE with _since/get_retained while the same session's replay for that subscription runs.

test('a "slow_consumer" gap: the socket resumes from its last message, and its callback sees each message once, in order', async () => {
  const peer = new FakePeer();
  const ctx = context(peer);
  const { sub, log } = await loggedSub(ctx, "ticks", { filter: "t" });
  const id = peer.subscribes[0].id;
  peer.event(id, 1, { _epoch: E }, ["t 1"]);
  peer.event(id, 2, { _epoch: E }, ["t 2"]);
  // the replay stopped after 2; 3 and 4 were not sent; 5 is live, then 6 before the bridge sees the resume
  peer.event(id, 5, { _epoch: E, _gap: { since: 2, first: 5, reason: "slow_consumer" } }, ["t 5"]);
  peer.event(id, 6, { _epoch: E }, ["t 6"]);
  assert.deepEqual(log, ["t 1", "t 2"], "nothing taken after the gap: it is replayed");
  await waitUntil(() => peer.subscribes.length === 2, 2000, "the resuming SUBSCRIBE");
  assert.deepEqual(peer.subscribes[1].options, { filter: "t", _since: 2, _epoch: E });
  await waitUntil(() => sub._subscription && sub._liveGeneration === sub._generation, 2000, "SUBSCRIBED");
  for (const n of [3, 4, 5, 6, 7]) peer.event(id, n, { _epoch: E }, [`t ${n}`]);
  assert.deepEqual(log, ["t 1", "t 2", "t 3", "t 4", "t 5", "t 6", "t 7"]);
  assert.deepEqual(peer.unsubscribes, [], "the old handler was given back without an UNSUBSCRIBE");
  await ctx.close();
});

test("a SUBSCRIBE refused while the session's replay runs (two sockets resuming at once) is tried again", async () => {
  const peer = new FakePeer();
  const ctx = context(peer);
  const a = await loggedSub(ctx, "ticks");
  const b = await loggedSub(ctx, "ticks");
  const id = peer.subscribes[0].id;
  peer.event(id, 1, { _epoch: E }, ["m1"]);
  // after the reconnect: the first SUBSCRIBE is answered, the second refused while the first one's replay runs
  peer.refusals = [
    null,
    ["zmqwamp.error.limit_exceeded", "replay_in_progress: this session's replay is still running"],
  ];
  const errors = [];
  ctx.on("error", (e) => errors.push(e));
  peer.drop();
  await waitUntil(() => peer.subscribes.length === 5, 3000, "the refused SUBSCRIBE tried again");
  await Promise.all([a.sub.ready(), b.sub.ready()]);
  assert.deepEqual(
    peer.subscribes.slice(2).map((s) => s.options),
    [
      { _since: 1, _epoch: E },
      { _since: 1, _epoch: E },
      { _since: 1, _epoch: E },
    ],
  );
  const id2 = peer.subscribes[4].id;
  peer.event(id2, 2, { _epoch: E }, ["m2"]);
  assert.deepEqual(
    [a.log, b.log],
    [
      ["m1", "m2"],
      ["m1", "m2"],
    ],
  );
  assert.deepEqual(errors, []);
  await ctx.close();
});

test('a resume the bridge refuses for good: back to live messages, and "gap" before the next one', async () => {
  const peer = new FakePeer();
  const ctx = context(peer);
  const errors = [];
  ctx.on("error", (e) => errors.push(e));
  const { log } = await loggedSub(ctx, "ticks");
  const id = peer.subscribes[0].id;
  peer.event(id, 1, { _epoch: E }, ["m1"]);
  peer.refusals.push(["wamp.error.not_authorized", "no longer allowed"]);
  peer.event(id, 4, { _epoch: E, _gap: { since: 1, first: 4, reason: "slow_consumer" } }, ["m4"]);
  await waitUntil(() => errors.length === 1, 2000, "the refusal reported");
  peer.event(id, 5, { _epoch: E }, ["m5"]);
  assert.deepEqual(log, ["m1", ["gap", { since: 1, first: 5, reason: "slow_consumer" }], "m5"]);
  assert.equal(errors[0].uri, "wamp.error.not_authorized");
  await ctx.close();
});

test("a gap in the middle of a replay (since: the last message taken) is emitted too", async () => {
  const peer = new FakePeer();
  const ctx = context(peer);
  const { sub, log } = await loggedSub(ctx, "ticks");
  peer.event(peer.subscribes[0].id, 1, { _epoch: E }, ["m1"]);
  peer.drop();
  await waitUntil(() => peer.subscribes.length === 2, 2000, "the resubscription");
  await sub.ready();
  const id = peer.subscribes[1].id;
  peer.event(id, 2, { _epoch: E }, ["m2"]);
  peer.event(id, 9, { _epoch: E, _gap: { since: 2, first: 9, reason: "history" } }, ["m9"]); // the ring evicted 3-8
  assert.deepEqual(log, ["m1", "m2", ["gap", { since: 2, first: 9, reason: "history" }], "m9"]);
  await ctx.close();
});
