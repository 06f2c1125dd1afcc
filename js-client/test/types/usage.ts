// Compiled by test/types.test.mjs with `tsc --noEmit --strict`: the README's examples must type-check.
import * as zmq from "zmqwamp-client";
import { Context, REQ, SUB, ZmqError } from "zmqwamp-client";

async function main(): Promise<void> {
  const ctx = Context("ws://localhost:8080/ws", { realm: "zmqwamp", reconnect: { initialDelay: 0.2, maxDelay: 5 } });
  const quiet = zmq.Context("ws://localhost:8080/ws", {
    WebSocket: globalThis.WebSocket,
    logger: { warn: () => {}, error: (...args: unknown[]) => console.error(...args) },
  });
  const req = ctx.Socket(REQ, "tcp://127.0.0.1:9999", { username: "hugo", password: "monkey" });
  req.send({ myrequest: "hello" }, (reply, frames) => console.log(reply, frames.length));
  req.send("hi", (reply) => console.log(reply), { errback: (err: ZmqError) => console.log(err.uri, err.message) });
  req.send("hi", null, { timeout: 500, multipart: false, errback: null });
  const reply: string = await req.request({ myrequest: "hello" }, { timeout: 2000 });
  const parts: unknown[] = await req.request(["a", new Uint8Array([1, 2])], { multipart: true });
  const sub = ctx.Socket(SUB, "tcp://127.0.0.1:9000", { username: "hugo", password: "monkey", filter: "hugo" });
  sub
    .callback((msg) => console.log(msg))
    .callback(
      (msg, frames) => console.log(msg, frames),
      (e) => console.log(e.uri),
    );
  await sub.ready();
  const last = ctx.Socket(SUB, "prices", { filter: "EUR", lastValue: true });
  const onGap = (gap: zmq.GapInfo): void => {
    const since: number = gap.since;
    const first: number = gap.first;
    if (gap.reason === "history" || gap.reason === "epoch" || gap.reason === "no_history") console.log(since, first);
  };
  last.on("gap", onGap).callback((msg) => console.log(msg));
  last.off("gap", onGap);
  const tokenReq = ctx.Socket(zmq.REQ, "echo", { token: "eyJ..." });
  const craSub = ctx.Socket(zmq.SUB, "ticks", {
    username: "otto",
    secret: "s3cret",
    method: "wampcra",
    filter: new Uint8Array([0x68]),
  });
  const anon = ctx.Socket("REQ", "tcp://127.0.0.1:9999", { timeout: 500 });
  ctx.on("open", (info) => console.log(info.authid, info.reconnected));
  ctx.on("close", (info) => console.log(info.willRetry, info.uri));
  ctx.on("error", (err) => console.log(err.uri));
  try {
    await anon.request(new Uint8Array([0, 255]).buffer);
  } catch (e) {
    if (e instanceof zmq.ZmqError && e.uri === zmq.ERRORS.DISCONNECTED) console.log("offline");
  }
  const dealer = ctx.Socket(zmq.DEALER, "words", { timeout: 5000 });
  const byName: zmq.DealerSocket = ctx.socket("dealer", "words");
  const stream: zmq.ReplyStream = dealer.send(
    "a poem",
    (part, info: zmq.PartInfo) => console.log(part, info.last, info.frames.length),
    { errback: (e) => console.log(e.uri), timeout: 1000, multipart: false },
  );
  const state: zmq.StreamState = stream.state;
  const done: Promise<void> = stream.cancel("skip");
  await stream.cancel();
  for await (const word of dealer.stream("a poem", { timeout: 2000 })) console.log(word);
  const words = dealer.stream(["a", new Uint8Array([1])], { multipart: true });
  if (words.error) console.log(words.error.uri, words.parts, words.endpoint);
  const mode: zmq.CancelMode = "kill";
  await words.cancel(mode);
  const push = ctx.Socket(zmq.PUSH, "jobs", { username: "hugo", password: "monkey", timeout: 1000 });
  const pushed: void = await push.send({ job: 1 }, { timeout: 500 });
  await push.send(["a", "b"], { multipart: true });
  console.log(state, done, pushed, zmq.DEALER, zmq.PUSH, push.type, dealer.type);
  await Promise.all([dealer.close(), byName.close(), push.close()]);
  await Promise.all([sub.close(), last.close(), req.close(), tokenReq.close(), craSub.close()]);
  await Promise.all([ctx.close(), quiet.close()]);
  console.log(reply, parts, zmq.version, zmq.PUB, zmq.REP);
}

void main;
