// Logging in with the stock Autobahn JS clients (26.x and 22.11.x): WAMP ticket
// and WAMP-CRA, plain (a memory: checker) and salted (a zmqwamp-users file),
// against real `twistd -n zmqwamp --auth ...` processes.  See docs/auth.md.
//
// Both lines run in this one process on the same global WebSocket (Node's
// built-in with --experimental-websocket or Node 22+, else `ws`), which is the
// browser code path of both; their Node-only transports are covered by
// autobahn22.test.mjs / autobahn26.test.mjs.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { REALM, findCommand, startBridge, startRep, stopAll, withTimeout } from './harness.mjs';

const require = createRequire(import.meta.url);
if (typeof globalThis.WebSocket !== 'function') globalThis.WebSocket = require('ws');
const LINES = { autobahn26: require('autobahn26'), autobahn22: require('autobahn22') };
for (const autobahn of Object.values(LINES)) autobahn.log.warn = () => {};

const CAROL = 'carol-plain-secret'; // memory: checker, plain secret
const DORA = 'dora-salted-secret'; // zmqwamp-users file, PBKDF2-derived key
const MS = 15000;

/** An onchallenge that answers like a web page would: the ticket, or the WAMP-CRA signature (salted if asked). */
function answer(autobahn, secret, sent) {
  return (session, method, extra) => {
    let signature = secret;
    if (method === 'wampcra') {
      const key = extra.salt ? autobahn.auth_cra.derive_key(secret, extra.salt, extra.iterations, extra.keylen) : secret;
      signature = autobahn.auth_cra.sign(key, extra.challenge);
    }
    sent.push(signature);
    return signature;
  };
}

/** Open a session with credentials: resolves {session, details} or rejects with {reason, message} from ABORT. */
function login(autobahn, url, method, authid, secret, sent) {
  const connection = new autobahn.Connection({
    url,
    realm: REALM,
    authmethods: [method],
    authid,
    onchallenge: answer(autobahn, secret, sent),
    max_retries: 0,
    retry_if_unreachable: false,
  });
  const result = new Promise((resolve, reject) => {
    connection.onopen = (session, details) => resolve({ connection, session, details });
    connection.onclose = (reason, details) => {
      reject(Object.assign(new Error(`closed: ${reason} ${JSON.stringify(details)}`), { reason: details.reason, message: details.message }));
      return true; // no retry
    };
  });
  connection.open();
  return withTimeout(result, MS, `${method} login of ${authid}`);
}

function close({ connection }) {
  return new Promise((resolve) => {
    connection.onclose = () => { resolve(); return true; };
    connection.close();
  });
}

describe('zmqwamp login with autobahn-js: ticket and wampcra', () => {
  const env = { sent: [] };

  before(async () => {
    env.dir = mkdtempSync(path.join(os.tmpdir(), 'zmqwamp-auth-'));
    env.users = path.join(env.dir, 'users');
    execFileSync(findCommand('python'), ['-m', 'zmqwamp.users', 'add', env.users, 'dora', '--role', 'staff', '--password-stdin'],
      { input: `${DORA}\n` });
    env.config = path.join(env.dir, 'zmqwamp.toml');
    writeFileSync(env.config, 'login_penalty_max = 0.0  # the tests fail logins on purpose, all from 127.0.0.1\n');
    env.rep = await startRep();
    const common = { allow: [env.rep.address], anonymous: false };
    [env.plain, env.salted] = await Promise.all([
      startBridge({ ...common, extra: ['--config', env.config, '--auth', `memory:carol:${CAROL}`] }),
      startBridge({ ...common, extra: ['--config', env.config, '--auth', `zmqwamp-users:${env.users}`] }),
    ]);
  }, { timeout: 30000 });

  after(async () => {
    await stopAll();
    // nothing a client sent to prove its identity, nor any password, is in a bridge log
    for (const bridge of [env.plain, env.salted]) {
      if (!bridge) continue;
      for (const secret of [CAROL, DORA, ...env.sent]) {
        assert.ok(!bridge.proc.output.includes(secret), `a secret appears in the bridge log: ${secret.slice(0, 4)}...`);
      }
    }
    rmSync(env.dir, { recursive: true, force: true });
  }, { timeout: 30000 });

  for (const [name, autobahn] of Object.entries(LINES)) {
    describe(`${name} (autobahn ${autobahn.version})`, () => {
      const cases = [
        { method: 'ticket', bridge: 'plain', authid: 'carol', secret: CAROL, role: 'user', provider: 'memory' },
        { method: 'wampcra', bridge: 'plain', authid: 'carol', secret: CAROL, role: 'user', provider: 'memory' },
        { method: 'ticket', bridge: 'salted', authid: 'dora', secret: DORA, role: 'staff', provider: 'zmqwamp-users' },
        { method: 'wampcra', bridge: 'salted', authid: 'dora', secret: DORA, role: 'staff', provider: 'zmqwamp-users' },
      ];
      for (const c of cases) {
        test(`${c.method} against ${c.provider}: accepted, WELCOME details, call works`, async () => {
          const s = await login(autobahn, env[c.bridge].url, c.method, c.authid, c.secret, env.sent);
          const d = s.details;
          assert.deepEqual([d.authid, d.authrole, d.authmethod, d.authprovider], [c.authid, c.role, c.method, c.provider]);
          assert.equal(await withTimeout(s.session.call(env.rep.address, ['hi']), MS, 'call'), 'got this hi');
          await close(s);
        });

        test(`${c.method} against ${c.provider}: wrong secret and unknown authid get the same ABORT`, async () => {
          for (const [authid, secret] of [[c.authid, 'not-the-secret'], ['nobody', c.secret]]) {
            await assert.rejects(login(autobahn, env[c.bridge].url, c.method, authid, secret, env.sent), (err) => {
              assert.equal(err.reason, 'wamp.error.not_authorized');
              assert.equal(err.message, 'authentication failed');
              return true;
            });
          }
        });
      }

      test('the salted CHALLENGE carries salt, iterations and keylen', async () => {
        let seen;
        const sent = [];
        const probe = (session, method, extra) => { seen = extra; return answer(autobahn, DORA, sent)(session, method, extra); };
        const connection = new autobahn.Connection({
          url: env.salted.url, realm: REALM, authmethods: ['wampcra'], authid: 'dora', onchallenge: probe, max_retries: 0,
        });
        const opened = new Promise((resolve) => { connection.onopen = resolve; });
        connection.open();
        await withTimeout(opened, MS, 'salted wampcra login');
        env.sent.push(...sent);
        assert.equal(typeof seen.salt, 'string');
        assert.equal(seen.iterations, 100000);
        assert.equal(seen.keylen, 32);
        await close({ connection });
      });
    });
  }
});
