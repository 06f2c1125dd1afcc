// zmqwamp with an independent WAMP client: wampy.js (npm `wampy`, with `wampy-cra`
// for WAMP-CRA), over json, msgpack and cbor, against real `twistd -n zmqwamp`
// processes and the example ZeroMQ services.
//
// wampy differs from Autobahn where a router must follow the WAMP rules rather
// than one client's habits: it forwards only custom options spelt `_name`
// (so the filter is `_filter`), sends `match: undefined` and `get_retained:
// undefined` in every SUBSCRIBE (msgpack ext type 0, CBOR's undefined), encodes
// a Uint8Array in CBOR as an RFC 8746 typed array (tag 64), and answers the
// router's GOODBYE with its own (so the router must not close at once).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { CborSerializer } from 'wampy/CborSerializer.js';
import { MsgpackSerializer } from 'wampy/MsgpackSerializer.js';
import { Wampy } from 'wampy';
import * as wampyCra from 'wampy-cra';

import { REALM, findCommand, sleep, startBridge, startPub, startRep, stopAll, waitUntil, withTimeout } from './harness.mjs';

const require = createRequire(import.meta.url);
const WebSocket = require('ws');
// wampy's exports do not include package.json: read it from its folder
const WAMPY_VERSION = JSON.parse(readFileSync(new URL('node_modules/wampy/package.json', import.meta.url))).version;

const MS = 8000;
const SERIALIZERS = {
  json: () => null, // wampy's default
  msgpack: () => new MsgpackSerializer(),
  cbor: () => new CborSerializer(),
};
const CAROL = 'carol-plain-secret'; // memory: checker
const DORA = 'dora-salted-secret'; // zmqwamp-users file (salted WAMP-CRA)

/**
 * A WebSocket class for wampy that behaves like a browser's where it matters here,
 * and records every frame the client sends with the socket's readyState at that
 * moment (OPEN = 1).  A browser hands each received message to the page as a task
 * of its own, after the network has processed whatever arrived with it, such as a
 * close frame right behind a GOODBYE; Node's `ws` calls onmessage at once, while
 * parsing.  So messages are handed on a little later here, as in a browser.
 */
function browserLikeWebSocket(sent) {
  return class extends WebSocket {
    set onmessage(handler) {
      this._handler = handler;
      super.onmessage = handler && ((event) => setTimeout(() => handler(event), 50));
    }

    get onmessage() {
      return this._handler;
    }

    send(data, ...rest) {
      sent.push({ data, readyState: this.readyState });
      return super.send(data, ...rest);
    }
  };
}

/** A joined wampy session; `options` are wampy's (serializer, authid, authmethods, onChallenge, ws ...). */
async function open(url, serializer = 'json', options = {}) {
  const wampy = new Wampy(url, {
    realm: REALM,
    ws: WebSocket,
    uriValidation: 'loose', // zmqwamp's URIs are ZeroMQ addresses: strict WAMP URI rules refuse `tcp://...`
    autoReconnect: false,
    ...(SERIALIZERS[serializer]() ? { serializer: SERIALIZERS[serializer]() } : {}),
    ...options,
  });
  await withTimeout(wampy.connect(), MS, `wampy ${serializer} session on ${url}`);
  return wampy;
}

/** A wampy call's rejection as {error, args} (wampy rejects with a WampError carrying `errorUri` and `argsList`). */
async function callError(promise) {
  try {
    await withTimeout(promise, MS, 'call');
  } catch (err) {
    return { error: err.errorUri, args: err.argsList };
  }
  throw new Error('the call succeeded but was expected to fail');
}

/** Subscribe; resolves {events, subscription} where `events` collects each EVENT's first argument. */
async function subscribe(wampy, topic, advancedOptions) {
  const events = [];
  const subscription = await withTimeout(
    wampy.subscribe(topic, (e) => events.push(e.argsList[0]), advancedOptions), MS, `subscribe ${topic}`,
  );
  return { events, subscription };
}

describe(`wampy.js ${WAMPY_VERSION} against zmqwamp`, () => {
  const env = { clients: [] };

  before(async () => {
    const [rep, unlisted, pub] = await Promise.all([startRep(), startRep(), startPub({ interval: 0.05 })]);
    Object.assign(env, { rep, unlisted, pub });
    env.dir = mkdtempSync(path.join(os.tmpdir(), 'zmqwamp-wampy-'));
    env.users = path.join(env.dir, 'users');
    execFileSync(findCommand('python'), ['-m', 'zmqwamp.users', 'add', env.users, 'dora', '--password-stdin'],
      { input: `${DORA}\n` });
    const config = path.join(env.dir, 'zmqwamp.toml');
    writeFileSync(config, 'login_penalty_max = 0.0\n');
    const allow = [rep.address, pub.address];
    // two login bridges: a salted checker answers wampcra CHALLENGEs for every authid (docs/auth.md)
    [env.bridge, env.plain, env.salted] = await Promise.all([
      startBridge({ allow }),
      startBridge({ allow, anonymous: false, extra: ['--config', config, '--auth', `memory:carol:${CAROL}`] }),
      startBridge({ allow, anonymous: false, extra: ['--config', config, '--auth', `zmqwamp-users:${env.users}`] }),
    ]);
  }, { timeout: 30000 });

  after(async () => {
    await Promise.all(env.clients.map((w) => w.disconnect().catch(() => {})));
    await stopAll();
    rmSync(env.dir, { recursive: true, force: true });
  }, { timeout: 30000 });

  async function session(serializer, options) {
    const wampy = await open(env.bridge.url, serializer, options);
    env.clients.push(wampy);
    return wampy;
  }

  for (const serializer of Object.keys(SERIALIZERS)) {
    describe(serializer, () => {
      test('call: the REP answers', async () => {
        const w = await session(serializer);
        const result = await withTimeout(w.call(env.rep.address, ['hello']), MS, 'call');
        assert.deepEqual(result.argsList, ['got this hello']);
      });

      test('200 concurrent calls each get their own reply', async () => {
        const w = await session(serializer);
        const replies = await withTimeout(
          Promise.all(Array.from({ length: 200 }, (_, i) => w.call(env.rep.address, [`n${i}`]))), 15000, '200 calls',
        );
        assert.deepEqual(replies.map((r) => r.argsList[0]), Array.from({ length: 200 }, (_, i) => `got this n${i}`));
      });

      test('SUBSCRIBE with wampy\'s undefined options and _filter: only matching events', async () => {
        const w = await session(serializer);
        const { events } = await subscribe(w, env.pub.address, { _filter: 'hugo' });
        await waitUntil(() => events.length >= 5, MS, '5 events');
        assert.ok(events.every((e) => /^hugo \d+$/.test(e)), `not all hugo: ${events.slice(0, 10)}`);
      });

      test('?filter= in the URI narrows the same way', async () => {
        const w = await session(serializer);
        const { events } = await subscribe(w, `${env.pub.address}?filter=otto`);
        await waitUntil(() => events.length >= 5, MS, '5 events');
        assert.ok(events.every((e) => /^otto \d+$/.test(e)), `not all otto: ${events.slice(0, 10)}`);
      });

      test('_filter and ?filter= that disagree: ERROR, not a wider subscription', async () => {
        const w = await session(serializer);
        await assert.rejects(
          withTimeout(w.subscribe(`${env.pub.address}?filter=otto`, () => {}, { _filter: 'hugo' }), MS, 'subscribe'),
          (err) => {
            assert.equal(err.errorUri, 'wamp.error.invalid_argument');
            assert.match(String(err.argsList?.[0]), /different values/);
            return true;
          },
        );
      });

      // wampy 8.0.2 cannot complete the UNSUBSCRIBE of a subscription made with advanced options
      // (its UNSUBSCRIBED handler looks the subscription up without them and throws): the filter
      // goes in the URI here, as the README advises for wampy.
      test('unsubscribe: the events stop', async () => {
        const w = await session(serializer);
        const { events, subscription } = await subscribe(w, `${env.pub.address}?filter=hugo`);
        await waitUntil(() => events.length >= 2, MS, '2 events');
        await withTimeout(w.unsubscribe(subscription.subscriptionId), MS, 'unsubscribe');
        const seen = events.length;
        await sleep(400); // 8 ticks of the publisher
        assert.equal(events.length, seen, 'events after UNSUBSCRIBED');
      });

      test('an endpoint nothing allows: wamp.error.not_authorized', async () => {
        const w = await session(serializer);
        const { error } = await callError(w.call(env.unlisted.address, ['x']));
        assert.equal(error, 'wamp.error.not_authorized');
      });
    });
  }

  for (const serializer of ['msgpack', 'cbor']) {
    test(`${serializer}: a Uint8Array argument reaches the REP as bytes, and bytes come back`, async () => {
      const w = await session(serializer);
      const result = await withTimeout(w.call(env.rep.address, [new Uint8Array([0xff, 0x00, 0xfe])]), MS, 'call');
      const reply = result.argsList[0];
      assert.ok(reply instanceof Uint8Array, `reply is ${typeof reply} ${reply?.constructor?.name}`);
      assert.deepEqual([...reply], [...Buffer.from('got this '), 0xff, 0x00, 0xfe]);
    });
  }

  test('cbor: a Float32Array (a typed array that is not bytes) gets a clear ERROR', async () => {
    const w = await session('cbor');
    const { error, args } = await callError(w.call(env.rep.address, [new Float32Array([1.5])]));
    assert.equal(error, 'wamp.error.invalid_argument');
    assert.match(String(args?.[0]), /typed array of tag \d+/);
  });

  const logins = [
    { method: 'ticket', bridge: 'plain', authid: 'carol', secret: CAROL, onChallenge: (secret) => () => secret },
    { method: 'wampcra', bridge: 'plain', authid: 'carol', secret: CAROL, onChallenge: (secret) => wampyCra.sign(secret) },
    { method: 'ticket', bridge: 'salted', authid: 'dora', secret: DORA, onChallenge: (secret) => () => secret },
    { method: 'wampcra', bridge: 'salted', authid: 'dora', secret: DORA, onChallenge: (secret) => wampyCra.sign(secret) },
  ];
  for (const serializer of ['json', 'msgpack']) {
    for (const l of logins) {
      test(`${serializer}: ${l.method} login of ${l.authid}, then a call; a wrong secret is refused`, async () => {
        const options = { authid: l.authid, authmethods: [l.method], onChallenge: l.onChallenge(l.secret) };
        const w = await open(env[l.bridge].url, serializer, options);
        env.clients.push(w);
        assert.equal(w.getSessionId() > 0, true); // msgpack: a BigInt, which compares as a number
        const result = await withTimeout(w.call(env.rep.address, ['hi']), MS, 'call');
        assert.deepEqual(result.argsList, ['got this hi']);
        await assert.rejects(
          open(env[l.bridge].url, serializer, { ...options, onChallenge: l.onChallenge('not-the-secret') }),
          (err) => {
            assert.equal(err.errorUri, 'wamp.error.not_authorized');
            return true;
          },
        );
      });
    }
  }

  test('shutdown: the bridge waits for wampy\'s GOODBYE before it closes the WebSocket', async () => {
    const bridge = await startBridge({ allow: [env.rep.address], extra: ['--drain-time', '0'] });
    const sent = [];
    const w = await open(bridge.url, 'json', { ws: browserLikeWebSocket(sent) });
    assert.deepEqual((await withTimeout(w.call(env.rep.address, ['x']), MS, 'call')).argsList, ['got this x']);
    const closed = new Promise((resolve) => { w.setOptions({ onClose: resolve }); });
    process.kill(bridge.proc.pid, 'SIGTERM');
    await withTimeout(closed, MS, 'the session to close');
    const goodbyes = sent.filter((s) => typeof s.data === 'string' && s.data.startsWith('[6,'));
    assert.equal(goodbyes.length, 1, `the client's GOODBYE: ${JSON.stringify(sent.map((s) => String(s.data).slice(0, 40)))}`);
    assert.equal(goodbyes[0].readyState, WebSocket.OPEN, 'the GOODBYE answer was sent on a socket the bridge had closed');
    assert.deepEqual((await withTimeout(bridge.proc.exited, MS, 'the bridge to exit')).code, 0);
  });
});
