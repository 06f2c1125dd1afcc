// @ts-check
// Link: one WAMP session (one WebSocket) per distinct set of credentials, with reconnect.
// States: connecting (first attempt) -> open <-> reconnecting; failed; closing -> closed.
//
// A Link knows nobody's internals.  It tells its owner (the context) through a LinkOwner and
// each socket on it through the LinkMember the socket joined with; sockets ask it for the
// session (`sessionFor`) and run calls through it (`call`), so a lost connection fails them.

import { WampConnection } from "./wamp.js";
import { answerChallenge } from "./credentials.js";
import { ERRORS, ZmqError, toZmqError, wampError } from "./errors.js";
import { SERIALIZERS } from "./serializers.js";

/** @typedef {import("autobahn").Session} Session */
/** @typedef {import("./credentials.js").Creds} Creds */
/** @typedef {import("zmqwamp-client").SessionInfo} SessionInfo */
/** @typedef {import("zmqwamp-client").CloseInfo} CloseInfo */
/** @typedef {import("zmqwamp-client").Logger} Logger */
/** @typedef {import("zmqwamp-client").WebSocketClass} WebSocketClass */
/** @typedef {Required<import("zmqwamp-client").ReconnectOptions>} ReconnectPolicy */
/** @typedef {"json" | "msgpack" | "cbor"} SerializerName */
/** @typedef {import("autobahn").Subscription} Subscription */

/**
 * One EVENT as a subscription handler hears it.
 * @typedef {object} EventInfo
 * @property {number} publication  the EVENT's publication id
 * @property {Record<string, unknown>} details  the EVENT's details, every key
 */

/**
 * Where the answers to a streaming CALL go (Link.stream).
 * @typedef {object} StreamSink
 * @property {(args: unknown[], last: boolean) => void} part  a RESULT's arguments: each progressive one, then the final one
 * @property {(error: ZmqError) => void} error  the call's ERROR, a lost or closed connection, or the client's guard
 */

/**
 * A streaming CALL in flight.
 * @typedef {object} StreamControl
 * @property {(mode: CancelMode) => Promise<void>} cancel  send CANCEL; the sink hears nothing more; resolves
 *   once the router has answered the call (or the connection is gone)
 */
/** @typedef {import("zmqwamp-client").CancelMode} CancelMode */

// WAMP message types the Link sends itself (Autobahn sends the others).
const CALL = 48; // [CALL, Request|id, Options|dict, Procedure|uri, Arguments|list]
const CANCEL = 49; // [CANCEL, CALL.Request|id, Options|dict]
const ERROR = 8;

/**
 * What every Link of a context shares.
 * @typedef {object} LinkConfig
 * @property {string} url
 * @property {string} realm
 * @property {SerializerName} serializer
 * @property {ReconnectPolicy | null} reconnect  null: never reconnect
 * @property {number} connectTimeout  ms
 * @property {WebSocketClass} WebSocket
 * @property {Logger} logger
 */

/**
 * What a Link tells the one who made it (the context).
 * @typedef {object} LinkOwner
 * @property {(info: SessionInfo) => void} open  a session is up
 * @property {(info: CloseInfo) => void} close  a session ended, the first connect failed, or the link gave up
 * @property {(error: ZmqError) => void} error  the link gave up
 * @property {(link: Link) => void} retired  the link failed or is closing: no new sockets on it
 */

/**
 * What a Link tells each socket that joined it.
 * @typedef {object} LinkMember
 * @property {(session: Session) => void} opened  a (new) session is up
 * @property {() => void} lost  the session is gone; a new one may follow
 * @property {(error: ZmqError) => void} failed  the link gave up
 * @property {(error: ZmqError) => void} closed  the link was closed by the application (the context)
 */

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

export class Link {
  /**
   * @param {LinkConfig} config
   * @param {Creds} creds
   * @param {LinkOwner} owner
   */
  constructor(config, creds, owner) {
    this.config = config;
    this.creds = creds;
    this.owner = owner;
    /** @type {"connecting" | "open" | "reconnecting" | "failed" | "closing" | "closed"} */
    this.state = "connecting";
    /** The open session, else null. @type {Session | null} */
    this.session = null;
    /** @type {SessionInfo | null} */
    this.sessionInfo = null;
    /** Why the link is down or gave up. @type {ZmqError | null} */
    this.error = null;
    /** @type {Set<LinkMember>} */
    this._members = new Set();
    /** In-flight calls. @type {Set<{reject: (error: ZmqError) => void}>} */
    this._pending = new Set();
    /** Requests made during the first connect. @type {Set<{resolve: (s: Session) => void, reject: (e: ZmqError) => void}>} */
    this._waiters = new Set();
    this._attempt = 0;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._retryTimer = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._connectTimer = undefined;
    /** @type {WampConnection | null} */
    this._conn = null;
    this._everOpened = false;
    /** @type {Promise<void> | null} */
    this._closedPromise = null;
    /** @type {(() => void) | null} */
    this._resolveClosed = null;
    this._connect();
  }

  // -- the sockets on this link -----------------------------------------------------

  /** @param {LinkMember} member */
  join(member) {
    this._members.add(member);
  }

  /**
   * The socket is done with this link; the last one to leave closes it.
   * @param {LinkMember} member
   * @returns {Promise<void>}
   */
  leave(member) {
    this._members.delete(member);
    if (this._members.size === 0) return this.close();
    return Promise.resolve();
  }

  /** Sockets on this link. */
  get memberCount() {
    return this._members.size;
  }

  /**
   * The open session now; the first connect is waited for; any other state fails fast.
   * @param {number} [timeoutMs]  how long to wait for the first connect (default: connectTimeout)
   * @returns {Promise<Session>}
   */
  sessionFor(timeoutMs) {
    if (this.state === "open" && this.session) return Promise.resolve(this.session);
    if (this.state === "connecting") {
      return new Promise((resolve, reject) => {
        const limit = timeoutMs ?? this.config.connectTimeout;
        const t = setTimeout(() => {
          if (this._waiters.delete(w)) {
            reject(new ZmqError(ERRORS.DISCONNECTED, `not connected to ${this.config.url} after ${limit} ms`));
          }
        }, limit);
        const w = {
          /** @param {Session} s */
          resolve: (s) => (clearTimeout(t), resolve(s)),
          /** @param {ZmqError} e */
          reject: (e) => (clearTimeout(t), reject(e)),
        };
        this._waiters.add(w);
      });
    }
    if (this.state === "closing" || this.state === "closed") {
      return Promise.reject(new ZmqError(ERRORS.CLOSED, "the connection is closed"));
    }
    return Promise.reject(this.error || new ZmqError(ERRORS.DISCONNECTED, `not connected to ${this.config.url}`));
  }

  /**
   * A WAMP CALL in `session` that rejects when the connection is lost or closed, or when no
   * answer came `guardMs` after it was sent (the bridge answers a timeout itself; the guard
   * covers a silent link).
   * @param {Session} session  from sessionFor()
   * @param {string} procedure
   * @param {unknown[]} args
   * @param {{timeout?: number}} callOptions  WAMP CALL options
   * @param {number | null} guardMs
   * @returns {Promise<unknown>}
   */
  call(session, procedure, args, callOptions, guardMs) {
    return this._tracked(
      () => session.call(procedure, args, undefined, callOptions),
      guardMs,
      () => new ZmqError(ERRORS.CANCELED, `no reply from the bridge within ${callOptions.timeout} ms`),
    );
  }

  /**
   * An acknowledged WAMP PUBLISH in `session`: resolves on PUBLISHED, rejects with the ERROR, when
   * the connection is lost or closed, or when no answer came within `guardMs`.
   * @param {Session} session  from sessionFor()
   * @param {string} topic
   * @param {unknown[]} args
   * @param {number | null} guardMs
   * @returns {Promise<void>}
   */
  publish(session, topic, args, guardMs) {
    return this._tracked(
      () => /** @type {Promise<unknown>} */ (session.publish(topic, args, undefined, { acknowledge: true })),
      guardMs,
      () =>
        new ZmqError(
          ERRORS.CANCELED,
          `no acknowledgement from the bridge within ${guardMs} ms: the message may or may not have been pushed`,
        ),
    ).then(() => undefined);
  }

  /**
   * What Autobahn does for `start` (a call or publish), settled by its answer, a lost or closed
   * connection (`_closed` rejects every pending entry), or `guardMs` without an answer.
   * @param {() => Promise<unknown>} start
   * @param {number | null} guardMs
   * @param {() => ZmqError} guardError
   * @returns {Promise<unknown>}
   */
  _tracked(start, guardMs, guardError) {
    return new Promise((resolve, reject) => {
      /** @type {ReturnType<typeof setTimeout> | undefined} */
      let guard;
      const entry = {
        /** @param {ZmqError} err */
        reject: (err) => {
          clearTimeout(guard);
          this._pending.delete(entry);
          reject(err);
        },
      };
      if (guardMs !== null) guard = setTimeout(() => entry.reject(guardError()), guardMs);
      this._pending.add(entry);
      /** @type {Promise<unknown>} */
      let answer;
      try {
        answer = start();
      } catch (e) {
        entry.reject(toZmqError(e));
        return;
      }
      answer.then(
        (result) => {
          if (!this._pending.has(entry)) return;
          clearTimeout(guard);
          this._pending.delete(entry);
          resolve(result);
        },
        (err) => {
          if (this._pending.has(entry)) entry.reject(toZmqError(err));
        },
      );
    });
  }

  /**
   * A streaming WAMP CALL (option `receive_progress`) in `session`.  Its answers are taken from the
   * WebSocket before Autobahn sees them (Autobahn resolves a call's promise at its first progressive
   * RESULT, or throws on it with ES6 promises, autobahn-js #319): `sink.part` hears each RESULT
   * (`last` false for `progress: true`, true for the final one), `sink.error` the ERROR, a lost or
   * closed connection, or the client's guard: no RESULT within `guardMs` of the CALL or of the
   * previous part (the bridge measures its `timeout` the same way, to the first result and then
   * between results; when the guard fires the client cancels the call, mode `killnowait`).
   *
   * `cancel(mode)` sends CANCEL and nothing more reaches the sink; the parts still on their way and
   * the router's ERROR are dropped here (Autobahn would call them a protocol violation and drop the
   * connection).  Throws when `session` is no longer this link's.
   * @param {Session} session  from sessionFor()
   * @param {string} procedure
   * @param {unknown[]} args
   * @param {{timeout?: number}} callOptions  WAMP CALL options (`receive_progress` is added)
   * @param {number | null} guardMs
   * @param {StreamSink} sink
   * @returns {StreamControl}
   */
  stream(session, procedure, args, callOptions, guardMs, sink) {
    const conn = this._conn;
    if (session !== this.session || !conn) throw new ZmqError(ERRORS.DISCONNECTED, "the session is gone");
    const request = conn.newRequestId(session);
    /** "open": answers go to the sink; "canceling": CANCEL sent, the router's last answer awaited. */
    let state = /** @type {"open" | "canceling" | "ended"} */ ("open");
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let guard;
    /** @type {() => void} */
    let settle = () => {};
    /** @type {Promise<void>} */
    const ended = new Promise((resolve) => (settle = resolve));
    const end = () => {
      state = "ended";
      clearTimeout(guard);
      conn.unroute(request);
      this._pending.delete(entry);
      settle();
    };
    const entry = {
      /** @param {ZmqError} err  the connection is lost or closed */
      reject: (err) => {
        const open = state === "open";
        end();
        if (open) sink.error(err);
      },
    };
    /** @param {CancelMode} mode */
    const cancel = (mode) => {
      if (state !== "open") return ended;
      state = "canceling";
      clearTimeout(guard);
      try {
        conn.send([CANCEL, request, { mode }]);
      } catch {
        end(); // the connection is gone, and the call with it
      }
      return ended;
    };
    const arm = () => {
      if (guardMs === null) return;
      clearTimeout(guard);
      guard = setTimeout(() => {
        if (state !== "open") return;
        cancel("killnowait");
        sink.error(new ZmqError(ERRORS.CANCELED, `no reply from the bridge within ${callOptions.timeout} ms`));
      }, guardMs);
    };
    conn.route(request, (msg) => {
      const details = /** @type {{progress?: unknown} | null} */ (msg[0] === ERROR ? null : msg[2]);
      const last = details === null || !details || details.progress !== true;
      const open = state === "open";
      if (last) end();
      else if (open) arm();
      if (!open) return; // canceled: what was on its way is dropped
      if (msg[0] === ERROR) sink.error(wampError(msg[4], msg[5], msg[6]));
      else sink.part(Array.isArray(msg[3]) ? msg[3] : [], last);
    });
    this._pending.add(entry);
    try {
      conn.send([CALL, request, { ...callOptions, receive_progress: true }, procedure, args]);
    } catch (e) {
      end();
      throw toZmqError(e);
    }
    arm();
    return { cancel };
  }

  /**
   * A WAMP SUBSCRIBE in `session`; `handler(args, event)` hears each EVENT with its publication
   * id and all of its details (Autobahn's own handler sees only the detail keys WAMP defines, not
   * the bridge's `_epoch` and `_gap`).  Throws when `session` is no longer this link's.
   * @param {Session} session  from sessionFor() or a member's opened()
   * @param {string} topic
   * @param {Record<string, unknown>} options  WAMP SUBSCRIBE options
   * @param {(args: unknown[], event: EventInfo) => void} handler
   * @returns {Promise<Subscription>}
   */
  subscribe(session, topic, options, handler) {
    const conn = this._conn;
    if (session !== this.session || !conn) throw new ZmqError(ERRORS.DISCONNECTED, "the session is gone");
    return session.subscribe(
      topic,
      (args, _kwargs, event) =>
        handler(args || [], { publication: event ? event.publication : 0, details: conn.eventDetails || {} }),
      options,
    );
  }

  /**
   * Close the session (WAMP GOODBYE); resolves once the WebSocket is closed.  Sockets still on
   * the link hear `closed(error)`.
   * @param {ZmqError} [error]  what the sockets are told
   * @returns {Promise<void>}
   */
  close(error) {
    const members = [...this._members];
    this._members.clear();
    const told = error || new ZmqError(ERRORS.CLOSED, "the connection was closed by the application");
    for (const m of members) m.closed(told);
    if (this._closedPromise) return this._closedPromise;
    this.state = "closing";
    this.owner.retired(this);
    clearTimeout(this._retryTimer);
    clearTimeout(this._connectTimer);
    const closedError = new ZmqError(ERRORS.CLOSED, "the connection was closed by the application");
    for (const w of this._waiters) w.reject(closedError);
    this._waiters.clear();
    /** @type {Promise<void>} */
    const closed = new Promise((resolve) => {
      this._resolveClosed = resolve;
    });
    this._closedPromise = closed;
    const conn = this._conn;
    if (!conn) {
      this.state = "closed";
      this._resolveClosed?.();
    } else {
      try {
        conn.close("wamp.close.normal", "zmqwamp-client closed");
      } catch {
        this._closed(conn, "closed", { uri: null, message: "" });
      }
      // A bridge that never answers GOODBYE must not keep close() pending forever.
      const t = setTimeout(() => {
        if (this.state !== "closed") this._closed(conn, "closed", { uri: null, message: "" });
      }, 3000);
      closed.then(() => clearTimeout(t));
    }
    return closed;
  }

  // -- connection lifecycle ---------------------------------------------------------

  _connect() {
    const { url, realm, serializer, WebSocket, logger } = this.config;
    const creds = this.creds;
    const anonymous = creds.method === "anonymous";
    const conn = new WampConnection({
      url,
      realm,
      serializer: SERIALIZERS[serializer](),
      WebSocket,
      logger,
      authmethods: anonymous ? undefined : [creds.method],
      authid: anonymous ? undefined : creds.authid,
      onchallenge: anonymous ? undefined : answerChallenge(creds),
    });
    this._conn = conn;
    conn.onopen = (session, details) => this._opened(conn, session, details);
    conn.onclose = (reason, details) => this._closed(conn, reason, details);
    clearTimeout(this._connectTimer);
    this._connectTimer = setTimeout(() => {
      if (this._conn === conn && !this.session) this._abandon(conn);
    }, this.config.connectTimeout);
    conn.open();
  }

  /**
   * No session within connectTimeout: drop this attempt and count it as failed.  Not waiting for
   * the WebSocket's close event: some runtimes (Node 20's experimental WebSocket on a refused
   * connection) never fire one.
   * @param {WampConnection} conn
   */
  _abandon(conn) {
    try {
      conn.close();
    } catch {}
    this._closed(conn, "unreachable", { uri: null, message: `no session within ${this.config.connectTimeout} ms` });
  }

  /**
   * @param {WampConnection} conn
   * @param {Session} session
   * @param {import("autobahn").WelcomeDetails} details
   */
  _opened(conn, session, details) {
    if (conn !== this._conn) return;
    clearTimeout(this._connectTimer);
    if (this.state === "closing" || this.state === "closed") {
      conn.close();
      return;
    }
    const reconnected = this._everOpened;
    this._everOpened = true;
    this._attempt = 0;
    this.session = session;
    this.state = "open";
    this.error = null;
    const info = {
      session: /** @type {number} */ (session.id),
      authid: details.authid,
      authrole: details.authrole,
      authmethod: details.authmethod,
      realm: details.realm || this.config.realm,
      serializer: this.config.serializer,
      reconnected,
    };
    this.sessionInfo = info;
    for (const w of this._waiters) w.resolve(session);
    this._waiters.clear();
    for (const m of [...this._members]) m.opened(session);
    this.owner.open(info);
  }

  /**
   * @param {WampConnection} conn
   * @param {string} reason
   * @param {import("./wamp.js").WampClosed} details
   */
  _closed(conn, reason, details) {
    if (conn !== this._conn) return;
    clearTimeout(this._connectTimer);
    this._conn = null;
    const firstAttempt = this.state === "connecting";
    const wasOpen = this.session !== null;
    this.session = null;
    const { uri, message } = details;
    const lostError = new ZmqError(
      ERRORS.DISCONNECTED,
      `connection to ${this.config.url} ${wasOpen ? "lost" : "failed"} (${reason}${uri ? ": " + uri : ""}${message ? " " + message : ""})`,
    );
    const closing = this.state === "closing" || this.state === "closed";
    const pendingError = closing
      ? new ZmqError(ERRORS.CLOSED, "the connection was closed by the application")
      : lostError;
    for (const p of [...this._pending]) p.reject(pendingError);
    this._pending.clear();
    for (const m of [...this._members]) m.lost();

    if (closing) {
      this.state = "closed";
      this._resolveClosed?.();
      if (wasOpen) this.owner.close({ reason: "closed", uri, message, willRetry: false });
      return;
    }

    const policy = this.config.reconnect;
    let willRetry = true;
    let failure = lostError;
    if (uri && FATAL_REASONS.has(uri)) {
      willRetry = false;
      failure = new ZmqError(uri, message || uri);
    } else if (!policy || this._attempt >= policy.maxRetries) {
      willRetry = false;
    }
    const delay = willRetry && policy ? this._nextDelay(policy) : null;
    // Requests queued during the first connect fail now: nothing hangs on a dead link.
    for (const w of this._waiters) w.reject(failure);
    this._waiters.clear();

    if (delay !== null) {
      this.state = "reconnecting";
      this.error = failure;
      this._retryTimer = setTimeout(() => {
        this._retryTimer = undefined;
        if (this.state === "reconnecting") this._connect();
      }, delay * 1000);
    } else {
      this.state = "failed";
      this.error = failure;
      this.owner.retired(this);
      for (const m of [...this._members]) m.failed(failure);
    }
    // "close" when a session ends, when the first connect fails, and when giving up; not
    // for every failed retry in between.
    if (wasOpen || firstAttempt || !willRetry) {
      this.owner.close({ reason, uri, message, willRetry, delay });
    }
    if (!willRetry) this.owner.error(failure);
  }

  /** @param {ReconnectPolicy} policy */
  _nextDelay(policy) {
    const base = Math.min(policy.maxDelay, policy.initialDelay * Math.pow(policy.growth, this._attempt));
    this._attempt += 1;
    const jitter = 1 + policy.jitter * (Math.random() * 2 - 1);
    return Math.max(0.01, base * jitter);
  }
}
