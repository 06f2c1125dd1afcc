// Issue 17 with the stock Autobahn JS clients (26.x and 22.11.x): a bridge whose TOML gives a PUB
// alias a history (kept open), a real pyzmq PUB at 1 message per 2 s, and a SUBSCRIBE with the
// standard option get_retained: the last message arrives within 200 ms of SUBSCRIBED, with
// details.retained, before the next live one.  See docs/history.md.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  WAMP, connect, startBridge, startPub, stopAll, waitUntil, withTimeout,
} from './harness.mjs';

const require = createRequire(import.meta.url);
if (typeof globalThis.WebSocket !== 'function') globalThis.WebSocket = require('ws');
const LINES = { autobahn26: require('autobahn26'), autobahn22: require('autobahn22') };
for (const autobahn of Object.values(LINES)) autobahn.log.warn = () => {};

const MS = 15000;
const RETAINED_WITHIN_MS = 200;

async function historyHeld(bridge) {
  const text = await (await fetch(`http://127.0.0.1:${bridge.port}/metrics`)).text();
  const match = /^zmqwamp_history_messages\{endpoint="ticks"\} (\S+)$/m.exec(text);
  return match ? Number(match[1]) : 0;
}

describe('get_retained with autobahn-js: the last message of a history alias', () => {
  const env = {};

  before(async () => {
    env.dir = mkdtempSync(path.join(os.tmpdir(), 'zmqwamp-history-'));
    env.pub = await startPub({ interval: 2, topics: 'tick' });  // 1 message / 2 s
    const config = path.join(env.dir, 'bridge.toml');
    writeFileSync(config, `[endpoints.ticks]\naddress = "${env.pub.address}"\nkind = "sub"\nhistory = 10\nkeep_open = true\n`);
    env.bridge = await startBridge({ extra: ['--config', config] });
    // keep_open: the bridge holds a message before anyone subscribes (the PUB ticks every 2 s)
    await waitUntil(async () => (await historyHeld(env.bridge)) >= 1, 10000, 'a message held for the alias ticks');
  }, { timeout: 30000 });

  after(async () => {
    await stopAll();
    rmSync(env.dir, { recursive: true, force: true });
  }, { timeout: 30000 });

  for (const [name, autobahn] of Object.entries(LINES)) {
    test(`${name}: the retained message within ${RETAINED_WITHIN_MS} ms of SUBSCRIBED, then live ones`, async () => {
      const client = await connect(autobahn, env.bridge.url);
      const at = []; // [performance.now(), WAMP message] as the transport hands them over
      const dispatch = client.connection.transport.onmessage;
      client.connection.transport.onmessage = (msg) => {
        at.push([performance.now(), msg]);
        dispatch(msg);
      };
      const got = [];
      await withTimeout(
        client.session.subscribe('ticks', (args, kwargs, details) => got.push({ args, details }), { get_retained: true }),
        MS,
        'subscribe',
      );
      await waitUntil(() => got.length >= 2, 6000, 'the retained message and a live one');
      const [subscribedAt] = at.find(([, msg]) => msg[0] === WAMP.SUBSCRIBED);
      const [retainedAt, retained] = at.find(([, msg]) => msg[0] === WAMP.EVENT);
      assert.equal(retained[3].retained, true);
      assert.equal(typeof retained[3]._epoch, 'string');
      assert.ok(retainedAt - subscribedAt < RETAINED_WITHIN_MS, `${(retainedAt - subscribedAt).toFixed(0)} ms`);
      assert.equal(got[0].details.retained, true);
      const tick = (event) => Number(event.args[0].split(' ')[1]);
      assert.equal(tick(got[1]), tick(got[0]) + 1); // it was the last one: the next is live
      assert.ok(!got[1].details.retained);
      assert.ok(got[1].details.publication > got[0].details.publication);
      await client.close();
    }, { timeout: 30000 });
  }
});
