// @ts-check
// WAMP serializers for the stock Autobahn client, with one byte convention everywhere:
// a byte string is a Uint8Array in JavaScript and a byte string on the wire.
//
// * json:    Autobahn's own JSONSerializer, given a replacer/reviver that apply the WAMP
//            JSON binary convention (a byte string travels as "\u0000" + base64), which the
//            zmqwamp bridge (autobahn-python) speaks too.
// * msgpack: @msgpack/msgpack (bin <-> Uint8Array), no Node built-ins needed.
// * cbor:    cborg (major type 2 <-> Uint8Array, never the typed-array tag 64).
//
// Autobahn's own msgpack5/cbor serializers need Node streams and Buffer; these do not,
// so the browser bundle stays small and behaves exactly like Node.

import autobahn from "autobahn";
import { encode as msgpackEncode, decode as msgpackDecode } from "@msgpack/msgpack";
import * as cborg from "cborg";

/**
 * Bytes of an ArrayBuffer or any ArrayBuffer view, as a Uint8Array (no copy); else null.
 * @param {unknown} value
 * @returns {Uint8Array | null}
 */
export function asBytes(value) {
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  return null;
}

/** @param {Uint8Array} bytes */
export function bytesToBase64(bytes) {
  let binary = "";
  const chunk = 0x8000;
  for (let i = 0; i < bytes.length; i += chunk) {
    binary += String.fromCharCode.apply(null, /** @type {any} */ (bytes.subarray(i, i + chunk)));
  }
  return btoa(binary);
}

/** @param {string} text */
export function base64ToBytes(text) {
  const binary = atob(text);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

/**
 * @this {any}
 * @param {string} key
 * @param {unknown} value
 */
function jsonReplacer(key, value) {
  // `this[key]` is the raw value: Node's Buffer has a toJSON() that `value` already went through.
  const bytes = asBytes(this[key]);
  return bytes ? "\u0000" + bytesToBase64(bytes) : value;
}

/**
 * @param {string} key
 * @param {unknown} value
 */
function jsonReviver(key, value) {
  if (typeof value === "string" && value.charCodeAt(0) === 0) {
    try {
      return base64ToBytes(value.slice(1));
    } catch {
      return value;
    }
  }
  return value;
}

/** @returns {autobahn.Serializer} */
export function jsonSerializer() {
  return new autobahn.serializer.JSONSerializer(jsonReplacer, jsonReviver);
}

/** @implements {autobahn.Serializer} */
export class MsgpackSerializer {
  constructor() {
    this.SERIALIZER_ID = "msgpack";
    this.BINARY = true;
  }
  /** @param {unknown} obj */
  serialize(obj) {
    return msgpackEncode(obj, { ignoreUndefined: true });
  }
  /** @param {unknown} payload */
  unserialize(payload) {
    return msgpackDecode(/** @type {ArrayLike<number>} */ (asBytes(payload) || payload));
  }
}

// cborg refuses `undefined` inside maps by default and would emit CBOR "undefined" in arrays,
// which the bridge's cbor2 does not turn into null: drop undefined keys, make array holes null.
/**
 * @param {unknown} value
 * @returns {unknown}
 */
function cborClean(value) {
  if (value === undefined) return null;
  if (value === null || typeof value !== "object") return value;
  const bytes = asBytes(value);
  if (bytes) return bytes;
  if (Array.isArray(value)) return value.map(cborClean);
  /** @type {Record<string, unknown>} */
  const out = {};
  for (const [k, v] of Object.entries(value)) {
    if (v !== undefined) out[k] = cborClean(v);
  }
  return out;
}

/** @implements {autobahn.Serializer} */
export class CborSerializer {
  constructor() {
    this.SERIALIZER_ID = "cbor";
    this.BINARY = true;
  }
  /** @param {unknown} obj */
  serialize(obj) {
    return cborg.encode(cborClean(obj));
  }
  /** @param {unknown} payload */
  unserialize(payload) {
    return cborg.decode(/** @type {Uint8Array} */ (asBytes(payload) || payload), { useMaps: false });
  }
}

/** The serializers a context may name, each a factory of a fresh instance. */
export const SERIALIZERS = {
  json: jsonSerializer,
  msgpack: () => new MsgpackSerializer(),
  cbor: () => new CborSerializer(),
};
