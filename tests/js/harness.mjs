// Real processes and real clients for the Node end-to-end tests.
//
// Processes: the bridge (`twistd -n zmqwamp`) and the example ZeroMQ services
// from ../../examples, each bound to 127.0.0.1 on a port it picks itself and
// prints, so no test ever races for a port.  Every process started here is
// remembered and stopped by its PID (SIGTERM, then SIGKILL), from `stopAll()`
// in the suite's after() hook and, as a last resort, when this Node process
// exits.  Nothing is ever killed by name.
//
// Clients: helpers around an Autobahn JS module (either line) that turn its
// callbacks into promises, and every wait here has a timeout.
//
// `python` and `twistd` are looked up on PATH (`make test-js` puts the
// project's .venv/bin first); if they are not there, ../../.venv/bin is used.

import { spawn } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const EXAMPLES = path.join(ROOT, 'examples');
export const REALM = 'zmqwamp';

// ---------------------------------------------------------------------------
// small utilities

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Settle with `promise`, or reject after `ms` with an error naming `what`. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([Promise.resolve(promise), timeout]).finally(() => clearTimeout(timer));
}

/** Poll `predicate` (it may return a promise) every 20 ms until it is true; reject after `ms`. */
export async function waitUntil(predicate, ms, what) {
  const deadline = Date.now() + ms;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

function isExecutable(file) {
  try {
    accessSync(file, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** `name` from PATH, else from the project's venv, else the bare name (spawn reports ENOENT). */
export function findCommand(name) {
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    if (dir && isExecutable(path.join(dir, name))) return path.join(dir, name);
  }
  const venv = path.join(ROOT, '.venv', 'bin', name);
  return isExecutable(venv) ? venv : name;
}

// ---------------------------------------------------------------------------
// processes

const live = new Set();

export class Proc {
  constructor(name, argv, { cwd = ROOT } = {}) {
    this.name = name;
    this.argv = argv;
    this.lines = [];
    this.exitStatus = null; // {code, signal} once it exited
    this._listeners = new Set();
    this.child = spawn(argv[0], argv.slice(1), {
      cwd,
      env: { ...process.env, PYTHONUNBUFFERED: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.pid = this.child.pid;
    live.add(this);
    this.exited = new Promise((resolve) => {
      this.child.on('error', (err) => {
        // spawn failed (ENOENT, EACCES): there is no process to stop
        this.lines.push(`[spawn error] ${err.message}`);
        this.exitStatus = { code: null, signal: null, error: err };
        live.delete(this);
        this._notify();
        resolve(this.exitStatus);
      });
      this.child.on('close', (code, signal) => {
        if (!this.exitStatus) this.exitStatus = { code, signal };
        live.delete(this);
        this._notify();
        resolve(this.exitStatus);
      });
    });
    for (const stream of [this.child.stdout, this.child.stderr]) {
      let partial = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk) => {
        const parts = (partial + chunk).split('\n');
        partial = parts.pop();
        for (const line of parts) this.lines.push(line);
        if (parts.length) this._notify();
      });
      stream.on('end', () => {
        if (partial) this.lines.push(partial);
        partial = '';
        this._notify();
      });
    }
  }

  _notify() {
    for (const listener of [...this._listeners]) listener();
  }

  get output() {
    return this.lines.join('\n');
  }

  tail(n = 40) {
    return this.lines.slice(-n).join('\n');
  }

  /** The first match of `regex` in a line of output (from line `start` on), waiting up to `ms`. */
  waitFor(regex, ms = 20000, start = 0) {
    return new Promise((resolve, reject) => {
      const check = () => {
        for (let i = start; i < this.lines.length; i++) {
          const match = regex.exec(this.lines[i]);
          if (match) return finish(null, match);
        }
        if (this.exitStatus) {
          return finish(new Error(`${this.name} (pid ${this.pid}) exited (${JSON.stringify(this.exitStatus)}) `
            + `before printing ${regex}:\n${this.tail()}`));
        }
        return undefined;
      };
      const timer = setTimeout(() => finish(new Error(
        `${this.name} (pid ${this.pid}) printed nothing matching ${regex} within ${ms} ms:\n${this.tail()}`)), ms);
      const finish = (err, match) => {
        clearTimeout(timer);
        this._listeners.delete(check);
        if (err) reject(err); else resolve(match);
      };
      this._listeners.add(check);
      check();
    });
  }

  /** SIGTERM by PID, SIGKILL after `ms`; resolves with the exit status. */
  async stop(ms = 5000) {
    if (this.exitStatus || this.pid === undefined) return this.exitStatus;
    try {
      process.kill(this.pid, 'SIGTERM');
    } catch { /* already gone */ }
    try {
      return await withTimeout(this.exited, ms, `${this.name} to exit after SIGTERM`);
    } catch {
      try {
        process.kill(this.pid, 'SIGKILL');
      } catch { /* already gone */ }
      return withTimeout(this.exited, 2000, `${this.name} to exit after SIGKILL`).catch(() => null);
    }
  }
}

/** Stop every process started through this module that is still running. */
export async function stopAll() {
  await Promise.all([...live].map((proc) => proc.stop()));
}

// If the test process dies without its after() hooks, do not leave children behind.
process.on('exit', () => {
  for (const proc of live) {
    try {
      process.kill(proc.pid, 'SIGKILL');
    } catch { /* gone */ }
  }
});

/** The example echo REP service; `delay` seconds before each reply. */
export async function startRep({ delay = 0 } = {}) {
  const argv = [findCommand('python'), path.join(EXAMPLES, 'echo_rep.py'), 'tcp://127.0.0.1:*'];
  if (delay) argv.push('--delay', String(delay));
  const proc = new Proc(delay ? `echo_rep --delay ${delay}` : 'echo_rep', argv);
  const match = await proc.waitFor(/echo REP bound to (tcp:\/\/127\.0\.0\.1:\d+)/);
  return { proc, address: match[1] };
}

/** The example counter PUB service: `<topic> <n>` for each of `topics` (default `hugo`, `otto`) every `interval` seconds. */
export async function startPub({ interval = 0.05, topics = null } = {}) {
  const argv = [findCommand('python'), path.join(EXAMPLES, 'counter_pub.py'), 'tcp://127.0.0.1:*',
    '--interval', String(interval), ...(topics ? ['--topics', topics] : [])];
  const proc = new Proc('counter_pub', argv);
  const match = await proc.waitFor(/counter PUB bound to (tcp:\/\/127\.0\.0\.1:\d+)/);
  return { proc, address: match[1] };
}

/**
 * `twistd -n zmqwamp` on a free port of 127.0.0.1; resolves with its ws:// URL.
 *
 * ZMQWAMP_JS_BRIDGE_ARGS (whitespace-separated) adds options to every bridge,
 * e.g. `--bridge-class mymodule.MyBridge` to run the suite against a subclass.
 */
export async function startBridge({ allow = [], anonymous = true, extra = [] } = {}) {
  const argv = [findCommand('twistd'), '-n', '--pidfile=', 'zmqwamp',
    '--listen', 'tcp:0:interface=127.0.0.1'];
  if (anonymous) argv.push('--anonymous');
  for (const pattern of allow) argv.push('--allow', pattern);
  argv.push(...extra);
  argv.push(...(process.env.ZMQWAMP_JS_BRIDGE_ARGS || '').split(/\s+/).filter(Boolean));
  const proc = new Proc(anonymous ? 'bridge' : 'bridge (no --anonymous)', argv);
  const match = await proc.waitFor(/starting on (\d+)/);
  return { proc, port: Number(match[1]), url: `ws://127.0.0.1:${match[1]}/ws` };
}

// ---------------------------------------------------------------------------
// clients

/**
 * Open a WAMP session with the Autobahn module `autobahn` (either line).
 *
 * `serializer` is 'json', 'msgpack', 'cbor', or null for the client's default
 * offer (json, msgpack).  Resolves with {connection, session, details, events,
 * rx, close}; `rx` records every WAMP message the client receives, before
 * Autobahn dispatches it, so tests can check what the bridge put on the wire.
 * Rejects if the connection closes before the session opens.
 */
export function connect(autobahn, url, { realm = REALM, serializer = null, ms = 8000 } = {}) {
  const options = {
    url,
    realm,
    max_retries: 0,
    retry_if_unreachable: false,
  };
  if (serializer) options.serializers = [makeSerializer(autobahn, serializer)];
  const connection = new autobahn.Connection(options);
  const rx = [];
  let closed;
  const closedPromise = new Promise((resolve) => { closed = resolve; });
  const opened = new Promise((resolve, reject) => {
    connection.onopen = (session, details) => {
      // The transport hands each received message to transport.onmessage,
      // which the session installed; wrap it to keep a copy.
      const transport = connection.transport;
      const dispatch = transport.onmessage;
      transport.onmessage = (msg) => {
        rx.push(msg);
        dispatch(msg);
      };
      resolve({
        connection,
        session,
        details,
        rx,
        closed: closedPromise,
        close: () => closeConnection(connection, closedPromise),
      });
    };
    connection.onclose = (reason, details) => {
      closed({ reason, details });
      reject(Object.assign(new Error(`connection closed before the session opened: ${reason} `
        + `${JSON.stringify(details)}`), { reason, details }));
      return true; // no reconnect
    };
  });
  connection.open();
  return withTimeout(opened, ms, `WAMP session on ${url} (realm ${realm})`).catch((err) => {
    closeConnection(connection, closedPromise);
    throw err;
  });
}

/** Connect expecting the session to be refused: resolves with onclose's (reason, details). */
export async function connectRefused(autobahn, url, opts = {}) {
  try {
    const c = await connect(autobahn, url, opts);
    await c.close();
    throw new Error(`session opened (id ${c.session.id}) but was expected to be refused`);
  } catch (err) {
    if (err.details === undefined) throw err;
    return { reason: err.reason, details: err.details };
  }
}

function closeConnection(connection, closedPromise) {
  try {
    connection.close();
  } catch { /* already closed */ }
  return withTimeout(closedPromise, 3000, 'connection to close').catch(() => null);
}

export function makeSerializer(autobahn, name) {
  const klass = {
    json: autobahn.serializer.JSONSerializer,
    msgpack: autobahn.serializer.MsgpackSerializer,
    cbor: autobahn.serializer.CBORSerializer,
  }[name];
  if (!klass) throw new Error(`this autobahn has no ${name} serializer`);
  return new klass();
}

/**
 * Autobahn rejects a failed call with an autobahn.Error ({error, args, kwargs});
 * settle `promise` into {ok, value} / {ok: false, error, args} within `ms`.
 */
export async function outcome(promise, ms, what) {
  try {
    return { ok: true, value: await withTimeout(promise, ms, what) };
  } catch (err) {
    if (err && typeof err.error === 'string') return { ok: false, error: err.error, args: err.args, kwargs: err.kwargs };
    throw err;
  }
}

// WAMP message type codes (as received in `rx`)
export const WAMP = { ABORT: 3, GOODBYE: 6, ERROR: 8, SUBSCRIBED: 33, UNSUBSCRIBED: 35, EVENT: 36, RESULT: 50 };
