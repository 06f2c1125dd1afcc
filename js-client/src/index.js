// @ts-check
// zmqwamp-client: ZeroMQ-shaped sockets over WAMP, on top of the stock Autobahn JS client.
//
//   const ctx = zmq.Context("ws://localhost:8080/ws", {realm: "zmqwamp"});
//   const req = ctx.Socket(zmq.REQ, "tcp://127.0.0.1:9999");
//   req.send({myrequest: "hello"}, (reply) => console.log(reply), {errback: (err) => console.log(err.uri)});
//   const sub = ctx.Socket(zmq.SUB, "tcp://127.0.0.1:9000", {filter: "hugo"});
//   sub.callback((msg) => console.log(msg));
//   const dealer = ctx.Socket(zmq.DEALER, "words");
//   for await (const word of dealer.stream("a poem")) console.log(word);
//   await ctx.Socket(zmq.PUSH, "jobs").send({job: 1});
//
// A REQ socket's request is a WAMP CALL to the endpoint URI; a SUB socket is a WAMP
// SUBSCRIBE to it (the filter travels as the SUBSCRIBE option `filter`); a DEALER socket's
// request is a CALL with `receive_progress` (its replies: progressive RESULTs, then a final
// one); a PUSH socket's message is a PUBLISH with `acknowledge`.  Sockets with the same
// credentials share one WAMP session (one WebSocket); see README.md.
//
// Importing this module changes nothing global: no global WebSocket is set, Autobahn's logger is
// left alone.  What a context needs (a WebSocket class, a logger) is in its options.
//
// Modules: index.js (this: constants, the Context), sockets.js (REQ, SUB, DEALER, PUSH),
// stream.js (a DEALER request's replies), link.js (one WAMP session per credentials, reconnect),
// wamp.js (one WebSocket + autobahn.Session), credentials.js, errors.js, frames.js, serializers.js.

import autobahn from "autobahn";
import { credentialsOf } from "./credentials.js";
import { ERRORS, ZmqError } from "./errors.js";
import { Listeners } from "./events.js";
import { Link } from "./link.js";
import { asBytes, SERIALIZERS } from "./serializers.js";
import { DealerSocket, PushSocket, ReqSocket, SubSocket } from "./sockets.js";
import { ReplyStream } from "./stream.js";

/** @typedef {import("zmqwamp-client").ContextOptions} ContextOptions */
/** @typedef {import("zmqwamp-client").ReqOptions} ReqOptions */
/** @typedef {import("zmqwamp-client").SubOptions} SubOptions */
/** @typedef {import("zmqwamp-client").DealerOptions} DealerOptions */
/** @typedef {import("zmqwamp-client").PushOptions} PushOptions */
/** @typedef {import("zmqwamp-client").SessionInfo} SessionInfo */
/** @typedef {import("zmqwamp-client").CloseInfo} CloseInfo */
/** @typedef {import("zmqwamp-client").Logger} Logger */
/** @typedef {import("./link.js").LinkConfig} LinkConfig */
/** @typedef {import("./link.js").SerializerName} SerializerName */
/** @typedef {{open: SessionInfo, close: CloseInfo, error: ZmqError}} ContextEvents */

export { autobahn, ERRORS, ZmqError, ReqSocket, SubSocket, DealerSocket, PushSocket, ReplyStream };
export const version = "0.1.0";

// Socket types, numbered as in libzmq.
export const PUB = 1;
export const SUB = 2;
export const REQ = 3;
export const REP = 4;
export const DEALER = 5;
export const PUSH = 8;

const DEFAULT_RECONNECT = Object.freeze({
  initialDelay: 0.5, // seconds before the first retry
  maxDelay: 30, // cap on the delay between retries
  growth: 1.5, // factor applied to the delay after every failed attempt
  jitter: 0.1, // +/- fraction of randomness on each delay
  maxRetries: Infinity, // attempts in a row before giving up
});

/** The socket types offered, by number and by name. */
const SOCKET_TYPES = new Map(
  /** @type {[string, typeof REQ | typeof SUB | typeof DEALER | typeof PUSH][]} */ ([
    ["REQ", REQ],
    ["SUB", SUB],
    ["DEALER", DEALER],
    ["PUSH", PUSH],
  ]),
);

/**
 * @param {unknown} type
 * @returns {typeof REQ | typeof SUB | typeof DEALER | typeof PUSH}
 */
function socketType(type) {
  for (const [name, number] of SOCKET_TYPES) {
    if (type === number || type === name || type === name.toLowerCase()) return number;
  }
  throw new TypeError("zmqwamp-client offers zmq.REQ, zmq.SUB, zmq.DEALER and zmq.PUSH sockets");
}

export class ZmqContext {
  /**
   * @param {string} url  the bridge's WebSocket URL
   * @param {ContextOptions} [options]
   */
  constructor(url, options = {}) {
    if (typeof url !== "string") throw new TypeError("Context needs the bridge's WebSocket URL");
    // Only this context's WebSockets are made with it; the global is read, never written.
    const WebSocketClass = options.WebSocket ?? globalThis.WebSocket;
    if (typeof WebSocketClass !== "function") {
      throw new Error(
        "no WebSocket in this JavaScript runtime: use Node >= 22, or pass {WebSocket: require('ws').WebSocket}",
      );
    }
    const logger = options.logger ?? console;
    if (typeof logger.warn !== "function" || typeof logger.error !== "function") {
      throw new TypeError("logger needs warn() and error() methods (like console)");
    }
    this.url = url;
    this.realm = options.realm || "zmqwamp";
    /** @type {SerializerName} */
    this.serializer = options.serializer || (options.binary ? "msgpack" : "json");
    if (!(this.serializer in SERIALIZERS)) {
      throw new TypeError(`unknown serializer ${JSON.stringify(this.serializer)} (json, msgpack or cbor)`);
    }
    this.reconnect = options.reconnect === false ? null : { ...DEFAULT_RECONNECT, ...(options.reconnect || {}) };
    this.connectTimeout = options.connectTimeout ?? 10000;
    this.timeoutGrace = options.timeoutGrace ?? 2000;
    this.closed = false;
    this._logger = logger;
    /** @type {LinkConfig} */
    this._linkConfig = {
      url,
      realm: this.realm,
      serializer: this.serializer,
      reconnect: this.reconnect,
      connectTimeout: this.connectTimeout,
      WebSocket: WebSocketClass,
      logger,
    };
    /** Links that take new sockets, by credentials. @type {Map<string, Link>} */
    this._links = new Map();
    /** Every link not closed yet (failed ones too: their sockets are closed with the context). @type {Set<Link>} */
    this._allLinks = new Set();
    /** @type {Listeners<ContextEvents>} */
    this._listeners = new Listeners(["open", "close", "error"], (event, e) =>
      logger.error("zmqwamp-client: exception in a", event, "listener:", e),
    );
    /** @type {Set<string>} */
    this._warned = new Set();
  }

  /**
   * Open a socket: `type` is zmq.REQ, zmq.SUB, zmq.DEALER or zmq.PUSH; `options` holds credentials,
   * filter, timeout.
   * @overload
   * @param {typeof REQ | "REQ" | "req"} type
   * @param {string} endpoint
   * @param {ReqOptions} [options]
   * @returns {ReqSocket}
   */
  /**
   * @overload
   * @param {typeof SUB | "SUB" | "sub"} type
   * @param {string} endpoint
   * @param {SubOptions} [options]
   * @returns {SubSocket}
   */
  /**
   * @overload
   * @param {typeof DEALER | "DEALER" | "dealer"} type
   * @param {string} endpoint
   * @param {DealerOptions} [options]
   * @returns {DealerSocket}
   */
  /**
   * @overload
   * @param {typeof PUSH | "PUSH" | "push"} type
   * @param {string} endpoint
   * @param {PushOptions} [options]
   * @returns {PushSocket}
   */
  /**
   * @param {unknown} type
   * @param {string} endpoint
   * @param {ReqOptions | SubOptions | DealerOptions | PushOptions} [options]
   * @returns {ReqSocket | SubSocket | DealerSocket | PushSocket}
   */
  Socket(type, endpoint, options = {}) {
    if (this.closed) throw new ZmqError(ERRORS.CLOSED, "the context is closed");
    const kind = socketType(type);
    if (typeof endpoint !== "string" || !endpoint) throw new TypeError("endpoint must be a non-empty string");
    const opts = /** @type {Record<string, unknown>} */ (options || {});
    if (kind === SUB && opts.filter !== undefined) {
      const f = opts.filter;
      if (typeof f !== "string" && !asBytes(f)) throw new TypeError("filter must be a string or bytes");
    }
    if (kind === SUB && opts.lastValue !== undefined && typeof opts.lastValue !== "boolean") {
      throw new TypeError("lastValue must be true or false");
    }
    const link = this._linkFor(credentialsOf(opts));
    const host = {
      context: this,
      link,
      /** @param {ZmqError} error */
      report: (error) => this._emit("error", error),
      timeoutGrace: this.timeoutGrace,
      /** @param {string} key @param {string} message */
      deprecated: (key, message) => this._warnOnce(key, message),
    };
    if (kind === REQ) return new ReqSocket(host, endpoint, opts);
    if (kind === SUB) return new SubSocket(host, endpoint, opts);
    if (kind === DEALER) return new DealerSocket(host, endpoint, opts);
    return new PushSocket(host, endpoint, opts);
  }

  /**
   * Same as Socket().
   * @overload
   * @param {typeof REQ | "REQ" | "req"} type
   * @param {string} endpoint
   * @param {ReqOptions} [options]
   * @returns {ReqSocket}
   */
  /**
   * @overload
   * @param {typeof SUB | "SUB" | "sub"} type
   * @param {string} endpoint
   * @param {SubOptions} [options]
   * @returns {SubSocket}
   */
  /**
   * @overload
   * @param {typeof DEALER | "DEALER" | "dealer"} type
   * @param {string} endpoint
   * @param {DealerOptions} [options]
   * @returns {DealerSocket}
   */
  /**
   * @overload
   * @param {typeof PUSH | "PUSH" | "push"} type
   * @param {string} endpoint
   * @param {PushOptions} [options]
   * @returns {PushSocket}
   */
  /**
   * @param {any} type
   * @param {string} endpoint
   * @param {ReqOptions | SubOptions | DealerOptions | PushOptions} [options]
   * @returns {ReqSocket | SubSocket | DealerSocket | PushSocket}
   */
  socket(type, endpoint, options) {
    return this.Socket(type, endpoint, options);
  }

  /**
   * @overload
   * @param {"open"} event
   * @param {(info: SessionInfo) => void} fn
   * @returns {this}
   */
  /**
   * @overload
   * @param {"close"} event
   * @param {(info: CloseInfo) => void} fn
   * @returns {this}
   */
  /**
   * @overload
   * @param {"error"} event
   * @param {(error: ZmqError) => void} fn
   * @returns {this}
   */
  /**
   * @param {keyof ContextEvents} event
   * @param {(payload: any) => void} fn
   * @returns {this}
   */
  on(event, fn) {
    this._listeners.add(event, fn);
    return this;
  }

  /**
   * @param {keyof ContextEvents} event
   * @param {(...args: any[]) => void} fn
   * @returns {this}
   */
  off(event, fn) {
    this._listeners.delete(event, fn);
    return this;
  }

  /** Number of WAMP sessions (WebSockets) this context holds, connected or not. */
  get sessionCount() {
    return this._links.size;
  }

  /**
   * Close every socket and session; resolves once the WebSockets are closed.
   * @returns {Promise<void>}
   */
  close() {
    this.closed = true;
    const closed = new ZmqError(ERRORS.CLOSED, "the context is closed");
    return Promise.all([...this._allLinks].map((link) => link.close(closed))).then(() => undefined);
  }

  /** @param {import("./credentials.js").Creds} creds */
  _linkFor(creds) {
    let link = this._links.get(creds.key);
    if (!link) {
      link = new Link(this._linkConfig, creds, {
        open: (info) => this._emit("open", info),
        close: (info) => this._emit("close", info),
        error: (error) => this._emit("error", error),
        retired: (retired) => this._retire(retired),
      });
      if (link.state !== "failed") this._links.set(creds.key, link);
      if (link.state !== "closed") this._allLinks.add(link);
    }
    return link;
  }

  /** @param {Link} link  failed (kept until closed, for close()) or closing */
  _retire(link) {
    if (this._links.get(link.creds.key) === link) this._links.delete(link.creds.key);
    if (link.state === "closing" || link.state === "closed") this._allLinks.delete(link);
  }

  /**
   * @param {string} key
   * @param {string} message
   */
  _warnOnce(key, message) {
    if (this._warned.has(key)) return;
    this._warned.add(key);
    this._logger.warn(`zmqwamp-client: ${message}`);
  }

  /**
   * @template {keyof ContextEvents} E
   * @param {E} event
   * @param {ContextEvents[E]} payload
   */
  _emit(event, payload) {
    if (event === "error" && this._listeners.count("error") === 0) {
      const error = /** @type {ZmqError} */ (payload);
      this._logger.warn("zmqwamp-client:", error && error.uri, error && error.message);
      return;
    }
    this._listeners.emit(event, payload);
  }
}

/**
 * `zmq.Context(url, {realm})`: works with or without `new`.
 * @param {string} url
 * @param {ContextOptions} [options]
 * @returns {ZmqContext}
 */
export function Context(url, options) {
  return new ZmqContext(url, options);
}
