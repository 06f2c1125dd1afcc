// The clients of tests/deploy/test_deploy.py: N zmqwamp-client contexts (js-client/src, the project's own
// library, with its own reconnect and resubscribe), each with a SUB and a REQ sent every few hundred ms,
// through a proxy.  Client i connects from 127.0.0.(firstHost + i), so the test can check which
// address the bridge sees.  One JSON object per line on stdout:
//   {"t": ms, "c": i, "ev": "open" | "subscribed" | "event" | "close" | "req_error" | "error", ...}
// ("event": the first EVENT of each session only), and {"ev": "summary", ...} at the end.
// Runs until SIGTERM/SIGINT, then closes every context and exits 0.
//
//   node clients.mjs '{"url": "wss://localhost:8443/ws", "count": 20, "rep": "tcp://...", "pub": "tcp://...",
//                      "filter": "hugo", "reqIntervalMs": 300, "firstHost": 10}'
import { createRequire } from "node:module";

const require = createRequire(new URL("../../js-client/package.json", import.meta.url));
const { WebSocket } = require("ws");
const zmq = await import("../../js-client/src/index.js");

const cfg = JSON.parse(process.argv[2]);

// The `ws` WebSocket, bound to the client's own loopback address (taken from the URL's ?client=i).
class SourcedWebSocket extends WebSocket {
  constructor(url, protocols, options) {
    const client = Number(new URL(url).searchParams.get("client"));
    super(url, protocols, { ...options, localAddress: `127.0.0.${cfg.firstHost + client}` });
  }
}

function emit(record) {
  process.stdout.write(JSON.stringify({ t: Date.now(), ...record }) + "\n");
}

const contexts = [];
const counts = { ok: 0, failed: 0 };
const timers = [];

for (let c = 0; c < cfg.count; c++) {
  const ctx = zmq.Context(`${cfg.url}?client=${c}`, {
    WebSocket: SourcedWebSocket,
    reconnect: { initialDelay: 0.5, maxDelay: 2 },
    connectTimeout: 5000,
  });
  contexts.push(ctx);
  let eventSeen = false;
  const sub = ctx.Socket(zmq.SUB, cfg.pub, { filter: cfg.filter });
  sub.callback(
    () => {
      if (!eventSeen) {
        eventSeen = true;
        emit({ c, ev: "event" });
      }
    },
    (err) => emit({ c, ev: "error", uri: err.uri, message: err.message }),
  );
  const req = ctx.Socket(zmq.REQ, cfg.rep);
  ctx.on("open", (info) => {
    eventSeen = false;
    emit({ c, ev: "open", session: info.session, reconnected: info.reconnected });
    sub.ready().then(
      () => emit({ c, ev: "subscribed" }),
      (err) => emit({ c, ev: "error", uri: err.uri, message: err.message }),
    );
  });
  ctx.on("close", (d) => emit({ c, ev: "close", reason: d.reason, uri: d.uri, message: d.message, willRetry: d.willRetry }));
  ctx.on("error", (err) => emit({ c, ev: "error", uri: err.uri, message: err.message }));
  let n = 0;
  timers.push(
    setInterval(() => {
      if (req.state !== "open") return; // disconnected: the outage is measured from open/close
      n += 1;
      req.request(`c${c}-${n}`, { timeout: 5000 }).then(
        () => (counts.ok += 1),
        (err) => {
          counts.failed += 1;
          emit({ c, ev: "req_error", uri: err.uri, message: err.message });
        },
      );
    }, cfg.reqIntervalMs),
  );
}

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  for (const t of timers) clearInterval(t);
  await Promise.race([Promise.all(contexts.map((ctx) => ctx.close())), new Promise((r) => setTimeout(r, 5000))]);
  emit({ ev: "summary", ...counts });
  process.exit(0);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
