// @ts-check
// Messages <-> WAMP arguments, one argument per ZeroMQ frame (the bridge's codec turns each into a frame
// and back; README "Codec rules").  Shared by every socket kind.

import { ERRORS, ZmqError } from "./errors.js";
import { asBytes } from "./serializers.js";

/** @typedef {import("zmqwamp-client").Frame} Frame */
/** @typedef {import("zmqwamp-client").Sendable} Sendable */

/**
 * One WAMP argument per frame: bytes of any kind become a Uint8Array, the rest is left as is.
 * @param {unknown} value
 */
export function toArg(value) {
  const bytes = asBytes(value);
  if (bytes) return bytes;
  if (typeof Blob !== "undefined" && value instanceof Blob) {
    throw new ZmqError(ERRORS.INVALID_ARGUMENT, "a Blob cannot be sent: read it into an ArrayBuffer first");
  }
  return value;
}

/**
 * The WAMP arguments of a message: one frame, or with `multipart` one per element of a non-empty array.
 * @param {Sendable | Sendable[]} msg
 * @param {boolean} multipart
 * @returns {unknown[]}
 */
export function frameArgs(msg, multipart) {
  if (!multipart) return [toArg(msg)];
  if (!Array.isArray(msg) || msg.length === 0) {
    throw new ZmqError(ERRORS.INVALID_ARGUMENT, "a multipart request is a non-empty array of frames");
  }
  return msg.map(toArg);
}

/**
 * What the application gets for a reply's frames: the one frame's value, else (and always with
 * `multipart`) the array of frames.
 * @param {Frame[]} frames
 * @param {boolean} multipart
 * @returns {any}
 */
export function replyValue(frames, multipart) {
  return multipart || frames.length !== 1 ? frames : frames[0];
}
