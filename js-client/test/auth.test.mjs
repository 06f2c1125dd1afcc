// Credentials -> WAMP authentication, and one session per distinct set of credentials.
//
// 1. Against a tiny in-test WAMP router (ws + JSON) that records every HELLO and checks
//    each AUTHENTICATE independently (node:crypto): always runs.
// 2. Against the real bridge with `--auth memory:...` (ticket and wampcra): runs when
//    `twistd zmqwamp --help` lists --auth, and is skipped (with the reason) otherwise.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHmac, pbkdf2Sync, randomBytes } from "node:crypto";
import { WebSocketServer } from "ws";
import * as zmq from "../dist/zmqwamp.mjs";
import { WebSocket, bridgeHasAuth, sleep, startBridge, startEcho, waitUntil, withTimeout } from "./helpers.mjs";

const HELLO = 1,
  WELCOME = 2,
  ABORT = 3,
  CHALLENGE = 4,
  AUTHENTICATE = 5,
  GOODBYE = 6;
const ERROR = 8,
  SUBSCRIBE = 32,
  CALL = 48,
  RESULT = 50;

const TICKETS = { hugo: "monkey" }; // authid -> ticket
const TOKENS = { "tok-123": "token-user" }; // token -> authid it stands for
const CRA = { otto: { secret: "s3cret" }, anna: { secret: "salty", salt: "pepper", iterations: 100, keylen: 32 } };

function craSignature(user, challenge) {
  const key = user.salt
    ? pbkdf2Sync(user.secret, user.salt, user.iterations, user.keylen, "sha256").toString("base64")
    : user.secret;
  return createHmac("sha256", Buffer.from(key, "utf8")).update(challenge).digest("base64");
}

/** A minimal WAMP router: authenticates, answers every CALL with the caller's authid. */
function fakeRouter() {
  const wss = new WebSocketServer({
    host: "127.0.0.1",
    port: 0,
    handleProtocols: (protocols) => (protocols.has("wamp.2.json") ? "wamp.2.json" : false),
  });
  const hellos = [];
  wss.on("connection", (ws) => {
    const send = (msg) => ws.send(JSON.stringify(msg));
    let pending = null; // {authid, method, expected}
    let authid = null;
    ws.on("message", (data) => {
      const msg = JSON.parse(data.toString());
      const [type] = msg;
      if (type === HELLO) {
        const details = msg[2];
        hellos.push({ realm: msg[1], authmethods: details.authmethods, authid: details.authid });
        const methods = details.authmethods || ["anonymous"];
        if (methods.includes("ticket")) {
          pending = { method: "ticket", authid: details.authid };
          send([CHALLENGE, "ticket", {}]);
        } else if (methods.includes("wampcra") && CRA[details.authid]) {
          const user = CRA[details.authid];
          const challenge = JSON.stringify({ nonce: randomBytes(8).toString("hex"), authid: details.authid });
          const extra = { challenge };
          if (user.salt) Object.assign(extra, { salt: user.salt, iterations: user.iterations, keylen: user.keylen });
          pending = { method: "wampcra", authid: details.authid, expected: craSignature(user, challenge) };
          send([CHALLENGE, "wampcra", extra]);
        } else if (methods.includes("anonymous")) {
          authid = "anonymous";
          send([
            WELCOME,
            hellos.length,
            { authid, authrole: "anonymous", authmethod: "anonymous", roles: { broker: {}, dealer: {} } },
          ]);
        } else {
          send([ABORT, { message: "no method" }, "wamp.error.no_auth_method"]);
          ws.close();
        }
      } else if (type === AUTHENTICATE) {
        const signature = msg[1];
        let ok = false;
        if (pending.method === "ticket") {
          if (pending.authid !== undefined) ok = TICKETS[pending.authid] === signature;
          else if (TOKENS[signature]) {
            ok = true;
            pending.authid = TOKENS[signature];
          }
        } else {
          ok = signature === pending.expected;
        }
        if (ok) {
          authid = pending.authid;
          send([
            WELCOME,
            hellos.length,
            { authid, authrole: "user", authmethod: pending.method, roles: { broker: {}, dealer: {} } },
          ]);
        } else {
          send([ABORT, { message: "login refused" }, "wamp.error.not_authorized"]);
          ws.close();
        }
      } else if (type === CALL) {
        send([RESULT, msg[1], {}, [authid]]);
      } else if (type === SUBSCRIBE) {
        send([ERROR, SUBSCRIBE, msg[1], {}, "wamp.error.not_authorized", ["no subscriptions here"]]);
      } else if (type === GOODBYE) {
        send([GOODBYE, {}, "wamp.close.goodbye_and_out"]);
        ws.close();
      }
    });
  });
  return new Promise((resolve) =>
    wss.on("listening", () =>
      resolve({
        url: `ws://127.0.0.1:${wss.address().port}/ws`,
        hellos,
        close: () => {
          for (const c of wss.clients) c.terminate();
          return new Promise((r) => wss.close(r));
        },
      }),
    ),
  );
}

describe("credentials -> WAMP authentication (in-test router)", () => {
  let router;
  const contexts = [];
  before(async () => {
    router = await fakeRouter();
  });
  after(async () => {
    await Promise.allSettled(contexts.map((c) => withTimeout(c.close(), 5000, "close")));
    await router.close();
  });

  test("password, token and wampcra (plain and salted) log in; equal credentials share a session", async () => {
    router.hellos.length = 0;
    const ctx = zmq.Context(router.url, { realm: "zmqwamp", WebSocket });
    contexts.push(ctx);
    const anon = ctx.Socket(zmq.REQ, "tcp://127.0.0.1:1");
    const hugo1 = ctx.Socket(zmq.REQ, "tcp://127.0.0.1:1", { username: "hugo", password: "monkey" });
    const hugo2 = ctx.Socket(zmq.REQ, "tcp://127.0.0.1:2", { username: "hugo", password: "monkey" });
    const token = ctx.Socket(zmq.REQ, "tcp://127.0.0.1:1", { token: "tok-123" });
    const otto = ctx.Socket(zmq.REQ, "tcp://127.0.0.1:1", { username: "otto", secret: "s3cret", method: "wampcra" });
    const anna = ctx.Socket(zmq.REQ, "tcp://127.0.0.1:1", { username: "anna", secret: "salty", method: "wampcra" });
    const who = await withTimeout(
      Promise.all([anon, hugo1, hugo2, token, otto, anna].map((s) => s.request("who am i"))),
      5000,
      "requests",
    );
    assert.deepEqual(who, ["anonymous", "hugo", "hugo", "token-user", "otto", "anna"]);
    assert.equal(ctx.sessionCount, 5, "hugo's two sockets share one session");
    const byAuthid = Object.fromEntries(
      router.hellos.map((h) => [h.authid ?? (h.authmethods ? "(token)" : "(anonymous)"), h]),
    );
    assert.equal(router.hellos.length, 5);
    assert.equal(byAuthid["(anonymous)"].authmethods, undefined);
    assert.deepEqual(byAuthid.hugo.authmethods, ["ticket"]);
    assert.deepEqual(byAuthid["(token)"].authmethods, ["ticket"]);
    assert.deepEqual(byAuthid.otto.authmethods, ["wampcra"]);
    assert.deepEqual(byAuthid.anna.authmethods, ["wampcra"]);
    assert.ok(router.hellos.every((h) => h.realm === "zmqwamp"));
    await ctx.close();
  });

  test("a refused login reaches promise, errback, SUB errback and 'error'; it is not retried", async () => {
    router.hellos.length = 0;
    const ctx = zmq.Context(router.url, { reconnect: { initialDelay: 0.05 }, WebSocket });
    contexts.push(ctx);
    const errors = [];
    ctx.on("error", (e) => errors.push(e));
    const req = ctx.Socket(zmq.REQ, "tcp://127.0.0.1:1", { username: "hugo", password: "wrong" });
    await assert.rejects(withTimeout(req.request("x"), 5000, "request"), (e) => {
      assert.equal(e.uri, "wamp.error.not_authorized");
      assert.equal(e.message, "login refused");
      return true;
    });
    const viaErrback = await withTimeout(
      new Promise((resolve) => req.send("x", () => resolve(null), { errback: resolve })),
      5000,
      "errback",
    );
    assert.equal(viaErrback.uri, "wamp.error.not_authorized");
    const sub = ctx.Socket(zmq.SUB, "tcp://127.0.0.1:3", { username: "otto", secret: "nope", method: "wampcra" });
    const subError = await withTimeout(new Promise((resolve) => sub.callback(() => {}, resolve)), 5000, "SUB errback");
    assert.equal(subError.uri, "wamp.error.not_authorized");
    await sleep(300);
    assert.equal(router.hellos.length, 2, "one HELLO per credential set, no retry after a refusal");
    assert.ok(errors.some((e) => e.uri === "wamp.error.not_authorized"));
    await ctx.close();
  });
});

const auth = bridgeHasAuth();

describe(
  "two credential sets against the real bridge (--auth memory:...)",
  { skip: auth ? false : "this bridge has no --auth yet" },
  () => {
    let bridge, echo, ctx;
    before(async () => {
      echo = await startEcho();
      bridge = await startBridge({ anonymous: false, args: ["--auth", "memory:hugo:monkey:otto:s3cret"] });
    });
    after(async () => {
      if (ctx) await withTimeout(ctx.close(), 5000, "close").catch(() => {});
      await Promise.allSettled([bridge, echo].filter(Boolean).map((p) => (p.stop ? p.stop() : p.proc.stop())));
    });

    test("ticket (username/password and token) and wampcra sessions; bad password refused", async () => {
      ctx = zmq.Context(bridge.url, { WebSocket });
      const errors = [];
      ctx.on("error", (e) => errors.push(e));
      const opened = [];
      ctx.on("open", (info) => opened.push(info));
      const hugo = ctx.Socket(zmq.REQ, echo.address, { username: "hugo", password: "monkey" });
      const hugoToken = ctx.Socket(zmq.REQ, echo.address, { token: "monkey", username: "hugo" });
      const otto = ctx.Socket(zmq.REQ, echo.address, { username: "otto", secret: "s3cret", method: "wampcra" });
      const replies = await withTimeout(
        Promise.all([hugo.request("h"), hugoToken.request("t"), otto.request("o")]),
        10000,
        "requests",
      );
      assert.deepEqual(replies, ["got this h", "got this t", "got this o"]);
      assert.equal(ctx.sessionCount, 2, "the token login equals hugo's password login: same session");
      assert.deepEqual(opened.map((i) => [i.authid, i.authmethod]).sort(), [
        ["hugo", "ticket"],
        ["otto", "wampcra"],
      ]);
      assert.equal((await bridge.healthz()).sessions, 2);

      const wrong = ctx.Socket(zmq.REQ, echo.address, { username: "hugo", password: "not-monkey" });
      await assert.rejects(
        withTimeout(wrong.request("x"), 10000, "bad login"),
        (e) => e.uri === "wamp.error.not_authorized",
      );
      const anonymous = ctx.Socket(zmq.REQ, echo.address);
      await assert.rejects(
        withTimeout(anonymous.request("x"), 10000, "anonymous"),
        (e) => e.uri === "wamp.error.not_authorized",
      );
      assert.deepEqual(
        errors.map((e) => e.uri),
        ["wamp.error.not_authorized", "wamp.error.not_authorized"],
        "each refused login reported once",
      );

      await ctx.close();
      await waitUntil(async () => (await bridge.healthz()).sessions === 0, 5000, "sessions released");
    });
  },
);
