// DEALER and PUSH sockets against the real bridge (twistd) and real pyzmq services.
//
// Runs today: what the bridge already does with the WAMP words these sockets use.  A DEALER request to
// a REP endpoint is a CALL with `receive_progress` that the bridge answers with one final RESULT (one
// part, the last); CANCEL ends it at once with nothing after; the bridge's own timeout; a PUBLISH the
// bridge refuses rejects the PUSH send.
//
// Skipped until the bridge streams (issue 23 items 1 and 4, built on the server side in parallel): a
// streaming ROUTER service behind an alias with `kind = "stream"`, and PULL workers behind `kind =
// "push"`.  Switch them on by setting STREAMING_BRIDGE below to true (and adjust STREAM_SERVICE to the
// reply convention the bridge documents, if it differs from MDP/0.2's PARTIAL 0x02 / FINAL 0x03).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as zmq from "../dist/zmqwamp.mjs";
import { Proc, WebSocket, drain, sleep, startBridge, startEcho, venvBin, waitUntil, withTimeout } from "./helpers.mjs";

const quiet = { warn() {}, error() {} };

describe("DEALER and PUSH sockets on today's bridge (REP endpoints, CANCEL, refused PUBLISH)", () => {
  let bridge, echo, slow, ctx;
  before(async () => {
    [echo, slow] = await Promise.all([startEcho(), startEcho(["--delay", "2"])]);
    bridge = await startBridge({ allow: [echo.address, slow.address] });
    ctx = zmq.Context(bridge.url, { WebSocket, logger: quiet });
  });
  after(async () => {
    if (ctx) await withTimeout(ctx.close(), 5000, "context close").catch(() => {});
    await Promise.allSettled([bridge, echo, slow].filter(Boolean).map((p) => (p.stop ? p.stop() : p.proc.stop())));
  });

  test("a DEALER request to a REP endpoint: one part, the last (callback and for await)", async () => {
    const dealer = ctx.Socket(zmq.DEALER, echo.address);
    const log = [];
    const s = dealer.send("hi", (part, { last, frames }) => log.push([part, last, frames]));
    await waitUntil(() => s.state !== "open", 5000, "the reply");
    assert.equal(s.state, "done", s.error?.message);
    assert.deepEqual(log, [["got this hi", true, ["got this hi"]]]);
    const parts = [];
    for await (const part of dealer.stream(["a", new Uint8Array([0xff])], { multipart: true })) parts.push(part);
    assert.deepEqual(parts, [["got this a", new Uint8Array([0xff])]]);
  });

  test("cancel(): the bridge answers at once, nothing reaches the application after, the session goes on", async () => {
    const dealer = ctx.Socket(zmq.DEALER, slow.address);
    const log = [];
    const s = dealer.send("slow", (part) => log.push(part), { errback: (e) => log.push(e.uri) });
    await waitUntil(async () => (await bridge.healthz()).calls_in_flight === 1, 5000, "the call at the bridge");
    const started = Date.now();
    await withTimeout(s.cancel("killnowait"), 1500, "the bridge's answer to CANCEL");
    assert.ok(Date.now() - started < 1500, "before the REP's reply (2 s)");
    assert.equal(s.state, "canceled");
    await waitUntil(async () => (await bridge.healthz()).calls_in_flight === 0, 3000, "the call ended at the bridge");
    await sleep(2200); // the REP's late reply, if the bridge still forwarded it
    assert.deepEqual(log, []);
    const req = ctx.Socket(zmq.REQ, echo.address);
    assert.equal(await withTimeout(req.request("after"), 5000, "request"), "got this after");
  });

  test("a timeout: the bridge's own ERROR (wamp.error.canceled) ends the stream", async () => {
    const dealer = ctx.Socket(zmq.DEALER, slow.address);
    await assert.rejects(
      drain(dealer.stream("late", { timeout: 300 })),
      (e) => e.uri === zmq.ERRORS.CANCELED && !/no reply from the bridge/.test(e.message),
    );
  });

  test("a PUSH the bridge refuses rejects with the bridge's ERROR (a REP address is no PUSH endpoint)", async () => {
    const push = ctx.Socket(zmq.PUSH, echo.address);
    await assert.rejects(withTimeout(push.send("job"), 5000, "the answer"), (e) => {
      assert.ok(e instanceof zmq.ZmqError);
      assert.match(e.uri, /^(wamp|zmqwamp)\.error\./);
      return true;
    });
    const req = ctx.Socket(zmq.REQ, echo.address);
    assert.equal(await withTimeout(req.request("still"), 5000, "request"), "got this still");
  });
});

// -- against the streaming bridge (issue 23 items 1, 3, 4) ---------------------------------------

const STREAMING_BRIDGE = false;
const SKIP_REASON =
  'needs the bridge\'s streaming endpoints: alias kind = "stream" (progressive RESULTs from a ROUTER ' +
  'service, CANCEL forwarded to it) and kind = "push" (acknowledged PUBLISH to PULL workers), issue 23 ' +
  "items 1, 3 and 4 on the server side; set STREAMING_BRIDGE in test/streaming.test.mjs to run them";

// A ROUTER service that streams the words of each request, one reply each: [PARTIAL, word] ...
// [FINAL]; a request "cancel?" then waits for the bridge's cancel and prints what it got.
const STREAM_SERVICE = `
import sys, time, zmq
PARTIAL, FINAL = b"\\x02", b"\\x03"
sock = zmq.Context().socket(zmq.ROUTER)
sock.bind(sys.argv[1])
print("stream ROUTER bound to", sock.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
while True:
    frames = sock.recv_multipart()
    i = frames.index(b"") + 1 if b"" in frames else 1
    envelope, body = frames[:i], frames[i:]
    print("request", body, flush=True)
    words = body[0].split()
    for n, word in enumerate(words):
        sock.send_multipart(envelope + [PARTIAL, word])
        time.sleep(0.02)
    if body[0].startswith(b"cancel?"):
        print("after cancel", sock.recv_multipart()[i:], flush=True)
        continue
    sock.send_multipart(envelope + [FINAL])
`;

const PULL_WORKER = `
import sys, zmq
sock = zmq.Context().socket(zmq.PULL)
sock.bind(sys.argv[1])
print("PULL bound to", sock.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
while True:
    print("pulled", sock.recv_multipart(), flush=True)
`;

describe("DEALER and PUSH sockets on the streaming bridge", { skip: STREAMING_BRIDGE ? false : SKIP_REASON }, () => {
  let bridge, service, worker, ctx;
  before(async () => {
    service = new Proc([venvBin("python"), "-c", STREAM_SERVICE, "tcp://127.0.0.1:*"]);
    worker = new Proc([venvBin("python"), "-c", PULL_WORKER, "tcp://127.0.0.1:*"]);
    const [s, w] = await Promise.all([service.waitFor(/bound to (\S+)/), worker.waitFor(/bound to (\S+)/)]);
    bridge = await startBridge({
      allow: [],
      config: `[endpoints.words]\naddress = "${s[1]}"\nkind = "stream"\n\n[endpoints.jobs]\naddress = "${w[1]}"\nkind = "push"\n`,
    });
    ctx = zmq.Context(bridge.url, { WebSocket, logger: quiet });
  });
  after(async () => {
    if (ctx) await withTimeout(ctx.close(), 5000, "context close").catch(() => {});
    await Promise.allSettled([bridge?.stop(), service?.stop(), worker?.stop()]);
  });

  test("the words arrive one part each, then the end", async () => {
    const parts = [];
    for await (const word of ctx.Socket(zmq.DEALER, "words").stream("once upon a time")) parts.push(word);
    assert.deepEqual(parts, ["once", "upon", "a", "time"]);
  });

  test("cancel mid-stream: nothing after, the service is told", async () => {
    const seen = [];
    const s = ctx.Socket(zmq.DEALER, "words").stream("cancel? a b c d e f g h i j k l m n o p");
    for await (const word of s) {
      seen.push(word);
      if (seen.length === 3) break;
    }
    assert.equal(s.state, "canceled");
    await service.waitFor(/after cancel/, 5000);
    await sleep(300);
    assert.equal(seen.length, 3);
  });

  test("PUSH reaches the PULL worker; PUBLISHED once ZeroMQ took it", async () => {
    const push = ctx.Socket(zmq.PUSH, "jobs");
    await push.send({ job: 1 });
    await worker.waitFor(/pulled \[b'\{"job":1\}'\]/, 5000);
  });

  test("PUSH with no PULL worker: zmqwamp.error.backend_unavailable", async () => {
    await worker.stop();
    await sleep(300);
    await assert.rejects(ctx.Socket(zmq.PUSH, "jobs").send("nobody"), (e) => {
      assert.equal(e.uri, "zmqwamp.error.backend_unavailable");
      return true;
    });
  });
});
