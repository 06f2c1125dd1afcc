// @ts-check
// Socket options -> WAMP authentication: the HELLO's authmethods/authid and the CHALLENGE answer.

import autobahn from "autobahn";

/**
 * @typedef {object} Creds
 * @property {"anonymous" | "ticket" | "wampcra"} method
 * @property {string | undefined} authid
 * @property {string | undefined} secret
 * @property {string} key  equal keys share one WAMP session
 */

/**
 * @param {Record<string, unknown> | undefined} options  a socket's options (username, password, token, secret, method)
 * @returns {Creds}
 */
export function credentialsOf(options) {
  const o = options || {};
  const method =
    o.method ||
    (o.secret !== undefined ? "wampcra" : o.token !== undefined || o.password !== undefined ? "ticket" : "anonymous");
  if (method === "anonymous") {
    return { method, authid: undefined, secret: undefined, key: "anonymous" };
  }
  if (method === "ticket") {
    const secret = o.token !== undefined ? o.token : o.password;
    if (typeof secret !== "string") throw new TypeError("ticket login needs {username, password} or {token}");
    if (o.token === undefined && typeof o.username !== "string") throw new TypeError("a password needs a username");
    const authid = /** @type {string | undefined} */ (o.username);
    return { method, authid, secret, key: JSON.stringify([method, o.username ?? null, secret]) };
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

/**
 * The `onchallenge` handler for these credentials.
 * @param {Creds} creds
 * @returns {(session: autobahn.Session, method: string, extra: autobahn.ChallengeExtra) => string}
 */
export function answerChallenge(creds) {
  return function onchallenge(_session, method, extra) {
    if (method !== creds.method) {
      throw new Error(`the bridge asked for ${method}, this socket logs in with ${creds.method}`);
    }
    const secret = /** @type {string} */ (creds.secret);
    if (method === "ticket") return secret;
    let key = secret;
    if (extra && extra.salt) {
      key = autobahn.auth_cra.derive_key(secret, extra.salt, extra.iterations, extra.keylen);
    }
    return autobahn.auth_cra.sign(key, extra.challenge);
  };
}
