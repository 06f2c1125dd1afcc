// @ts-check
// One attempt at a WAMP session over one WebSocket.  It does what autobahn.Connection does for a
// single try (open the WebSocket, join the realm, answer the challenge, say why it closed) and
// nothing else: no retry loop (Link reconnects by its own policy), no console warnings on every
// close, and the WebSocket class is the one it is given, never a global it would have to replace.
// The WAMP protocol itself stays Autobahn's: autobahn.Session drives this transport exactly as it
// drives Autobahn's own (lib/transport/websocket.js).

import autobahn from "autobahn";
import { ERRORS, ZmqError } from "./errors.js";

/** @typedef {import("zmqwamp-client").Logger} Logger */
/** @typedef {import("zmqwamp-client").WebSocketClass} WebSocketClass */

/**
 * The WHATWG WebSocket API as the client uses it (browsers, Node 22's global, the `ws` package).
 * @typedef {object} WebSocketLike
 * @property {string} binaryType
 * @property {string} protocol
 * @property {((event: {data: unknown}) => void) | null} onmessage
 * @property {(() => void) | null} onopen
 * @property {((event: {code: number, reason: string, wasClean: boolean}) => void) | null} onclose
 * @property {(() => void) | null} onerror
 * @property {(data: string | Uint8Array) => void} send
 * @property {(code?: number, reason?: string) => void} close
 */

/**
 * @typedef {object} WampOptions
 * @property {string} url
 * @property {string} realm
 * @property {autobahn.Serializer} serializer
 * @property {WebSocketClass} WebSocket
 * @property {Logger} logger
 * @property {string[]} [authmethods]
 * @property {string} [authid]
 * @property {autobahn.OnChallenge} [onchallenge]
 */

/**
 * Why a connection ended.  `reason` as Autobahn says it: "unreachable" (the WebSocket never
 * opened), "lost" (not a clean close), "closed", or "unsupported" (no WebSocket could be made).
 * @typedef {object} WampClosed
 * @property {string | null} uri  the WAMP reason of the ABORT or GOODBYE, if there was one
 * @property {string} message
 */

const defer = autobahn.util.deferred_factory({ use_es6_promises: true });
const EVENT = 36; // [EVENT, Subscription|id, Publication|id, Details|dict, Arguments|list, ...]
const ERROR = 8; // [ERROR, CALL, CALL.Request|id, Details|dict, Error|uri, Arguments|list, ...]
const CALL = 48;
const RESULT = 50; // [RESULT, CALL.Request|id, Details|dict, Arguments|list, ...]

/**
 * The answers to one CALL this connection takes from Autobahn: each RESULT and the ERROR.
 * @typedef {(msg: unknown[]) => void} CallRoute
 */

export class WampConnection {
  /** @param {WampOptions} options */
  constructor(options) {
    this.options = options;
    /** Called once the session joined the realm. @type {(session: autobahn.Session, details: autobahn.WelcomeDetails) => void} */
    this.onopen = () => {};
    /** Called once when the WebSocket is gone, whatever the reason. @type {(reason: string, details: WampClosed) => void} */
    this.onclose = () => {};
    /** @type {WebSocketLike | null} */
    this._ws = null;
    /** @type {autobahn.Session | null} */
    this._session = null;
    this._leave = { uri: /** @type {string | null} */ (null), message: "" };
    this._ended = false;
    /**
     * The details of the EVENT Autobahn is dispatching right now, else null.  Autobahn hands an
     * event handler only the detail keys WAMP defines; the bridge's own (`_epoch`, `_gap`) are
     * read here.  Autobahn dispatches synchronously, so a handler reading this sees its EVENT's.
     * @type {Record<string, unknown> | null}
     */
    this.eventDetails = null;
    /**
     * CALLs whose answers this connection hands to their route instead of Autobahn (streams: Autobahn
     * would resolve the call's promise at the first progressive RESULT, or throw on it, autobahn-js
     * #319; and after a CANCEL it treats the RESULTs still on their way as a protocol violation).
     * @type {Map<number, CallRoute>}
     */
    this._routes = new Map();
    /** @type {autobahn.Transport | null} */
    this._transport = null;
  }

  /**
   * A request id from the session's own sequence (so ids never collide with Autobahn's requests).
   * @param {autobahn.Session} session
   */
  newRequestId(session) {
    return session._new_request_id();
  }

  /**
   * Send a WAMP message the session does not know about (a streaming CALL, its CANCEL).  Throws when
   * the WebSocket is gone or the serializer cannot carry a value.
   * @param {unknown[]} msg
   */
  send(msg) {
    if (!this._transport || this._ended) throw new ZmqError(ERRORS.DISCONNECTED, "the connection is closed");
    this._transport.send(msg);
  }

  /**
   * Hand the RESULTs and the ERROR of CALL `request` to `route` (until unroute) instead of Autobahn.
   * @param {number} request
   * @param {CallRoute} route
   */
  route(request, route) {
    this._routes.set(request, route);
  }

  /** @param {number} request */
  unroute(request) {
    this._routes.delete(request);
  }

  /**
   * The route of an incoming message, if it answers a routed CALL.
   * @param {unknown} msg
   * @returns {CallRoute | undefined}
   */
  _routeOf(msg) {
    if (!Array.isArray(msg) || this._routes.size === 0) return undefined;
    if (msg[0] === RESULT) return this._routes.get(msg[1]);
    if (msg[0] === ERROR && msg[1] === CALL) return this._routes.get(msg[2]);
    return undefined;
  }

  open() {
    const { url, realm, serializer, logger } = this.options;
    const WebSocketClass = /** @type {new (url: string, protocols: string[]) => WebSocketLike} */ (
      this.options.WebSocket
    );
    /** @type {WebSocketLike} */
    let ws;
    try {
      ws = new WebSocketClass(url, [`wamp.2.${serializer.SERIALIZER_ID}`]);
    } catch (e) {
      logger.error(`zmqwamp-client: could not open a WebSocket to ${url}:`, e);
      this._end("unsupported", { uri: null, message: String(e) });
      return;
    }
    this._ws = ws;
    ws.binaryType = "arraybuffer";
    // Every error is followed by a close event, which is what counts.  The `ws` package's
    // WebSocket is an EventEmitter: an "error" (a refused connection) without a listener
    // would be thrown as an uncaught exception.
    ws.onerror = () => {};

    /** @type {autobahn.Transport} */
    const transport = {
      protocol: undefined,
      serializer,
      info: { type: "websocket", url, protocol: null },
      onmessage() {}, // set by the Session
      onopen() {},
      onclose() {},
      // Synchronous (the serializers are), so that messages leave in the order they are made, and a
      // message sent just before the WebSocket is closed leaves before the close: the GOODBYE that
      // answers the bridge's GOODBYE is sent from the same onmessage that then closes (onleave below).
      // An `async` send (as Autobahn's own transport has) queued it behind ws.close(): the bridge never
      // got it, and browsers logged "WebSocket is already in CLOSING or CLOSED state" for it.  A value
      // the serializer cannot carry now throws to the caller (session.call, publish) instead of
      // becoming an unhandled rejection.
      send(msg) {
        /** @type {string | Uint8Array} */
        let data;
        try {
          data = serializer.serialize(msg);
        } catch (e) {
          const why = e instanceof Error ? e.message : String(e);
          throw new ZmqError(
            ERRORS.INVALID_ARGUMENT,
            `the ${serializer.SERIALIZER_ID} serializer cannot carry it: ${why}`,
          );
        }
        ws.send(data);
      },
      close(code, reason) {
        ws.close(code, reason);
      },
    };
    const session = new autobahn.Session(
      transport,
      defer,
      this.options.onchallenge,
      (error, message) => logger.error(message || "zmqwamp-client: exception in a handler:", error),
      (error, message) => logger.error(message || "zmqwamp-client: WAMP protocol error:", error),
    );
    this._session = session;

    let opened = false;
    this._transport = transport;
    ws.onmessage = (event) => {
      const msg = /** @type {unknown[]} */ (serializer.unserialize(event.data));
      const route = this._routeOf(msg);
      if (route) {
        try {
          route(msg);
        } catch (e) {
          logger.error("zmqwamp-client: exception in a stream handler:", e);
        }
        return;
      }
      const details = Array.isArray(msg) && msg[0] === EVENT ? msg[3] : null;
      this.eventDetails = details !== null && typeof details === "object" ? /** @type {any} */ (details) : null;
      try {
        transport.onmessage(msg);
      } finally {
        this.eventDetails = null;
      }
    };
    ws.onopen = () => {
      opened = true;
      transport.protocol = ws.protocol;
      transport.info.protocol = ws.protocol;
      session.join(realm, this.options.authmethods, this.options.authid);
    };
    session.onjoin = (details) => {
      try {
        this.onopen(session, details);
      } catch (e) {
        logger.error("zmqwamp-client: exception while opening a session:", e);
      }
    };
    // ABORT before the session opened, or GOODBYE after: remember why, then close the WebSocket.  A GOODBYE
    // from the bridge has been answered already: Autobahn sends the answer before it calls onleave, and
    // the transport's send writes it to the WebSocket at once, so it leaves before the close frame.
    session.onleave = (reason, details) => {
      this._leave = { uri: reason, message: (details && details.message) || "" };
      ws.close();
    };
    ws.onclose = (event) => {
      const reason = !opened ? "unreachable" : !event.wasClean ? "lost" : "closed";
      this._end(reason, this._leave);
    };
  }

  /** Leave the session (GOODBYE) if it is open, else drop the WebSocket.  The close event follows. */
  close(reason = "wamp.close.normal", message = "") {
    if (this._session && this._session.isOpen && !this._ended) {
      this._session.leave(reason, message || undefined);
    } else if (this._ws && !this._ended) {
      this._ws.close();
    }
  }

  /**
   * @param {string} reason
   * @param {WampClosed} details
   */
  _end(reason, details) {
    if (this._ended) return;
    this._ended = true;
    this._routes.clear();
    this.onclose(reason, details);
  }
}
