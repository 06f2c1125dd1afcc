// @ts-check
// REQ, SUB, DEALER and PUSH sockets.  A socket is made by its context (ctx.Socket), which hands it a
// SocketHost: the Link it runs on and the few context services it needs.  It joins the Link
// as a LinkMember to hear about sessions opening, getting lost, failing or being closed.
//
// On the wire: REQ request = WAMP CALL; SUB = SUBSCRIBE; DEALER request = CALL with
// `receive_progress`, its replies progressive RESULTs then a final RESULT (stream.js); PUSH = PUBLISH
// with `acknowledge` (PUBLISHED: ZeroMQ took the message).

import autobahn from "autobahn";
import { ERRORS, ZmqError, toZmqError } from "./errors.js";
import { Listeners } from "./events.js";
import { frameArgs, replyValue, toArg } from "./frames.js";
import { ReplyStream, socketClosed } from "./stream.js";

/** @typedef {import("autobahn").Session} Session */
/** @typedef {import("autobahn").Subscription} Subscription */
/** @typedef {import("./link.js").Link} Link */
/** @typedef {import("./link.js").LinkMember} LinkMember */
/** @typedef {import("zmqwamp-client").Frame} Frame */
/** @typedef {import("zmqwamp-client").Sendable} Sendable */
/** @typedef {import("zmqwamp-client").RequestOptions} RequestOptions */
/** @typedef {import("zmqwamp-client").SendOptions} SendOptions */
/** @typedef {import("zmqwamp-client").SocketState} SocketState */
/** @typedef {import("zmqwamp-client").GapInfo} GapInfo */
/** @typedef {import("./link.js").EventInfo} EventInfo */
/** @typedef {{gap: GapInfo}} SubEvents */
/** @typedef {import("./index.js").ZmqContext} ZmqContext */
/** @typedef {(reply: any, frames: Frame[]) => void} ReplyCallback */
/** @typedef {import("zmqwamp-client").StreamOptions} StreamOptions */
/** @typedef {import("zmqwamp-client").StreamSendOptions} StreamSendOptions */
/** @typedef {import("./stream.js").PartCallback} PartCallback */
/** @typedef {(error: ZmqError) => void} Errback */

/**
 * What a socket gets from its context.
 * @typedef {object} SocketHost
 * @property {import("./index.js").ZmqContext} context  the socket's public `context`
 * @property {Link} link  the session this socket's credentials share
 * @property {(error: ZmqError) => void} report  errors with nowhere else to go (the context's "error")
 * @property {number} timeoutGrace  ms to wait past a request's timeout for the bridge's answer
 * @property {(key: string, message: string) => void} deprecated  a warning, once per context and key
 */

// A SUBSCRIBE the bridge refused for now, not for good: another SUBSCRIBE of this session to the same
// subscription is still being replayed (two sockets on one endpoint and filter resubscribing at once), or
// the session's SUBSCRIBE rate.  Tried again after 0.1 s, 0.2 s, 0.4 s ... 3.2 s, ten times in all.
const RETRIED_LIMITS = /^(replay_in_progress|max_subscribes_per_second):/;
const SUBSCRIBE_RETRIES = 10;

/**
 * @param {ZmqError} e
 * @returns {boolean}
 */
function retriedLater(e) {
  return e.uri === "zmqwamp.error.limit_exceeded" && RETRIED_LIMITS.test(e.message);
}

/**
 * autobahn's unsubscribe throws synchronously when the session or subscription is gone.
 * @param {Session} session
 * @param {Subscription} subscription
 * @returns {Promise<void>}
 */
function unsubscribeQuietly(session, subscription) {
  try {
    return Promise.resolve(session.unsubscribe(subscription)).then(
      () => {},
      () => {},
    );
  } catch {
    return Promise.resolve();
  }
}

class BaseSocket {
  /**
   * @param {SocketHost} host
   * @param {string} endpoint
   * @param {Record<string, unknown>} options
   */
  constructor(host, endpoint, options) {
    /** @type {ZmqContext} */
    this.context = host.context;
    this.endpoint = endpoint;
    this.options = { ...options };
    this.closed = false;
    this._host = host;
    this._link = host.link;
    /** @type {LinkMember} */
    this._member = {
      opened: (session) => this._sessionOpened(session),
      lost: () => this._sessionLost(),
      failed: (error) => this._failed(error),
      closed: (error) => this._linkClosed(error),
    };
    this._link.join(this._member);
  }

  /**
   * Where the socket stands.
   * @returns {SocketState}
   */
  get state() {
    const state = this._link.state;
    return this.closed || state === "closing" ? "closed" : state;
  }

  /** @param {Session} _session */
  _sessionOpened(_session) {}
  _sessionLost() {}
  /** @param {ZmqError} _error */
  _failed(_error) {}
  /** @param {ZmqError} _error */
  _linkClosed(_error) {
    this.closed = true;
  }

  /**
   * Release the socket; the last socket of a session ends the session.  Never rejects.
   * @returns {Promise<void>}
   */
  close() {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    return this._link.leave(this._member);
  }
}

export class ReqSocket extends BaseSocket {
  /**
   * Made by `ctx.Socket(zmq.REQ, endpoint, options)`.
   * @param {SocketHost} host
   * @param {string} endpoint
   * @param {Record<string, unknown>} options
   */
  constructor(host, endpoint, options) {
    super(host, endpoint, options);
    /** @type {3} */
    this.type = 3;
  }

  /**
   * Send one request; the reply goes to `callback(reply, frames)`, a failure to
   * `options.errback(error)` (or to the context's "error" listeners if there is no errback).
   * The old form `send(msg, callback, errback, options)` still works for this release, with a
   * one-time deprecation warning through the context's logger.
   * @overload
   * @param {Sendable | Sendable[]} msg
   * @param {ReplyCallback | null} [callback]
   * @param {SendOptions | null} [options]
   * @returns {void}
   */
  /**
   * @deprecated use `send(msg, callback, {errback, timeout, multipart})`
   * @overload
   * @param {Sendable | Sendable[]} msg
   * @param {ReplyCallback | null | undefined} callback
   * @param {Errback | null | undefined} errback
   * @param {RequestOptions} [options]
   * @returns {void}
   */
  /**
   * @param {Sendable | Sendable[]} msg
   * @param {ReplyCallback | null} [callback]
   * @param {SendOptions | Errback | null} [options]
   * @param {RequestOptions} [legacyOptions]
   * @returns {void}
   */
  send(msg, callback, options, legacyOptions) {
    /** @type {SendOptions} */
    let opts;
    if (typeof options === "function" || legacyOptions !== undefined) {
      this._host.deprecated(
        "send(msg, callback, errback, options)",
        "req.send(msg, callback, errback, options) is deprecated and goes away in the next release: " +
          "use req.send(msg, callback, {errback, timeout, multipart})",
      );
      opts = { ...legacyOptions, errback: typeof options === "function" ? options : undefined };
    } else {
      opts = options || {};
    }
    if (callback != null && typeof callback !== "function") throw new TypeError("callback must be a function");
    const errback = opts.errback;
    if (errback != null && typeof errback !== "function") throw new TypeError("errback must be a function");
    this._request(msg, opts).then(
      ({ reply, frames }) => {
        if (callback) callback(reply, frames);
      },
      (err) => {
        if (errback) errback(err);
        else this._host.report(err);
      },
    );
  }

  /**
   * Send one request; resolve with the reply, reject with a ZmqError.
   * @param {Sendable | Sendable[]} msg
   * @param {RequestOptions} [options]
   * @returns {Promise<any>}
   */
  request(msg, options = {}) {
    return this._request(msg, options).then(({ reply }) => reply);
  }

  /**
   * @param {Sendable | Sendable[]} msg
   * @param {RequestOptions} options
   * @returns {Promise<{reply: any, frames: Frame[]}>}
   */
  async _request(msg, options) {
    if (this.closed) throw new ZmqError(ERRORS.CLOSED, "the socket is closed");
    const timeout = options.timeout ?? /** @type {number | undefined} */ (this.options.timeout);
    const multipart = options.multipart ?? false;
    const args = frameArgs(msg, multipart);
    const link = this._link;
    const session = await link.sessionFor(timeout);
    if (this.closed) throw new ZmqError(ERRORS.CLOSED, "the socket is closed");
    /** @type {{timeout?: number}} */
    const callOptions = {};
    if (timeout) callOptions.timeout = timeout;
    const guardMs = timeout ? timeout + this._host.timeoutGrace : null;
    const result = await link.call(session, this.endpoint, args, callOptions, guardMs);
    const frames = /** @type {Frame[]} */ (result instanceof autobahn.Result ? result.args : [result]);
    return { reply: replyValue(frames, multipart), frames };
  }
}

export class SubSocket extends BaseSocket {
  /**
   * Made by `ctx.Socket(zmq.SUB, endpoint, options)`; the context has checked `options.filter`.
   * @param {SocketHost} host
   * @param {string} endpoint
   * @param {Record<string, unknown>} options
   */
  constructor(host, endpoint, options) {
    super(host, endpoint, options);
    /** @type {2} */
    this.type = 2;
    /** @type {((msg: any, frames: Frame[]) => void) | null} */
    this._handler = null;
    /** @type {Errback | null} */
    this._errback = null;
    /** @type {Subscription | null} */
    this._subscription = null;
    this._generation = 0;
    /** @type {ZmqError | null} */
    this._error = null;
    /** @type {Set<{resolve: (s: SubSocket) => void, reject: (e: ZmqError) => void}>} */
    this._readyWaiters = new Set();
    /** @type {Listeners<SubEvents>} */
    this._listeners = new Listeners(["gap"], (_event, e) => host.report(toZmqError(e)));
    // Where the socket is in the publisher's stream, to resume there after a reconnect: the
    // publication id of the last message it took and the bridge process's `_epoch` (null from
    // an endpoint without history: its ids are only compared within one bridge process).
    /** @type {number | null} */
    this._lastId = null;
    /** @type {string | null} */
    this._epoch = null;
    /** What the current SUBSCRIBE asked for. @type {{since: number | null, retained: boolean, gapSeen: boolean}} */
    this._asked = { since: null, retained: false, gapSeen: false };
    // The generation whose handler takes the EVENTs of `_subscription` (a resume may fall back to it).
    this._liveGeneration = 0;
    /** A gap to report with the next message taken (a resume that failed). @type {{since: number, reason: string} | null} */
    this._owedGap = null;
    const link = this._link;
    if (link.state === "open" && link.session) this._sessionOpened(link.session);
    else if (link.state === "failed" && link.error) this._failed(link.error);
  }

  /**
   * Set the message handler `fn(msg, frames)`; `errback(error)` hears subscribe failures.
   * @param {(msg: any, frames: Frame[]) => void} fn
   * @param {Errback} [errback]
   * @returns {this}
   */
  callback(fn, errback) {
    if (typeof fn !== "function") throw new TypeError("callback needs a function");
    this._handler = fn;
    if (errback !== undefined) this._errback = errback;
    if (this._error) this._reportError(this._error);
    return this;
  }

  /**
   * Resolves once the bridge confirmed the subscription in the current session.
   * @returns {Promise<this>}
   */
  ready() {
    if (this.closed) return Promise.reject(new ZmqError(ERRORS.CLOSED, "the socket is closed"));
    if (this._subscription) return Promise.resolve(this);
    if (this._error) return Promise.reject(this._error);
    return new Promise((resolve, reject) => this._readyWaiters.add({ resolve: () => resolve(this), reject }));
  }

  /**
   * Listen to the socket's events: `"gap"` (`fn({since, first, reason})`), emitted before the
   * callback gets the first message after messages were missed.
   * @param {"gap"} event
   * @param {(gap: GapInfo) => void} fn
   * @returns {this}
   */
  on(event, fn) {
    this._listeners.add(event, fn);
    return this;
  }

  /**
   * @param {"gap"} event
   * @param {(gap: GapInfo) => void} fn
   * @returns {this}
   */
  off(event, fn) {
    this._listeners.delete(event, fn);
    return this;
  }

  /** @param {ZmqError | null} err */
  _settleReady(err) {
    for (const w of this._readyWaiters) err ? w.reject(err) : w.resolve(this);
    this._readyWaiters.clear();
  }

  /** @param {ZmqError} err */
  _reportError(err) {
    if (this._errback) this._errback(err);
    else this._host.report(err);
  }

  /**
   * The SUBSCRIBE options for a (new) session: the filter, and where to resume: after the last
   * message taken (`_since`, `_epoch`), else the retained message if `lastValue` asks for it.
   * @returns {Record<string, unknown>}
   */
  _subscribeOptions() {
    /** @type {Record<string, unknown>} */
    const options = {};
    if (this.options.filter !== undefined) options.filter = toArg(this.options.filter);
    this._asked = { since: this._lastId, retained: false, gapSeen: false };
    if (this._lastId !== null) {
      options._since = this._lastId;
      if (this._epoch !== null) options._epoch = this._epoch;
    } else if (this.options.lastValue) {
      options.get_retained = true;
      this._asked.retained = true;
    }
    return options;
  }

  /**
   * One EVENT of this socket's subscription: whether the callback gets it, and the gap it reports.
   * The subscription id is shared by every socket of the session on the same endpoint and filter,
   * so an EVENT may answer another socket's SUBSCRIBE: a retained message this socket did not ask
   * for, or a replayed one it already has (same epoch, id not above the last one), is not its.
   * @param {unknown[]} args
   * @param {EventInfo} event
   */
  _event(args, { publication, details }) {
    const epoch = typeof details._epoch === "string" ? details._epoch : null;
    if (details.retained === true && !this._asked.retained) return;
    if (epoch !== null && epoch === this._epoch && this._lastId !== null && publication <= this._lastId) return;
    const gap = details._gap;
    if (gap && typeof gap === "object") {
      const { since, first, reason } = /** @type {Record<string, unknown>} */ (gap);
      if (reason === "slow_consumer" && this._link.session) {
        // The bridge stopped a replay to this session at a full outgoing buffer: what follows is live, and
        // what lies between `since` and this message was not sent.  Resume from the last message taken.
        if (this._lastId === null && typeof since === "number") {
          this._lastId = since;
          this._epoch = epoch;
        }
        this._resume(this._link.session);
        return;
      }
      // A gap is this socket's if it answers the _since it sent (once), or follows the last message it took
      // (a replay that the ring's eviction overtook); another socket's SUBSCRIBE on the same id is not.
      const answersMine = !this._asked.gapSeen && this._asked.since !== null && since === this._asked.since;
      if (answersMine || (this._lastId !== null && since === this._lastId)) {
        this._asked.gapSeen = true;
        this._owedGap = null;
        this._listeners.emit("gap", {
          since: /** @type {number} */ (since),
          first: typeof first === "number" ? first : publication,
          reason: String(reason),
        });
      }
    }
    if (this._owedGap) {
      const owed = this._owedGap;
      this._owedGap = null;
      this._listeners.emit("gap", { since: owed.since, first: publication, reason: owed.reason });
    }
    this._lastId = publication;
    this._epoch = epoch;
    if (!this._handler) return;
    const frames = /** @type {Frame[]} */ (args);
    try {
      this._handler(frames.length === 1 ? frames[0] : frames, frames);
    } catch (e) {
      this._host.report(toZmqError(e));
    }
  }

  /** @param {Session} session */
  _sessionOpened(session) {
    if (this.closed) return;
    this._subscription = null;
    this._owedGap = null;
    this._error = null;
    this._subscribe(session, 0);
  }

  /**
   * SUBSCRIBE again in the same session, from the last message taken (after a "slow_consumer" gap): the
   * current handler ignores everything from now on (the replay sends it again, in order), and is given
   * back once the new SUBSCRIBE is answered; if that fails for good, it takes messages again and the
   * socket emits "gap" before the next one.
   * @param {Session} session
   */
  _resume(session) {
    if (this.closed) return;
    this._subscribe(session, 0);
  }

  /**
   * One SUBSCRIBE with a handler of its own generation (a new session means a new autobahn Session
   * object, so a resubscription can never stack a second handler on the old one).
   * @param {Session} session
   * @param {number} attempt  how many times the bridge said "later" (RETRIED_LIMITS)
   */
  _subscribe(session, attempt) {
    const generation = ++this._generation;
    const previous = this._subscription; // a resume: the subscription whose handler is set aside
    /** @type {(args: unknown[], event: EventInfo) => void} */
    const handler = (args, event) => {
      if (this.closed || generation !== this._generation) return;
      this._event(args, event);
    };
    /** @type {Promise<Subscription>} */
    let pending;
    try {
      pending = this._link.subscribe(session, this.endpoint, this._subscribeOptions(), handler);
    } catch {
      return; // the session closed under us; the next session resubscribes
    }
    pending.then(
      (subscription) => {
        if (this.closed || generation !== this._generation) {
          // Still this session (the socket was closed meanwhile): give the subscription back.
          if (this._link.session === session && session.isOpen) unsubscribeQuietly(session, subscription);
          return;
        }
        // The new handler is on the subscription id now: dropping the old one sends no UNSUBSCRIBE.
        if (previous && previous !== subscription && session.isOpen) unsubscribeQuietly(session, previous);
        this._subscription = subscription;
        this._liveGeneration = generation;
        this._settleReady(null);
      },
      (err) => {
        if (generation !== this._generation || this.closed) return;
        const e = toZmqError(err);
        if (retriedLater(e) && attempt < SUBSCRIBE_RETRIES) {
          setTimeout(
            () => {
              if (generation === this._generation && !this.closed && this._link.session === session && session.isOpen) {
                this._subscribe(session, attempt + 1);
              }
            },
            100 * 2 ** Math.min(attempt, 5),
          );
          return;
        }
        if (previous && this._subscription === previous) {
          // A resume that failed: back to the live messages of the subscription held, and say what was missed.
          this._generation = this._liveGeneration;
          if (this._lastId !== null) this._owedGap = { since: this._lastId, reason: "slow_consumer" };
          this._reportError(e);
          return;
        }
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

  /** @param {ZmqError} err */
  _failed(err) {
    this._generation++;
    this._subscription = null;
    this._error = err;
    this._settleReady(err);
    if (this._errback) this._errback(err);
  }

  /** @param {ZmqError} err */
  _linkClosed(err) {
    this._generation++;
    this._subscription = null;
    this.closed = true;
    this._settleReady(err);
  }

  /**
   * Unsubscribe (or, as the last socket of its session, end the session).  Never rejects.
   * @returns {Promise<void>}
   */
  close() {
    if (this.closed) return Promise.resolve();
    const sub = this._subscription;
    const link = this._link;
    const session = link.session;
    this._generation++;
    this._subscription = null;
    this._settleReady(new ZmqError(ERRORS.CLOSED, "the socket is closed"));
    this.closed = true;
    const unsubscribed =
      sub && session && session.isOpen && link.memberCount > 1
        ? Promise.race([unsubscribeQuietly(session, sub), new Promise((r) => setTimeout(r, 3000))])
        : Promise.resolve(); // the last socket of a session: leaving the session releases it
    return unsubscribed.then(() => link.leave(this._member));
  }
}

export class DealerSocket extends BaseSocket {
  /**
   * Made by `ctx.Socket(zmq.DEALER, endpoint, options)`: requests whose replies come as a stream
   * (a streaming ROUTER service or a Majordomo broker behind the bridge; a REP endpoint answers with
   * one final part).
   * @param {SocketHost} host
   * @param {string} endpoint
   * @param {Record<string, unknown>} options
   */
  constructor(host, endpoint, options) {
    super(host, endpoint, options);
    /** @type {5} */
    this.type = 5;
    /** Streams not ended yet (closed with the socket). @type {Set<ReplyStream>} */
    this._streams = new Set();
  }

  /**
   * Send one request; each reply goes to `callback(part, {last, frames})` as it arrives, the last one
   * with `last: true` (a final reply without frames: `part` undefined, `frames` empty).  A failure goes
   * to `options.errback(error)` (or the context's "error" listeners); after `stream.cancel()` neither
   * is called again.  Returns the stream, for `cancel()`.
   * @param {Sendable | Sendable[]} msg
   * @param {PartCallback | null} [callback]
   * @param {StreamSendOptions | null} [options]
   * @returns {ReplyStream}
   */
  send(msg, callback, options) {
    if (callback != null && typeof callback !== "function") throw new TypeError("callback must be a function");
    const opts = options || {};
    const errback = opts.errback;
    if (errback != null && typeof errback !== "function") throw new TypeError("errback must be a function");
    return this._open(msg, opts, callback ?? null, errback ?? null);
  }

  /**
   * Send one request and iterate its replies: `for await (const part of dealer.stream(msg))`.  The
   * request leaves at once; parts that arrive before they are read wait in the stream.  Failures
   * are thrown by the iteration; leaving the loop early cancels the stream.
   * @param {Sendable | Sendable[]} msg
   * @param {StreamOptions} [options]
   * @returns {ReplyStream}
   */
  stream(msg, options = {}) {
    return this._open(msg, options || {}, undefined, null);
  }

  /**
   * @param {Sendable | Sendable[]} msg
   * @param {StreamOptions} options
   * @param {PartCallback | null | undefined} callback  undefined: iterated
   * @param {((error: ZmqError) => void) | null} errback
   * @returns {ReplyStream}
   */
  _open(msg, options, callback, errback) {
    const multipart = options.multipart ?? false;
    const stream = new ReplyStream(this.endpoint, {
      callback,
      errback,
      report: (error) => this._host.report(error),
      multipart,
      ended: () => this._streams.delete(stream),
    });
    this._streams.add(stream);
    this._run(stream, msg, options, multipart).catch((e) => stream._fail(toZmqError(e)));
    return stream;
  }

  /**
   * Wait for the session (the first connect), then send the CALL, unless the stream ended meanwhile.
   * @param {ReplyStream} stream
   * @param {Sendable | Sendable[]} msg
   * @param {StreamOptions} options
   * @param {boolean} multipart
   */
  async _run(stream, msg, options, multipart) {
    if (this.closed) throw socketClosed();
    const timeout = options.timeout ?? /** @type {number | undefined} */ (this.options.timeout);
    const args = frameArgs(msg, multipart);
    const session = await this._link.sessionFor(timeout);
    if (this.closed) throw socketClosed();
    if (stream.state !== "open") return; // canceled while waiting for the session: never sent
    /** @type {{timeout?: number}} */
    const callOptions = {};
    if (timeout) callOptions.timeout = timeout;
    const guardMs = timeout ? timeout + this._host.timeoutGrace : null;
    stream._attach(this._link.stream(session, this.endpoint, args, callOptions, guardMs, stream._sink));
  }

  /** @param {ZmqError} error */
  _linkClosed(error) {
    for (const stream of [...this._streams]) stream._fail(error);
    super._linkClosed(error);
  }

  /**
   * Cancel the streams still open (mode `killnowait`; each fails with `zmqwamp.error.closed`), then
   * release the socket.  Never rejects.
   * @returns {Promise<void>}
   */
  close() {
    if (this.closed) return Promise.resolve();
    for (const stream of [...this._streams]) stream._abort(socketClosed());
    return super.close();
  }
}

export class PushSocket extends BaseSocket {
  /**
   * Made by `ctx.Socket(zmq.PUSH, endpoint, options)`: messages for the PULL workers behind the bridge.
   * @param {SocketHost} host
   * @param {string} endpoint
   * @param {Record<string, unknown>} options
   */
  constructor(host, endpoint, options) {
    super(host, endpoint, options);
    /** @type {8} */
    this.type = 8;
  }

  /**
   * Push one message: resolves once the bridge's ZeroMQ PUSH socket took it (WAMP PUBLISHED); rejects
   * with a ZmqError when it did not (e.g. `zmqwamp.error.backend_unavailable`: no PULL worker
   * connected, or all at their high-water mark), and as a REQ request does when not connected.
   * With `timeout`, rejects (`wamp.error.canceled`) when no answer came within it: the message may
   * or may not have been pushed.  Await it or catch it: an ignored rejection is an unhandled one.
   * @param {Sendable | Sendable[]} msg
   * @param {RequestOptions} [options]
   * @returns {Promise<void>}
   */
  async send(msg, options = {}) {
    if (this.closed) throw socketClosed();
    const opts = options || {};
    const timeout = opts.timeout ?? /** @type {number | undefined} */ (this.options.timeout);
    const args = frameArgs(msg, opts.multipart ?? false);
    const session = await this._link.sessionFor(timeout);
    if (this.closed) throw socketClosed();
    await this._link.publish(session, this.endpoint, args, timeout || null);
  }
}
