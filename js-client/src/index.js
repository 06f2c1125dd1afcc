// zmqwamp-client: ZeroMQ-shaped sockets over WAMP, on top of the stock Autobahn JS client.
//
//   const ctx = zmq.Context("ws://localhost:8080/ws", {realm: "zmqwamp"});
//   const req = ctx.Socket(zmq.REQ, "tcp://127.0.0.1:9999");
//   req.send({myrequest: "hello"}, (reply) => console.log(reply));
//   const sub = ctx.Socket(zmq.SUB, "tcp://127.0.0.1:9000", {filter: "hugo"});
//   sub.callback((msg) => console.log(msg));
//
// A REQ socket's request is a WAMP CALL to the endpoint URI; a SUB socket is a WAMP
// SUBSCRIBE to it (the filter travels as the SUBSCRIBE option `filter`).  Sockets with
// the same credentials share one WAMP session (one WebSocket); see README.md.

import autobahn from "autobahn";
import { SERIALIZERS, asBytes } from "./serializers.js";

export { autobahn };
export const version = "0.1.0";

// Autobahn warns "connection closed ... auto-reconnect disabled!" on every close: true of
// its own retry loop, which this client turns off because it reconnects by itself (see
// Link).  Those lines would mislead, so they are dropped; the context's "close" event says
// what happens instead.  Every other Autobahn warning still goes to the console.
const autobahnWarn = autobahn.log.warn;
autobahn.log.warn = function (first, ...rest) {
  if (typeof first === "string" && /^(connection closed|auto-reconnect|giving up trying to auto-reconnect)/.test(first)) return;
  return autobahnWarn.call(this, first, ...rest);
};

// Socket types, numbered as in libzmq.
export const PUB = 1;
export const SUB = 2;
export const REQ = 3;
export const REP = 4;

/** Error URIs the client raises itself (the bridge's errors keep the bridge's URI). */
export const ERRORS = Object.freeze({
  DISCONNECTED: "zmqwamp.error.disconnected",
  CLOSED: "zmqwamp.error.closed",
  CANCELED: "wamp.error.canceled",
  INVALID_ARGUMENT: "wamp.error.invalid_argument",
});

// A session that ends with one of these reasons is not retried: retrying cannot help.
const FATAL_REASONS = new Set([
  "wamp.error.not_authorized",
  "wamp.error.authentication_failed",
  "wamp.error.authorization_failed",
  "wamp.error.no_auth_method",
  "wamp.error.no_such_realm",
  "wamp.error.no_such_role",
  "wamp.error.no_such_principal",
]);

const DEFAULT_RECONNECT = Object.freeze({
  initialDelay: 0.5, // seconds before the first retry
  maxDelay: 30, // cap on the delay between retries
  growth: 1.5, // factor applied to the delay after every failed attempt
  jitter: 0.1, // +/- fraction of randomness on each delay
  maxRetries: Infinity, // attempts in a row before giving up
});

/** An error with the WAMP error URI (`uri`, also `error`) and the bridge's message. */
export class ZmqError extends Error {
  constructor(uri, message, details = {}) {
    super(message || uri);
    this.name = "ZmqError";
    this.uri = uri;
    this.error = uri;
    this.args = details.args || [];
    this.kwargs = details.kwargs || {};
  }
}

// autobahn's unsubscribe throws synchronously when the session or subscription is gone.
function unsubscribeQuietly(session, subscription) {
  try {
    return Promise.resolve(session.unsubscribe(subscription)).catch(() => {});
  } catch {
    return Promise.resolve();
  }
}

function toZmqError(err) {
  if (err instanceof ZmqError) return err;
  if (err instanceof autobahn.Error) {
    const first = err.args && err.args.length ? err.args[0] : undefined;
    return new ZmqError(err.error, typeof first === "string" ? first : err.error, err);
  }
  if (typeof err === "string") return new ZmqError("zmqwamp.error.client", err);
  const wrapped = new ZmqError("zmqwamp.error.client", (err && err.message) || String(err));
  wrapped.cause = err;
  return wrapped;
}

// One WAMP argument per frame: bytes of any kind become a Uint8Array, the rest is left as is.
function toArg(value) {
  const bytes = asBytes(value);
  if (bytes) return bytes;
  if (typeof Blob !== "undefined" && value instanceof Blob) {
    throw new ZmqError(ERRORS.INVALID_ARGUMENT, "a Blob cannot be sent: read it into an ArrayBuffer first");
  }
  return value;
}

// The `ws` package's WebSocket is an EventEmitter: an "error" (a refused connection) with
// no listener would be thrown as an uncaught exception.  Autobahn only listens for "close",
// which follows every error, so give each such socket a listener that ignores errors.
function quietErrors(WebSocketClass) {
  const proto = WebSocketClass && WebSocketClass.prototype;
  if (!proto || typeof proto.on !== "function" || WebSocketClass.zmqwampQuietErrors) return WebSocketClass;
  class QuietWebSocket extends WebSocketClass {
    constructor(...args) {
      super(...args);
      this.on("error", () => {});
    }
  }
  QuietWebSocket.zmqwampQuietErrors = true;
  return QuietWebSocket;
}

function credentialsOf(options) {
  const o = options || {};
  const method = o.method || (o.secret !== undefined ? "wampcra" : o.token !== undefined || o.password !== undefined ? "ticket" : "anonymous");
  if (method === "anonymous") {
    return { method, authid: undefined, secret: undefined, key: "anonymous" };
  }
  if (method === "ticket") {
    const secret = o.token !== undefined ? o.token : o.password;
    if (typeof secret !== "string") throw new TypeError("ticket login needs {username, password} or {token}");
    if (o.token === undefined && typeof o.username !== "string") throw new TypeError("a password needs a username");
    return { method, authid: o.username, secret, key: JSON.stringify([method, o.username ?? null, secret]) };
  }
  if (method === "wampcra") {
    const secret = o.secret !== undefined ? o.secret : o.password;
    if (typeof o.username !== "string" || typeof secret !== "string") {
      throw new TypeError('wampcra login needs {username, secret, method: "wampcra"}');
    }
    return { method, authid: o.username, secret, key: JSON.stringify([method, o.username, secret]) };
  }
  throw new TypeError(`unknown authentication method ${JSON.stringify(method)} (use ticket, wampcra or none)`);
}

function answerChallenge(creds) {
  return function onchallenge(session, method, extra) {
    if (method !== creds.method) {
      throw new Error(`the bridge asked for ${method}, this socket logs in with ${creds.method}`);
    }
    if (method === "ticket") return creds.secret;
    let key = creds.secret;
    if (extra && extra.salt) {
      key = autobahn.auth_cra.derive_key(creds.secret, extra.salt, extra.iterations, extra.keylen);
    }
    return autobahn.auth_cra.sign(key, extra.challenge);
  };
}

// ---------------------------------------------------------------------------------------
// Link: one WAMP session (one WebSocket) per distinct set of credentials, with reconnect.
// States: connecting (first attempt) -> open <-> reconnecting; failed; closed.
// ---------------------------------------------------------------------------------------

class Link {
  constructor(ctx, creds) {
    this.ctx = ctx;
    this.creds = creds;
    this.state = "connecting";
    this.session = null;
    this.sessionInfo = null;
    this.error = null;
    this.sockets = new Set();
    this.pending = new Set(); // in-flight calls: {reject}
    this._waiters = new Set(); // requests made during the first connect
    this._attempt = 0;
    this._retryTimer = null;
    this._connectTimer = null;
    this._conn = null;
    this._everOpened = false;
    this._closedPromise = null;
    this._resolveClosed = null;
    this._connect();
  }

  // -- connection lifecycle ---------------------------------------------------------

  _connect() {
    const ctx = this.ctx;
    const opts = {
      url: ctx.url,
      realm: ctx.realm,
      serializers: [SERIALIZERS[ctx.serializer]()],
      use_es6_promises: true,
      max_retries: 0, // reconnecting is ours: autobahn gives up after a server GOODBYE
      retry_if_unreachable: false,
    };
    if (this.creds.method !== "anonymous") {
      opts.authmethods = [this.creds.method];
      if (this.creds.authid !== undefined) opts.authid = this.creds.authid;
      opts.onchallenge = answerChallenge(this.creds);
    }
    const conn = new autobahn.Connection(opts);
    this._conn = conn;
    conn.onopen = (session, details) => this._opened(conn, session, details);
    conn.onclose = (reason, details) => {
      this._closed(conn, reason, details || {});
      return true; // never let autobahn retry on its own
    };
    clearTimeout(this._connectTimer);
    this._connectTimer = setTimeout(() => {
      if (this._conn === conn && !this.session) this._abandon(conn);
    }, ctx.connectTimeout);
    try {
      conn.open();
    } catch (e) {
      this._closed(conn, "unsupported", { message: String(e) });
    }
  }

  _abandon(conn) {
    // No session within connectTimeout: drop this attempt and count it as failed.  Not
    // waiting for the WebSocket's close event: some runtimes (Node 20's experimental
    // WebSocket on a refused connection) never fire one.
    try {
      conn.close();
    } catch {}
    this._closed(conn, "unreachable", { message: `no session within ${this.ctx.connectTimeout} ms` });
  }

  _opened(conn, session, details) {
    if (conn !== this._conn) return;
    clearTimeout(this._connectTimer);
    if (this.state === "closing" || this.state === "closed") {
      try {
        conn.close();
      } catch {}
      return;
    }
    const reconnected = this._everOpened;
    this._everOpened = true;
    this._attempt = 0;
    this.session = session;
    this.state = "open";
    this.error = null;
    this.sessionInfo = {
      session: session.id,
      authid: details.authid,
      authrole: details.authrole,
      authmethod: details.authmethod,
      realm: details.realm || this.ctx.realm,
      serializer: this.ctx.serializer,
      reconnected,
    };
    for (const w of this._waiters) w.resolve(session);
    this._waiters.clear();
    for (const socket of this.sockets) socket._sessionOpened(session);
    this.ctx._emit("open", this.sessionInfo);
  }

  _closed(conn, reason, details) {
    if (conn !== this._conn) return;
    clearTimeout(this._connectTimer);
    this._conn = null;
    const firstAttempt = this.state === "connecting";
    const wasOpen = this.session !== null;
    this.session = null;
    const uri = details.reason || null;
    const message = details.message || "";
    const lostError = new ZmqError(
      ERRORS.DISCONNECTED,
      `connection to ${this.ctx.url} ${wasOpen ? "lost" : "failed"} (${reason}${uri ? ": " + uri : ""}${message ? " " + message : ""})`,
    );
    const closing = this.state === "closing" || this.state === "closed";
    const pendingError = closing ? new ZmqError(ERRORS.CLOSED, "the connection was closed by the application") : lostError;
    for (const p of [...this.pending]) p.reject(pendingError);
    this.pending.clear();
    for (const socket of this.sockets) socket._sessionLost();

    if (closing) {
      this.state = "closed";
      if (this._resolveClosed) this._resolveClosed();
      if (wasOpen) this.ctx._emit("close", { reason: "closed", uri, message, willRetry: false });
      return;
    }

    let willRetry = true;
    let failure = lostError;
    if (uri && FATAL_REASONS.has(uri)) {
      willRetry = false;
      failure = new ZmqError(uri, message || uri);
    } else if (!this.ctx.reconnect || this._attempt >= this.ctx.reconnect.maxRetries) {
      willRetry = false;
    }
    const delay = willRetry ? this._nextDelay() : null;
    // Requests queued during the first connect fail now: nothing hangs on a dead link.
    for (const w of this._waiters) w.reject(failure);
    this._waiters.clear();

    if (willRetry) {
      this.state = "reconnecting";
      this.error = failure;
      this._retryTimer = setTimeout(() => {
        this._retryTimer = null;
        if (this.state === "reconnecting") this._connect();
      }, delay * 1000);
    } else {
      this.state = "failed";
      this.error = failure;
      this.ctx._unlink(this);
      for (const socket of this.sockets) socket._fail(failure);
    }
    // "close" when a session ends, when the first connect fails, and when giving up; not
    // for every failed retry in between.
    if (wasOpen || firstAttempt || !willRetry) {
      this.ctx._emit("close", { reason, uri, message, willRetry, delay });
    }
    if (!willRetry) this.ctx._emit("error", failure);
  }

  _nextDelay() {
    const r = this.ctx.reconnect;
    const base = Math.min(r.maxDelay, r.initialDelay * Math.pow(r.growth, this._attempt));
    this._attempt += 1;
    const jitter = 1 + r.jitter * (Math.random() * 2 - 1);
    return Math.max(0.01, base * jitter);
  }

  /** The open session now; the first connect is waited for; any other state fails fast. */
  sessionFor(timeoutMs) {
    if (this.state === "open") return Promise.resolve(this.session);
    if (this.state === "connecting") {
      return new Promise((resolve, reject) => {
        const w = { resolve, reject };
        this._waiters.add(w);
        const limit = timeoutMs ?? this.ctx.connectTimeout;
        const t = setTimeout(() => {
          if (this._waiters.delete(w)) {
            reject(new ZmqError(ERRORS.DISCONNECTED, `not connected to ${this.ctx.url} after ${limit} ms`));
          }
        }, limit);
        w.resolve = (s) => (clearTimeout(t), resolve(s));
        w.reject = (e) => (clearTimeout(t), reject(e));
      });
    }
    if (this.state === "closing" || this.state === "closed") {
      return Promise.reject(new ZmqError(ERRORS.CLOSED, "the connection is closed"));
    }
    return Promise.reject(this.error || new ZmqError(ERRORS.DISCONNECTED, `not connected to ${this.ctx.url}`));
  }

  detach(socket) {
    this.sockets.delete(socket);
    if (this.sockets.size === 0) return this.close();
    return Promise.resolve();
  }

  close() {
    if (this._closedPromise) return this._closedPromise;
    this.state = "closing";
    this.ctx._unlink(this);
    clearTimeout(this._retryTimer);
    clearTimeout(this._connectTimer);
    const closedError = new ZmqError(ERRORS.CLOSED, "the connection was closed by the application");
    for (const w of this._waiters) w.reject(closedError);
    this._waiters.clear();
    this._closedPromise = new Promise((resolve) => {
      this._resolveClosed = resolve;
    });
    const conn = this._conn;
    if (!conn) {
      this.state = "closed";
      this._conn = null;
      this._resolveClosed();
    } else {
      try {
        conn.close("wamp.close.normal", "zmqwamp-client closed");
      } catch {
        this._closed(conn, "closed", {});
      }
      // A bridge that never answers GOODBYE must not keep close() pending forever.
      const t = setTimeout(() => {
        if (this.state !== "closed") this._closed(conn, "closed", {});
      }, 3000);
      this._closedPromise.then(() => clearTimeout(t));
    }
    return this._closedPromise;
  }
}

// ---------------------------------------------------------------------------------------
// Sockets
// ---------------------------------------------------------------------------------------

class BaseSocket {
  constructor(ctx, type, endpoint, options) {
    if (typeof endpoint !== "string" || !endpoint) throw new TypeError("endpoint must be a non-empty string");
    this.context = ctx;
    this.type = type;
    this.endpoint = endpoint;
    this.options = { ...options };
    this.closed = false;
    this._link = ctx._linkFor(credentialsOf(options));
    this._link.sockets.add(this);
  }

  /** Where the socket stands: "connecting", "open", "reconnecting", "failed" or "closed". */
  get state() {
    return this.closed ? "closed" : this._link.state === "closing" ? "closed" : this._link.state;
  }

  _sessionOpened() {}
  _sessionLost() {}
  _fail() {}

  close() {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    this.context._sockets.delete(this);
    return this._link.detach(this);
  }
}

class ReqSocket extends BaseSocket {
  /**
   * Send one request; the reply goes to `callback(reply, frames)`, a failure to
   * `errback(error)` (or to the context's "error" listeners if there is no errback).
   */
  send(msg, callback, errback, options) {
    if (errback && typeof errback === "object") {
      options = errback;
      errback = undefined;
    }
    this._request(msg, options || {}).then(
      ({ reply, frames }) => {
        if (callback) callback(reply, frames);
      },
      (err) => {
        if (errback) errback(err);
        else this.context._emit("error", err);
      },
    );
  }

  /** Send one request; resolve with the reply, reject with a ZmqError. */
  request(msg, options = {}) {
    return this._request(msg, options).then(({ reply }) => reply);
  }

  async _request(msg, options) {
    if (this.closed) throw new ZmqError(ERRORS.CLOSED, "the socket is closed");
    const timeout = options.timeout ?? this.options.timeout;
    const multipart = options.multipart ?? false;
    let args;
    if (multipart) {
      if (!Array.isArray(msg) || msg.length === 0) {
        throw new ZmqError(ERRORS.INVALID_ARGUMENT, "a multipart request is a non-empty array of frames");
      }
      args = msg.map(toArg);
    } else {
      args = [toArg(msg)];
    }
    const link = this._link;
    const session = await link.sessionFor(timeout);
    if (this.closed) throw new ZmqError(ERRORS.CLOSED, "the socket is closed");
    return new Promise((resolve, reject) => {
      let guard = null;
      const entry = {
        reject: (err) => {
          clearTimeout(guard);
          link.pending.delete(entry);
          reject(err);
        },
      };
      const callOptions = {};
      if (timeout) {
        callOptions.timeout = timeout;
        // The bridge answers wamp.error.canceled at `timeout`; this guard covers a silent link.
        guard = setTimeout(
          () => entry.reject(new ZmqError(ERRORS.CANCELED, `no reply from the bridge within ${timeout} ms`)),
          timeout + this.context.timeoutGrace,
        );
      }
      link.pending.add(entry);
      let call;
      try {
        call = session.call(this.endpoint, args, undefined, callOptions);
      } catch (e) {
        entry.reject(toZmqError(e));
        return;
      }
      call.then(
        (result) => {
          if (!link.pending.has(entry)) return;
          clearTimeout(guard);
          link.pending.delete(entry);
          const frames = result instanceof autobahn.Result ? result.args : [result];
          resolve({ reply: multipart || frames.length !== 1 ? frames : frames[0], frames });
        },
        (err) => {
          if (link.pending.has(entry)) entry.reject(toZmqError(err));
        },
      );
    });
  }
}

class SubSocket extends BaseSocket {
  constructor(ctx, type, endpoint, options) {
    super(ctx, type, endpoint, options);
    if (options && options.filter !== undefined) {
      const f = options.filter;
      if (typeof f !== "string" && !asBytes(f)) throw new TypeError("filter must be a string or bytes");
    }
    this._handler = null;
    this._errback = null;
    this._subscription = null;
    this._generation = 0;
    this._error = null;
    this._readyWaiters = new Set();
    if (this._link.state === "open") this._sessionOpened(this._link.session);
    else if (this._link.state === "failed") this._fail(this._link.error);
  }

  /** Set the message handler `fn(msg, frames)`; `errback(error)` hears subscribe failures. */
  callback(fn, errback) {
    if (typeof fn !== "function") throw new TypeError("callback needs a function");
    this._handler = fn;
    if (errback !== undefined) this._errback = errback;
    if (this._error) this._reportError(this._error);
    return this;
  }

  /** Resolves once the bridge confirmed the subscription in the current session. */
  ready() {
    if (this.closed) return Promise.reject(new ZmqError(ERRORS.CLOSED, "the socket is closed"));
    if (this._subscription) return Promise.resolve(this);
    if (this._error) return Promise.reject(this._error);
    return new Promise((resolve, reject) => this._readyWaiters.add({ resolve, reject }));
  }

  _settleReady(err) {
    for (const w of this._readyWaiters) (err ? w.reject(err) : w.resolve(this));
    this._readyWaiters.clear();
  }

  _reportError(err) {
    if (this._errback) this._errback(err);
    else this.context._emit("error", err);
  }

  _sessionOpened(session) {
    if (this.closed) return;
    const generation = ++this._generation;
    this._subscription = null;
    this._error = null;
    const subscribeOptions = {};
    if (this.options.filter !== undefined) subscribeOptions.filter = toArg(this.options.filter);
    // One handler per session: a new session means a new autobahn Session object, so a
    // resubscription can never stack a second handler on the old one.
    const handler = (args) => {
      if (this.closed || generation !== this._generation || !this._handler) return;
      const frames = args || [];
      try {
        this._handler(frames.length === 1 ? frames[0] : frames, frames);
      } catch (e) {
        this.context._emit("error", toZmqError(e));
      }
    };
    let pending;
    try {
      pending = session.subscribe(this.endpoint, handler, subscribeOptions);
    } catch (e) {
      return; // the session closed under us; the next session resubscribes
    }
    pending.then(
      (subscription) => {
        if (this.closed || generation !== this._generation) {
          if (session.isOpen) unsubscribeQuietly(session, subscription);
          return;
        }
        this._subscription = subscription;
        this._settleReady(null);
      },
      (err) => {
        if (generation !== this._generation || this.closed) return;
        const e = toZmqError(err);
        this._error = e;
        this._settleReady(e);
        this._reportError(e);
      },
    );
  }

  _sessionLost() {
    this._generation++;
    this._subscription = null;
  }

  _fail(err) {
    this._generation++;
    this._subscription = null;
    this._error = err;
    this._settleReady(err);
    if (this._errback) this._errback(err);
  }

  close() {
    if (this.closed) return Promise.resolve();
    const sub = this._subscription;
    const session = this._link.session;
    this._generation++;
    this._subscription = null;
    this._settleReady(new ZmqError(ERRORS.CLOSED, "the socket is closed"));
    this.closed = true;
    this.context._sockets.delete(this);
    const unsubscribed =
      sub && session && session.isOpen && this._link.sockets.size > 1
        ? Promise.race([unsubscribeQuietly(session, sub), new Promise((r) => setTimeout(r, 3000))])
        : Promise.resolve(); // the last socket of a session: leaving the session releases it
    return unsubscribed.then(() => this._link.detach(this));
  }
}

// ---------------------------------------------------------------------------------------
// Context
// ---------------------------------------------------------------------------------------

class ZmqContext {
  constructor(url, options = {}) {
    if (typeof url !== "string") throw new TypeError("Context needs the bridge's WebSocket URL");
    // Autobahn 26 uses the global WebSocket.
    if (options.WebSocket && typeof globalThis.WebSocket === "undefined") {
      globalThis.WebSocket = options.WebSocket;
    }
    if (typeof globalThis.WebSocket === "undefined") {
      throw new Error("no WebSocket in this JavaScript runtime: use Node >= 22, or pass {WebSocket: require('ws').WebSocket}");
    }
    globalThis.WebSocket = quietErrors(globalThis.WebSocket);
    this.url = url;
    this.realm = options.realm || "zmqwamp";
    this.serializer = options.serializer || (options.binary ? "msgpack" : "json");
    if (!(this.serializer in SERIALIZERS)) {
      throw new TypeError(`unknown serializer ${JSON.stringify(this.serializer)} (json, msgpack or cbor)`);
    }
    this.reconnect = options.reconnect === false ? null : { ...DEFAULT_RECONNECT, ...(options.reconnect || {}) };
    this.connectTimeout = options.connectTimeout ?? 10000;
    this.timeoutGrace = options.timeoutGrace ?? 2000;
    this.closed = false;
    this._links = new Map();
    this._sockets = new Set();
    this._listeners = { open: new Set(), close: new Set(), error: new Set() };
  }

  /** Open a socket: `type` is zmq.REQ or zmq.SUB; `options` holds credentials, filter, timeout. */
  Socket(type, endpoint, options = {}) {
    if (this.closed) throw new ZmqError(ERRORS.CLOSED, "the context is closed");
    let socket;
    if (type === REQ || type === "REQ" || type === "req") socket = new ReqSocket(this, REQ, endpoint, options);
    else if (type === SUB || type === "SUB" || type === "sub") socket = new SubSocket(this, SUB, endpoint, options);
    else throw new TypeError("zmqwamp-client offers zmq.REQ and zmq.SUB sockets");
    this._sockets.add(socket);
    return socket;
  }

  socket(type, endpoint, options) {
    return this.Socket(type, endpoint, options);
  }

  on(event, fn) {
    if (!this._listeners[event]) throw new TypeError(`unknown event ${JSON.stringify(event)} (open, close, error)`);
    this._listeners[event].add(fn);
    return this;
  }

  off(event, fn) {
    if (this._listeners[event]) this._listeners[event].delete(fn);
    return this;
  }

  /** Number of WAMP sessions (WebSockets) this context holds, connected or not. */
  get sessionCount() {
    return this._links.size;
  }

  /** Close every socket and session; resolves once the WebSockets are closed. */
  close() {
    this.closed = true;
    const links = new Set([...this._links.values()]);
    for (const s of this._sockets) links.add(s._link);
    for (const s of [...this._sockets]) {
      s.closed = true;
      if (s._settleReady) s._settleReady(new ZmqError(ERRORS.CLOSED, "the context is closed"));
    }
    this._sockets.clear();
    return Promise.all([...links].map((l) => l.close())).then(() => undefined);
  }

  _linkFor(creds) {
    let link = this._links.get(creds.key);
    if (!link) {
      link = new Link(this, creds);
      if (link.state !== "failed") this._links.set(creds.key, link);
    }
    return link;
  }

  _unlink(link) {
    if (this._links.get(link.creds.key) === link) this._links.delete(link.creds.key);
  }

  _emit(event, payload) {
    const fns = this._listeners[event];
    if (event === "error" && fns.size === 0) {
      console.warn("zmqwamp-client:", payload && payload.uri, payload && payload.message);
      return;
    }
    for (const fn of fns) {
      try {
        fn(payload);
      } catch (e) {
        console.error("zmqwamp-client: exception in a", event, "listener:", e);
      }
    }
  }
}

/** `zmq.Context(url, {realm})`: works with or without `new`. */
export function Context(url, options) {
  return new ZmqContext(url, options);
}

export { ZmqContext, ReqSocket, SubSocket };
