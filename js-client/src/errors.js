// @ts-check
// Every failure the client hands to the application is a ZmqError carrying a WAMP error URI.

import autobahn from "autobahn";

/** Error URIs the client raises itself (the bridge's errors keep the bridge's URI). */
export const ERRORS = Object.freeze({
  DISCONNECTED: /** @type {const} */ ("zmqwamp.error.disconnected"),
  CLOSED: /** @type {const} */ ("zmqwamp.error.closed"),
  CANCELED: /** @type {const} */ ("wamp.error.canceled"),
  INVALID_ARGUMENT: /** @type {const} */ ("wamp.error.invalid_argument"),
});

/** An error with the WAMP error URI (`uri`, also `error`) and the bridge's message. */
export class ZmqError extends Error {
  /**
   * @param {string} uri
   * @param {string} [message]
   * @param {{args?: unknown[], kwargs?: Record<string, unknown>}} [details]
   */
  constructor(uri, message, details = {}) {
    super(message || uri);
    this.name = "ZmqError";
    /** The WAMP error URI. */
    this.uri = uri;
    /** Same as `uri` (Autobahn's name for it). */
    this.error = uri;
    this.args = details.args || [];
    this.kwargs = details.kwargs || {};
  }
}

/**
 * Anything thrown or rejected on the way (an Autobahn error, a string, an Error) as a ZmqError.
 * @param {unknown} err
 * @returns {ZmqError}
 */
export function toZmqError(err) {
  if (err instanceof ZmqError) return err;
  if (err instanceof autobahn.Error) {
    const first = err.args && err.args.length ? err.args[0] : undefined;
    return new ZmqError(err.error, typeof first === "string" ? first : err.error, err);
  }
  if (typeof err === "string") return new ZmqError("zmqwamp.error.client", err);
  const message = err instanceof Error ? err.message : "";
  const wrapped = new ZmqError("zmqwamp.error.client", message || String(err));
  wrapped.cause = err;
  return wrapped;
}

/**
 * The ERROR a WAMP peer sent (its error URI, arguments and keyword arguments) as a ZmqError: the message
 * is the first argument when it is a string (the bridge puts its explanation there), else the URI.
 * @param {unknown} uri
 * @param {unknown} [args]
 * @param {unknown} [kwargs]
 * @returns {ZmqError}
 */
export function wampError(uri, args, kwargs) {
  const list = Array.isArray(args) ? args : [];
  const text = String(uri);
  return new ZmqError(text, typeof list[0] === "string" ? list[0] : text, {
    args: list,
    kwargs: kwargs !== null && typeof kwargs === "object" ? /** @type {Record<string, unknown>} */ (kwargs) : {},
  });
}
