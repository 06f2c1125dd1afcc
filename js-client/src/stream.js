// @ts-check
// ReplyStream: the replies to one request of a DEALER socket, as they arrive (WAMP progressive call
// results).  Its parts go either to the callback given to `dealer.send()` or, for `dealer.stream()`,
// to whoever iterates it (`for await`).  States: open -> done (the final RESULT) | failed (an ERROR,
// the connection lost or closed, the socket closed, a timeout) | canceled (`cancel()`, or a `for
// await` left early).  Once it has left "open", nothing of the stream reaches the application.

import { ERRORS, ZmqError, toZmqError } from "./errors.js";
import { replyValue } from "./frames.js";

/** @typedef {import("zmqwamp-client").Frame} Frame */
/** @typedef {import("zmqwamp-client").PartInfo} PartInfo */
/** @typedef {import("zmqwamp-client").CancelMode} CancelMode */
/** @typedef {import("zmqwamp-client").StreamState} StreamState */
/** @typedef {import("./link.js").StreamSink} StreamSink */
/** @typedef {import("./link.js").StreamControl} StreamControl */
/** @typedef {(part: any, info: PartInfo) => void} PartCallback */
/** @typedef {(error: ZmqError) => void} Errback */

const CANCEL_MODES = new Set(["skip", "kill", "killnowait"]);

/** What `cancel()` does without a mode, and a `for await` left early: tell the service, end at once. */
export const DEFAULT_CANCEL_MODE = "killnowait";

/**
 * How a stream reaches the application, from its socket.
 * @typedef {object} StreamDelivery
 * @property {PartCallback | null | undefined} callback  `send()`'s callback; undefined: the stream is iterated
 * @property {Errback | null} errback  `send()`'s errback
 * @property {(error: ZmqError) => void} report  errors with nowhere else to go (the context's "error")
 * @property {boolean} multipart  parts are always arrays of frames
 * @property {() => void} ended  the stream has left "open" (the socket forgets it)
 */

export class ReplyStream {
  /**
   * Made by a DEALER socket's `send()` and `stream()`.
   * @param {string} endpoint
   * @param {StreamDelivery} delivery
   */
  constructor(endpoint, delivery) {
    /** The endpoint the request went to. */
    this.endpoint = endpoint;
    /** @type {StreamState} */
    this.state = "open";
    /** Parts received so far. */
    this.parts = 0;
    /** Why the stream failed (state "failed"), else null. @type {ZmqError | null} */
    this.error = null;
    this._delivery = delivery;
    /** The CALL in flight, once sent. @type {StreamControl | null} */
    this._control = null;
    /** Resolves once the router has answered a CANCEL. @type {Promise<void>} */
    this._canceled = Promise.resolve();
    // Iteration: parts not read yet, next() calls waiting for one, whether the error was thrown yet.
    /** @type {any[]} */
    this._queue = [];
    /** @type {{resolve: (r: IteratorResult<any, undefined>) => void, reject: (e: ZmqError) => void}[]} */
    this._waiting = [];
    this._iterated = false;
    this._errorThrown = false;
    /** The sink the Link hands the CALL's answers to. @type {StreamSink} */
    this._sink = {
      part: (args, last) => this._part(/** @type {Frame[]} */ (args), last),
      error: (error) => this._fail(error),
    };
  }

  /**
   * End the stream now: nothing of it reaches the application any more (parts already received but
   * not yet read by a `for await` are dropped too).  `mode` is the WAMP CANCEL mode: `"killnowait"`
   * (default: the service is told to stop where the bridge can tell it), `"kill"` (the same, and the
   * bridge answers once the service has stopped) or `"skip"` (the service is not told; the bridge
   * drops its replies).  Resolves once the bridge has answered the CANCEL (or the connection is
   * gone; at once if the request was not sent yet); never rejects.  No effect on an ended stream.
   * @param {CancelMode} [mode]
   * @returns {Promise<void>}
   */
  cancel(mode = DEFAULT_CANCEL_MODE) {
    if (!CANCEL_MODES.has(mode)) throw new TypeError(`cancel mode must be "skip", "kill" or "killnowait", not ${mode}`);
    if (this.state !== "open") return this._canceled;
    this._queue.length = 0;
    if (this._control) this._canceled = this._control.cancel(mode);
    this._end("canceled", null);
    return this._canceled;
  }

  /**
   * The parts, for `for await (const part of dealer.stream(msg))`: each part's value (the one frame,
   * or the array of frames), until the final one; throws the stream's ZmqError if it fails; leaving
   * the loop early (break, return, an exception) cancels the stream (mode `killnowait`).  One
   * iteration per stream, and only for `stream()` (the parts of `send()` go to its callback).
   * @returns {AsyncIterator<any, undefined>}
   */
  [Symbol.asyncIterator]() {
    if (this._delivery.callback !== undefined) {
      throw new TypeError("the parts of dealer.send() go to its callback: iterate dealer.stream() instead");
    }
    if (this._iterated) throw new TypeError("a stream can be iterated once");
    this._iterated = true;
    return {
      next: () => this._next(),
      return: () => {
        if (this.state === "open") this.cancel().catch(() => {});
        this._queue.length = 0;
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }

  /** @returns {Promise<IteratorResult<any, undefined>>} */
  _next() {
    if (this._queue.length) return Promise.resolve({ value: this._queue.shift(), done: false });
    if (this.state === "open") return new Promise((resolve, reject) => this._waiting.push({ resolve, reject }));
    if (this.state === "failed" && this.error && !this._errorThrown) {
      this._errorThrown = true;
      return Promise.reject(this.error);
    }
    return Promise.resolve({ value: undefined, done: true });
  }

  /**
   * The request is on its way (the Link's CALL).  If the stream ended meanwhile (canceled or closed
   * while waiting for the session), the CALL is canceled at once.
   * @param {StreamControl} control
   */
  _attach(control) {
    if (this.state === "open") this._control = control;
    else this._canceled = control.cancel(DEFAULT_CANCEL_MODE);
  }

  /**
   * One RESULT's frames; `last` for the final RESULT (which may carry none: then it only ends the stream).
   * @param {Frame[]} frames
   * @param {boolean} last
   */
  _part(frames, last) {
    if (this.state !== "open") return;
    if (last) this._end("done", null);
    if (last && frames.length === 0) {
      this._deliver(undefined, { last, frames }, false);
      return;
    }
    this.parts += 1;
    this._deliver(replyValue(frames, this._delivery.multipart), { last, frames }, true);
  }

  /**
   * @param {any} value
   * @param {PartInfo} info
   * @param {boolean} isPart  false: the final RESULT had no arguments (only a callback hears of it)
   */
  _deliver(value, info, isPart) {
    const { callback } = this._delivery;
    if (callback !== undefined) {
      if (!callback) return;
      try {
        callback(value, info);
      } catch (e) {
        this._delivery.report(toZmqError(e));
      }
      return;
    }
    if (isPart) {
      const waiter = this._waiting.shift();
      if (waiter) waiter.resolve({ value, done: false });
      else this._queue.push(value);
    }
    if (info.last) this._settleWaiting();
  }

  /**
   * The stream failed (its ERROR, the connection, a timeout, the socket or context closed).
   * @param {ZmqError} error
   */
  _fail(error) {
    if (this.state !== "open") return;
    let err = error;
    if (error.uri === ERRORS.DISCONNECTED && this._control) {
      err = new ZmqError(
        error.uri,
        `${error.message}; the stream ended after ${this.parts} part(s) and is not resumed ` +
          "(send the request again if it is safe to repeat)",
      );
    }
    this._end("failed", err);
    const { callback, errback } = this._delivery;
    if (callback !== undefined) {
      if (errback) errback(err);
      else this._delivery.report(err);
    }
  }

  /**
   * Close the stream with the socket: cancel the CALL if it is out, and fail with `error`.
   * @param {ZmqError} error
   */
  _abort(error) {
    if (this.state !== "open") return;
    if (this._control) this._canceled = this._control.cancel(DEFAULT_CANCEL_MODE);
    this._fail(error);
  }

  /**
   * @param {StreamState} state
   * @param {ZmqError | null} error
   */
  _end(state, error) {
    this.state = state;
    this.error = error;
    this._delivery.ended();
    // Only waiting next() calls are settled here; a final part is handed over first (_deliver).
    if (state !== "done") this._settleWaiting();
  }

  /** next() calls waiting with nothing to read: the end, or the error (once). */
  _settleWaiting() {
    const waiting = this._waiting.splice(0);
    for (const w of waiting) {
      if (this.state === "failed" && this.error && !this._errorThrown) {
        this._errorThrown = true;
        w.reject(this.error);
      } else {
        w.resolve({ value: undefined, done: true });
      }
    }
  }
}

/** The error a stream of a closed socket fails with. */
export function socketClosed() {
  return new ZmqError(ERRORS.CLOSED, "the socket is closed");
}
