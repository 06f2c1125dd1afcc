// Subscription revocation with the stock Autobahn JS clients (26.x and 22.11.x):
// a SIGHUP that removes a user's rule revokes that user's open subscriptions
// (WAMP UNSUBSCRIBED with request 0).  Autobahn JS resolves the subscription's
// on_unsubscribe promise with the reason and keeps the session; no EVENT for
// the subscription follows.  See docs/auth.md.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { REALM, sleep, startBridge, startPub, startRep, stopAll, withTimeout } from './harness.mjs';

const require = createRequire(import.meta.url);
if (typeof globalThis.WebSocket !== 'function') globalThis.WebSocket = require('ws');
const LINES = { autobahn26: require('autobahn26'), autobahn22: require('autobahn22') };
for (const autobahn of Object.values(LINES)) autobahn.log.warn = () => {};

const MS = 15000;

function rules(env, withSubscribe) {
  const call = `[[rules]]\nauthid = "alice"\nendpoints = ["${env.rep.address}"]\nactions = ["call"]\n`;
  const subscribe = `[[rules]]\nauthid = "alice"\nendpoints = ["${env.pub.address}"]\nactions = ["subscribe"]\n`;
  return withSubscribe ? call + subscribe : call;
}

function login(autobahn, url) {
  const connection = new autobahn.Connection({
    url, realm: REALM, authmethods: ['ticket'], authid: 'alice', onchallenge: () => 'pw-alice', max_retries: 0,
  });
  const opened = new Promise((resolve, reject) => {
    connection.onopen = (session) => resolve({ connection, session });
    connection.onclose = (reason, details) => { reject(new Error(`closed: ${reason} ${JSON.stringify(details)}`)); return true; };
  });
  connection.open();
  return withTimeout(opened, MS, 'ticket login of alice');
}

describe('subscription revocation on SIGHUP, with autobahn-js', () => {
  const env = {};

  before(async () => {
    env.dir = mkdtempSync(path.join(os.tmpdir(), 'zmqwamp-revocation-'));
    [env.rep, env.pub] = await Promise.all([startRep(), startPub()]);
  }, { timeout: 30000 });

  after(async () => {
    await stopAll();
    rmSync(env.dir, { recursive: true, force: true });
  }, { timeout: 30000 });

  for (const [name, autobahn] of Object.entries(LINES)) {
    test(`${name}: on_unsubscribe resolves with wamp.error.not_authorized, no more EVENTs, the session goes on`, async () => {
      const config = path.join(env.dir, `${name}.toml`);
      writeFileSync(config, rules(env, true));
      const bridge = await startBridge({
        anonymous: false,
        allow: [env.rep.address, env.pub.address],
        extra: ['--config', config, '--auth', 'memory:alice:pw-alice'],
      });
      const { connection, session } = await login(autobahn, bridge.url);
      const events = [];
      const subscription = await withTimeout(session.subscribe(env.pub.address, (args) => events.push(args)), MS, 'subscribe');
      while (events.length === 0) await sleep(20);

      writeFileSync(config, rules(env, false));
      const mark = bridge.proc.lines.length;
      process.kill(bridge.proc.pid, 'SIGHUP');
      const reason = await withTimeout(subscription.on_unsubscribe, MS, 'the revocation');
      assert.equal(reason, 'wamp.error.not_authorized');
      assert.equal(subscription.active, false);
      await bridge.proc.waitFor(/reload: 1 subscription\(s\) revoked/, MS, mark);

      await sleep(300); // anything published before the revocation has arrived
      const seen = events.length;
      await sleep(1000); // the PUB ticks every 50 ms
      assert.equal(events.length, seen);
      assert.ok(session.isOpen);
      assert.equal(await withTimeout(session.call(env.rep.address, ['still here']), MS, 'call'), 'got this still here');
      connection.close();
      await bridge.proc.stop();
    });
  }
});
