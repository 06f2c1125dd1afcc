// A small WAMP router for the client tests: a real `ws` WebSocket server on 127.0.0.1 (a free port)
// speaking WAMP JSON, whose answers each test scripts.  It plays the bridge's part of the WAMP
// contract for the socket kinds whose server side is not in the bridge yet (progressive results,
// CANCEL, acknowledged PUBLISH), and records everything the client sends, in order, per connection.
//
//   const router = await startRouter();
//   router.onCall = (call) => { call.progress(["a"]); call.progress(["b"]); call.result(); };
//   router.onPublish = (pub) => pub.error("zmqwamp.error.backend_unavailable", "no PULL worker");
//   ... router.connections[0].received ... await router.close();
import { WebSocketServer } from "ws";

export const HELLO = 1;
export const WELCOME = 2;
export const ABORT = 3;
export const GOODBYE = 6;
export const ERROR = 8;
export const PUBLISH = 16;
export const PUBLISHED = 17;
export const SUBSCRIBE = 32;
export const CALL = 48;
export const CANCEL = 49;
export const RESULT = 50;

/**
 * One CALL as a test's `onCall` sees it, with the answers it may send.  After a CANCEL the router
 * answers ERROR `wamp.error.canceled` by itself unless the test set `call.onCancel` (then the test
 * answers, e.g. to send parts that were already on their way first).
 */
class RouterCall {
  constructor(conn, msg) {
    this.conn = conn;
    [, this.request, this.options, this.procedure, this.args = []] = msg;
    this.answered = false;
    /** The CANCEL's mode, once one came. @type {string | null} */
    this.canceled = null;
    /** @type {((mode: string) => void) | null} */
    this.onCancel = null;
  }
  /** A progressive RESULT (sent even after a CANCEL: a part that was already on its way). */
  progress(args = []) {
    this.conn.send([RESULT, this.request, { progress: true }, args]);
  }
  /** The final RESULT; no args: a final RESULT with no arguments. */
  result(args) {
    this.answered = true;
    this.conn.send(args === undefined ? [RESULT, this.request, {}] : [RESULT, this.request, {}, args]);
  }
  error(uri, message) {
    this.answered = true;
    this.conn.send([ERROR, CALL, this.request, {}, uri, message === undefined ? [] : [message]]);
  }
}

class RouterConnection {
  constructor(router, ws, id) {
    this.router = router;
    this.ws = ws;
    this.id = id;
    /** Every message the client sent, parsed, in order; `"close"` marks the client's close. */
    this.received = [];
    /** Calls by request id. @type {Map<number, RouterCall>} */
    this.calls = new Map();
    this.closed = new Promise((resolve) => {
      ws.on("close", (code, reason) => {
        this.received.push("close");
        resolve({ code, reason: reason.toString() });
      });
    });
    ws.on("message", (data) => this._message(JSON.parse(data.toString())));
  }

  send(msg) {
    if (this.ws.readyState === this.ws.OPEN) this.ws.send(JSON.stringify(msg));
  }

  /** Messages of one type the client sent. */
  sent(type) {
    return this.received.filter((m) => Array.isArray(m) && m[0] === type);
  }

  _message(msg) {
    this.received.push(msg);
    const router = this.router;
    switch (msg[0]) {
      case HELLO:
        this.send([
          WELCOME,
          this.id,
          {
            authid: "anonymous",
            authrole: "anonymous",
            authmethod: "anonymous",
            roles: {
              broker: { features: { publisher_identification: true } },
              dealer: { features: { progressive_call_results: true, call_canceling: true, call_timeout: true } },
            },
          },
        ]);
        break;
      case CALL: {
        const call = new RouterCall(this, msg);
        this.calls.set(call.request, call);
        router.calls.push(call);
        router.onCall(call);
        break;
      }
      case CANCEL: {
        const [, request, options] = msg;
        const call = this.calls.get(request);
        router.cancels.push({ request, mode: options.mode });
        if (!call || call.answered) break;
        call.canceled = options.mode;
        if (call.onCancel) call.onCancel(options.mode);
        else call.error("wamp.error.canceled", `call canceled (${options.mode})`);
        break;
      }
      case PUBLISH: {
        const [, request, options, topic, args = []] = msg;
        const pub = {
          request,
          options,
          topic,
          args,
          published: () => options.acknowledge && this.send([PUBLISHED, request, 1000 + request]),
          error: (uri, message) => options.acknowledge && this.send([ERROR, PUBLISH, request, {}, uri, [message]]),
        };
        router.publishes.push(pub);
        router.onPublish(pub);
        break;
      }
      case GOODBYE:
        if (!this.goodbyeSent) {
          this.send([GOODBYE, {}, "wamp.close.goodbye_and_out"]);
          this.ws.close(1000);
        }
        break;
    }
  }

  /**
   * Say GOODBYE as the bridge does when it stops: then wait for the client's GOODBYE (up to `waitMs`,
   * as the bridge's GOODBYE_WAIT) and close.  Resolves with what the client sent after our GOODBYE.
   */
  async goodbye(reason = "wamp.close.system_shutdown", waitMs = 1000) {
    this.goodbyeSent = true;
    const from = this.received.length;
    this.send([GOODBYE, { message: "the router is shutting down" }, reason]);
    const deadline = Date.now() + waitMs;
    while (Date.now() < deadline && !this.received.slice(from).some((m) => m === "close" || m[0] === GOODBYE)) {
      await new Promise((r) => setTimeout(r, 5));
    }
    this.ws.close(1001, "server shutdown");
    await this.closed;
    return this.received.slice(from);
  }

  /** The connection is lost (no close handshake): the client reconnects. */
  drop() {
    this.ws.terminate();
  }
}

/** Start a router; `close()` stops it. */
export function startRouter() {
  const wss = new WebSocketServer({
    host: "127.0.0.1",
    port: 0,
    handleProtocols: (protocols) => (protocols.has("wamp.2.json") ? "wamp.2.json" : false),
  });
  const router = {
    url: "",
    /** @type {RouterConnection[]} */
    connections: [],
    /** @type {RouterCall[]} */
    calls: [],
    /** @type {{request: number, mode: string}[]} */
    cancels: [],
    publishes: [],
    /** Default: a final RESULT echoing the arguments. */
    onCall: (call) => call.result(call.args),
    /** Default: PUBLISHED. */
    onPublish: (pub) => pub.published(),
    get last() {
      return this.connections[this.connections.length - 1];
    },
    close() {
      for (const c of wss.clients) c.terminate();
      return new Promise((resolve) => wss.close(() => resolve()));
    },
  };
  wss.on("connection", (ws) =>
    router.connections.push(new RouterConnection(router, ws, router.connections.length + 1)),
  );
  return new Promise((resolve) =>
    wss.on("listening", () => {
      router.url = `ws://127.0.0.1:${wss.address().port}/ws`;
      resolve(router);
    }),
  );
}
