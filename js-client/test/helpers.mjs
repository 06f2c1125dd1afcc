// Real processes for the client tests: the twistd bridge and the example pyzmq services.
// Everything binds 127.0.0.1 on a port the process picks and prints; every process is
// stopped by its PID (ChildProcess.kill) in the tests' after() hooks; every wait has a timeout.
import { spawn, execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const JS_CLIENT = resolve(here, "..");
export const ROOT = resolve(here, "../..");
export const ARTIFACTS = join(ROOT, "test-artifacts");

/**
 * The WebSocket class the tests give their contexts (`{WebSocket}`; the library never sets a global):
 * Node 22's own, else `ws` (the experimental one behind Node 20's --experimental-websocket never
 * fires "close" for a refused connection).
 */
export const WebSocket =
  typeof globalThis.WebSocket === "undefined" || Number(process.versions.node.split(".")[0]) < 22
    ? (await import("ws")).WebSocket
    : globalThis.WebSocket;

/** An executable from the project's venv if there is one (make puts it on PATH too). */
export function venvBin(name) {
  const dirs = [process.env.ZMQWAMP_VENV_BIN, join(ROOT, ".venv/bin")].filter(Boolean);
  for (const d of dirs) {
    if (existsSync(join(d, name))) return join(d, name);
  }
  return name;
}

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/** Every part of a DEALER stream, read with `for await` (throws what the iteration throws). */
export async function drain(stream) {
  const parts = [];
  for await (const part of stream) parts.push(part);
  return parts;
}

/** Reject if `promise` has not settled within `ms`. */
export function withTimeout(promise, ms, what) {
  let t;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      t = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

/** Poll `check` (sync or async) until it returns a truthy value; reject after `ms`. */
export async function waitUntil(check, ms, what) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${fmt(last)})`);
    await sleep(50);
  }
}

function fmt(v) {
  try {
    return v instanceof Error ? v.message : JSON.stringify(v);
  } catch {
    return String(v);
  }
}

/** A child process with its output collected line by line. */
export class Proc {
  constructor(argv, { cwd = ROOT, env = {} } = {}) {
    this.argv = argv;
    this.lines = [];
    this._watchers = new Set();
    this.exited = new Promise((resolve) => {
      this._resolveExit = resolve;
    });
    this.exitCode = null;
    this.child = spawn(argv[0], argv.slice(1), {
      cwd,
      env: { ...process.env, PYTHONUNBUFFERED: "1", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.pid = this.child.pid;
    for (const stream of [this.child.stdout, this.child.stderr]) {
      let buf = "";
      stream.setEncoding("utf8");
      stream.on("data", (chunk) => {
        buf += chunk;
        let i;
        while ((i = buf.indexOf("\n")) >= 0) {
          this._line(buf.slice(0, i));
          buf = buf.slice(i + 1);
        }
      });
    }
    this.child.on("exit", (code, signal) => {
      this.exitCode = code ?? signal;
      this._resolveExit(this.exitCode);
      for (const w of this._watchers) w();
    });
    this.child.on("error", (e) => {
      this._line(`spawn error: ${e.message}`);
      this.exitCode = this.exitCode ?? "error";
      this._resolveExit(this.exitCode);
    });
  }

  _line(line) {
    this.lines.push(line);
    for (const w of this._watchers) w();
  }

  get output() {
    return this.lines.join("\n");
  }

  /** Resolve with the first match of `regex` in the output (from line `from` on). */
  waitFor(regex, ms = 20000, from = 0) {
    return new Promise((resolve, reject) => {
      const check = () => {
        for (const line of this.lines.slice(from)) {
          const m = line.match(regex);
          if (m) return done(null, m);
        }
        if (this.exitCode !== null)
          done(
            new Error(
              `${this.argv.slice(0, 3).join(" ")} exited (${this.exitCode}) before printing ${regex}:\n${this.output.slice(-3000)}`,
            ),
          );
      };
      const timer = setTimeout(
        () =>
          done(
            new Error(
              `timed out after ${ms} ms waiting for ${regex} from ${this.argv.slice(0, 3).join(" ")}:\n${this.output.slice(-3000)}`,
            ),
          ),
        ms,
      );
      const done = (err, m) => {
        clearTimeout(timer);
        this._watchers.delete(check);
        err ? reject(err) : resolve(m);
      };
      this._watchers.add(check);
      check();
    });
  }

  /** SIGTERM by PID, SIGKILL if it does not exit within `ms`. */
  async stop(ms = 10000) {
    if (this.exitCode !== null) return this.exitCode;
    this.child.kill("SIGTERM");
    const t = setTimeout(() => {
      if (this.exitCode === null) this.child.kill("SIGKILL");
    }, ms);
    try {
      return await withTimeout(this.exited, ms + 5000, `exit of ${this.argv[0]}`);
    } finally {
      clearTimeout(t);
    }
  }
}

/** The example echo REP (`--delay` makes it slow), on a free port. */
export async function startEcho(extra = []) {
  const proc = new Proc([venvBin("python"), join(ROOT, "examples/echo_rep.py"), "tcp://127.0.0.1:*", ...extra]);
  const m = await proc.waitFor(/echo REP bound to (\S+)/);
  return { proc, address: m[1] };
}

/** The example counter PUB (`<topic> <n>` for each of `topics` every `interval` seconds), on a free port. */
export async function startCounter(interval = 0.1, topics = "hugo,otto") {
  const proc = new Proc([
    venvBin("python"),
    join(ROOT, "examples/counter_pub.py"),
    "tcp://127.0.0.1:*",
    "--interval",
    String(interval),
    "--topics",
    topics,
  ]);
  const m = await proc.waitFor(/counter PUB bound to (\S+)/);
  return { proc, address: m[1] };
}

/**
 * `twistd -n zmqwamp` on 127.0.0.1 (port 0: a free one), anonymous, allowing `allow`.
 * `config` is TOML text written to a temporary file and passed with --config.
 */
export async function startBridge({
  port = 0,
  allow = ["tcp://127.0.0.1:*"],
  anonymous = true,
  config = null,
  args = [],
} = {}) {
  const argv = [venvBin("twistd"), "-n", "--pidfile=", "zmqwamp", "--listen", `tcp:${port}:interface=127.0.0.1`];
  if (anonymous) argv.push("--anonymous");
  for (const a of allow) argv.push("--allow", a);
  let tmp = null;
  if (config) {
    tmp = mkdtempSync(join(tmpdir(), "zmqwamp-client-test-"));
    writeFileSync(join(tmp, "bridge.toml"), config);
    argv.push("--config", join(tmp, "bridge.toml"));
  }
  argv.push(...args);
  const proc = new Proc(argv);
  const m = await proc.waitFor(/\bSite\b.*starting on (\d+)/, 30000);
  const bridgePort = Number(m[1]);
  const bridge = {
    proc,
    port: bridgePort,
    url: `ws://127.0.0.1:${bridgePort}/ws`,
    http: `http://127.0.0.1:${bridgePort}`,
    async stop() {
      const code = await proc.stop();
      if (tmp) rmSync(tmp, { recursive: true, force: true });
      return code;
    },
    async healthz() {
      const res = await withTimeout(fetch(`${bridge.http}/healthz`), 5000, "GET /healthz");
      return res.json();
    },
  };
  return bridge;
}

/**
 * Does this bridge have --auth (Twisted Cred checkers)?  When `twistd zmqwamp --help`
 * itself fails, say yes: the auth tests then run and show the failure instead of a skip.
 */
export function bridgeHasAuth() {
  try {
    const help = execFileSync(venvBin("twistd"), ["zmqwamp", "--help"], {
      cwd: ROOT,
      encoding: "utf8",
      timeout: 30000,
    });
    return /--auth\b/.test(help);
  } catch {
    return true;
  }
}

/** Wait for the next `event` of a context (with a timeout). */
export function nextEvent(ctx, event, ms, predicate = () => true) {
  return withTimeout(
    new Promise((resolve) => {
      const fn = (payload) => {
        if (!predicate(payload)) return;
        ctx.off(event, fn);
        resolve(payload);
      };
      ctx.on(event, fn);
    }),
    ms,
    `context event "${event}"`,
  );
}

/**
 * A TCP proxy on 127.0.0.1 (a free port) to `targetPort`, for cutting a client's connection
 * without touching the bridge: `cut(ms)` resets every proxied connection, both sides, and resets
 * every new one for `ms`; after that it proxies again.
 */
export async function startProxy(targetPort) {
  const { createServer, connect } = await import("node:net");
  const pairs = new Set();
  let refuseUntil = 0;
  const server = createServer((client) => {
    if (Date.now() < refuseUntil) {
      client.resetAndDestroy();
      return;
    }
    const upstream = connect(targetPort, "127.0.0.1");
    const pair = { client, upstream };
    pairs.add(pair);
    const drop = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve, reject) => {
    server.on("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const port = server.address().port;
  return {
    port,
    url: `ws://127.0.0.1:${port}/ws`,
    /** Connections being proxied now. */
    get connections() {
      return pairs.size;
    },
    cut(ms) {
      refuseUntil = Date.now() + ms;
      for (const { client, upstream } of [...pairs]) {
        client.resetAndDestroy();
        upstream.resetAndDestroy();
      }
    },
    close() {
      for (const { client, upstream } of [...pairs]) {
        client.destroy();
        upstream.destroy();
      }
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * A TCP proxy on 127.0.0.1 (a free port) to `targetPort` that also reads the WebSocket frames going
 * through it (after the HTTP upgrade; no extension is negotiated with the bridge): `frames` lists
 * `{from: "client" | "server", opcode, text}` in the order each side sent them (opcode 1: text,
 * 2: binary, 8: close; `text` is the payload as UTF-8, for a close frame its status code and reason).
 * For checking what reached the bridge on the wire, e.g. the client's answer to a GOODBYE.
 */
export async function startFrameTap(targetPort) {
  const { createServer, connect } = await import("node:net");
  const frames = [];
  const sockets = new Set();
  /** Parse the frames of one direction as its bytes arrive. */
  function reader(from) {
    let buf = Buffer.alloc(0);
    let upgraded = false;
    return (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      if (!upgraded) {
        const end = buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        upgraded = true;
        buf = buf.subarray(end + 4);
      }
      for (;;) {
        if (buf.length < 2) return;
        const opcode = buf[0] & 0x0f;
        const masked = (buf[1] & 0x80) !== 0;
        let len = buf[1] & 0x7f;
        let at = 2;
        if (len === 126) {
          if (buf.length < 4) return;
          len = buf.readUInt16BE(2);
          at = 4;
        } else if (len === 127) {
          if (buf.length < 10) return;
          len = Number(buf.readBigUInt64BE(2));
          at = 10;
        }
        const mask = masked ? buf.subarray(at, at + 4) : null;
        if (masked) at += 4;
        if (buf.length < at + len) return;
        const payload = Buffer.from(buf.subarray(at, at + len));
        if (mask) for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i % 4];
        buf = buf.subarray(at + len);
        const text =
          opcode === 8 && payload.length >= 2
            ? `${payload.readUInt16BE(0)} ${payload.subarray(2).toString("utf8")}`
            : payload.toString("utf8");
        frames.push({ from, opcode, text });
      }
    };
  }
  const server = createServer((client) => {
    const upstream = connect(targetPort, "127.0.0.1");
    sockets.add(client).add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    client.on("data", reader("client"));
    upstream.on("data", reader("server"));
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve, reject) => {
    server.on("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const port = server.address().port;
  return {
    port,
    url: `ws://127.0.0.1:${port}/ws`,
    frames,
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
