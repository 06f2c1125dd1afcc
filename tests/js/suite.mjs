// The end-to-end tests, defined once and run against each Autobahn JS line
// (see autobahn26.test.mjs and autobahn22.test.mjs, one Node process each).
//
// Every test talks to a real `twistd -n zmqwamp` and real pyzmq services from
// ../../examples, started in before() and stopped by PID in after().

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  WAMP,
  connect,
  connectRefused,
  outcome,
  sleep,
  startBridge,
  startPub,
  startRep,
  stopAll,
  waitUntil,
  withTimeout,
} from './harness.mjs';

const OP_MS = 5000; // any single WAMP request/response
const EVENTS_MS = 8000; // waiting for a batch of events (PUB ticks every 50 ms)
const QUIET_MS = 600; // "nothing arrives" windows: 12 ticks of the publisher

/** The events of one subscription, each parsed as `<topic> <n>`. */
function parseEvents(events) {
  return events.map((args) => {
    assert.equal(args.length, 1, `one frame, one argument: ${JSON.stringify(args)}`);
    assert.equal(typeof args[0], 'string', `text event: ${JSON.stringify(args)}`);
    const match = /^(hugo|otto) (\d+)$/.exec(args[0]);
    assert.ok(match, `event ${JSON.stringify(args[0])} is not '<topic> <n>'`);
    return { topic: match[1], n: Number(match[2]) };
  });
}

/** Counter values of `topic` in `events` increase by exactly one: no message lost, none doubled. */
function assertConsecutive(parsed, topic) {
  const ns = parsed.filter((e) => e.topic === topic).map((e) => e.n);
  for (let i = 1; i < ns.length; i++) {
    assert.equal(ns[i], ns[i - 1] + 1, `${topic} counter jumps from ${ns[i - 1]} to ${ns[i]}: ${ns.join(',')}`);
  }
  return ns;
}

export function defineBridgeSuite({ title, autobahn, serializers }) {
  describe(title, () => {
    const env = {};
    const clients = [];

    before(async () => {
      const [rep, silentRep, lateRep, unlistedRep, pub] = await Promise.all([
        startRep(),
        startRep({ delay: 60 }), // answers after a minute: never, for these tests
        startRep({ delay: 1 }), // answers after a second
        startRep(), // running, but not allowed by the bridge
        startPub({ interval: 0.05 }),
      ]);
      Object.assign(env, { rep, silentRep, lateRep, unlistedRep, pub });
      // Deny by default: allow exactly the services the tests may reach.
      const allow = [rep.address, silentRep.address, lateRep.address, pub.address];
      env.bridge = await startBridge({ allow });
    }, { timeout: 30000 });

    after(async () => {
      await Promise.all(clients.map((c) => c.close()));
      await stopAll();
    }, { timeout: 30000 });

    async function open(opts = {}) {
      const c = await connect(autobahn, env.bridge.url, opts);
      clients.push(c);
      return c;
    }

    async function subscribe(session, topic, options) {
      const events = [];
      const sub = await withTimeout(
        session.subscribe(topic, (args) => events.push(args), options),
        OP_MS, `subscribe ${topic} ${JSON.stringify(options)}`);
      return { sub, events };
    }

    const call = (session, procedure, args, options) => outcome(
      session.call(procedure, args, {}, options), OP_MS, `call ${procedure} ${JSON.stringify(args)}`);

    // -- calls ----------------------------------------------------------------

    test('call round trip resolves with the REP reply', { timeout: 15000 }, async () => {
      const { session } = await open();
      const result = await withTimeout(session.call(env.rep.address, ['hello']), OP_MS, 'call');
      assert.equal(result, 'got this hello');
    });

    test('several arguments are a multipart request; the multipart reply has one argument per frame',
      { timeout: 15000 }, async () => {
        const { session } = await open();
        const result = await withTimeout(session.call(env.rep.address, ['a', 'b', { x: 1 }]), OP_MS, 'call');
        assert.ok(result instanceof autobahn.Result, `several arguments come as a Result: ${JSON.stringify(result)}`);
        assert.deepEqual(result.args, ['got this a', 'b', { x: 1 }]);
      });

    test('200 concurrent calls from each of two sessions are each matched to their own reply',
      { timeout: 30000 }, async () => {
        const a = await open({ serializer: 'json' });
        const b = await open({ serializer: 'msgpack' });
        const N = 200;
        const calls = [];
        for (let i = 0; i < N; i++) {
          calls.push(a.session.call(env.rep.address, [`a-${i}`]));
          calls.push(b.session.call(env.rep.address, [`b-${i}`]));
        }
        const results = await withTimeout(Promise.all(calls), 20000, `${2 * N} concurrent calls`);
        const expected = [];
        for (let i = 0; i < N; i++) expected.push(`got this a-${i}`, `got this b-${i}`);
        assert.deepEqual(results, expected);
      });

    test('a call with option timeout against a REP that never answers fails with wamp.error.canceled',
      { timeout: 15000 }, async () => {
        const { session } = await open();
        const started = Date.now();
        const r = await call(session, env.silentRep.address, ['anyone?'], { timeout: 500 });
        const elapsed = Date.now() - started;
        assert.equal(r.ok, false, `expected an error, got ${JSON.stringify(r.value)}`);
        assert.equal(r.error, 'wamp.error.canceled');
        assert.match(String(r.args?.[0]), /timed? ?out/i);
        assert.ok(elapsed >= 450 && elapsed < 3000, `timed out after ${elapsed} ms, asked for 500`);
        // the bridge and the session are fine afterwards
        const ok = await call(session, env.rep.address, ['still there']);
        assert.deepEqual(ok, { ok: true, value: 'got this still there' });
      });

    test('a reply that comes after its call timed out is dropped, not given to the next call',
      { timeout: 15000 }, async () => {
        // lateRep answers each request one second after taking it, one at a time.
        const { session } = await open();
        const first = await call(session, env.lateRep.address, ['first'], { timeout: 300 });
        assert.equal(first.ok, false);
        assert.equal(first.error, 'wamp.error.canceled');
        const second = await outcome(
          session.call(env.lateRep.address, ['second'], {}, { timeout: 5000 }), 8000, 'second call');
        assert.deepEqual(second, { ok: true, value: 'got this second' });
      });

    // -- subscriptions ------------------------------------------------------------

    test('subscribe with option filter "hugo" receives only hugo messages, all of them',
      { timeout: 15000 }, async () => {
        const { session } = await open();
        const { events } = await subscribe(session, env.pub.address, { filter: 'hugo' });
        await waitUntil(() => events.length >= 10, EVENTS_MS, '10 hugo events');
        const parsed = parseEvents(events);
        assert.deepEqual([...new Set(parsed.map((e) => e.topic))], ['hugo']);
        assertConsecutive(parsed, 'hugo');
      });

    test('subscribe without a filter receives both hugo and otto', { timeout: 15000 }, async () => {
      const { session } = await open();
      const { events } = await subscribe(session, env.pub.address);
      await waitUntil(() => {
        const topics = events.map((args) => String(args[0]).split(' ')[0]);
        return topics.filter((t) => t === 'hugo').length >= 5 && topics.filter((t) => t === 'otto').length >= 5;
      }, EVENTS_MS, '5 hugo and 5 otto events');
      const parsed = parseEvents(events);
      assert.deepEqual([...new Set(parsed.map((e) => e.topic))].sort(), ['hugo', 'otto']);
      assertConsecutive(parsed, 'hugo');
      assertConsecutive(parsed, 'otto');
    });

    test('the filter is a prefix of the first frame, as in ZeroMQ, not a substring',
      { timeout: 15000 }, async () => {
        const { session } = await open();
        const prefix = await subscribe(session, env.pub.address, { filter: 'hu' });
        const inner = await subscribe(session, env.pub.address, { filter: 'ugo' });
        assert.notEqual(prefix.sub.id, inner.sub.id);
        await waitUntil(() => prefix.events.length >= 10, EVENTS_MS, '10 events for prefix "hu"');
        assert.deepEqual([...new Set(parseEvents(prefix.events).map((e) => e.topic))], ['hugo']);
        assert.deepEqual(inner.events, [], 'filter "ugo" must match nothing');
      });

    test('subscribe with the URI query form ?filter=otto receives only otto', { timeout: 15000 }, async () => {
      const a = await open();
      const b = await open();
      const byQuery = await subscribe(a.session, `${env.pub.address}?filter=otto`);
      const byOption = await subscribe(b.session, env.pub.address, { filter: 'otto' });
      await waitUntil(() => byQuery.events.length >= 10, EVENTS_MS, '10 otto events');
      const parsed = parseEvents(byQuery.events);
      assert.deepEqual([...new Set(parsed.map((e) => e.topic))], ['otto']);
      assertConsecutive(parsed, 'otto');
      // the same (endpoint, filter), however it was spelled: the same subscription
      assert.equal(byQuery.sub.id, byOption.sub.id);
    });

    test('sessions subscribed to the same (endpoint, filter) share one subscription id and all receive',
      { timeout: 20000 }, async () => {
        // different serializers too: the bridge serializes each event once per serializer
        const sessions = [await open({ serializer: 'json' }), await open({ serializer: 'msgpack' }),
          await open({ serializer: 'json' })];
        const subs = [];
        for (const { session } of sessions) subs.push(await subscribe(session, env.pub.address, { filter: 'hugo' }));
        const other = await subscribe(sessions[0].session, env.pub.address, { filter: 'otto' });
        const ids = subs.map((s) => s.sub.id);
        assert.equal(typeof ids[0], 'number');
        assert.deepEqual(ids, [ids[0], ids[0], ids[0]], 'one id per (endpoint, filter), the same for every session');
        assert.notEqual(other.sub.id, ids[0], 'a different filter is a different subscription');

        for (const s of subs) s.events.length = 0;
        await waitUntil(() => subs.every((s) => s.events.length >= 8), EVENTS_MS, '8 events in every session');
        const counters = subs.map((s) => {
          const parsed = parseEvents(s.events);
          assert.deepEqual([...new Set(parsed.map((e) => e.topic))], ['hugo']);
          return new Set(assertConsecutive(parsed, 'hugo'));
        });
        // they got the same messages, not just similar ones
        const common = [...counters[0]].filter((n) => counters[1].has(n) && counters[2].has(n));
        assert.ok(common.length >= 4, `sessions share only ${common.length} counter values`);
      });

    test('unsubscribe stops delivery to that session only; resubscribing works again',
      { timeout: 20000 }, async () => {
        const a = await open();
        const b = await open();
        const subA = await subscribe(a.session, env.pub.address, { filter: 'hugo' });
        const subB = await subscribe(b.session, env.pub.address, { filter: 'hugo' });
        assert.equal(subA.sub.id, subB.sub.id);
        await waitUntil(() => subA.events.length >= 3 && subB.events.length >= 3, EVENTS_MS, 'events in both');

        await withTimeout(a.session.unsubscribe(subA.sub), OP_MS, 'unsubscribe');
        const rxMark = a.rx.length;
        const seenByB = subB.events.length;
        await sleep(QUIET_MS);
        const lateEvents = a.rx.slice(rxMark).filter((msg) => msg[0] === WAMP.EVENT);
        assert.deepEqual(lateEvents, [], 'no EVENT on the wire after UNSUBSCRIBED');
        assert.equal(a.session.isOpen, true);
        assert.ok(subB.events.length >= seenByB + 5, `the other session kept receiving (${subB.events.length - seenByB} new)`);

        // release the last subscriber too (the bridge may close its SUB socket), then come back
        await withTimeout(b.session.unsubscribe(subB.sub), OP_MS, 'unsubscribe');
        const bMark = b.rx.length;
        await sleep(QUIET_MS);
        assert.deepEqual(b.rx.slice(bMark).filter((msg) => msg[0] === WAMP.EVENT), []);
        const again = await subscribe(a.session, env.pub.address, { filter: 'otto' });
        await waitUntil(() => again.events.length >= 3, EVENTS_MS, 'events after resubscribing');
        assert.deepEqual([...new Set(parseEvents(again.events).map((e) => e.topic))], ['otto']);
      });

    // -- refusals -----------------------------------------------------------------

    test('an endpoint no --allow pattern matches gets wamp.error.not_authorized', { timeout: 15000 }, async () => {
      const { session } = await open();
      const denied = env.unlistedRep.address; // a real REP is listening there
      const r = await call(session, denied, ['hello']);
      assert.equal(r.ok, false, `call to a denied endpoint returned ${JSON.stringify(r.value)}`);
      assert.equal(r.error, 'wamp.error.not_authorized');
      const s = await outcome(session.subscribe(denied, () => {}), OP_MS, 'subscribe');
      assert.equal(s.ok, false, 'subscribe to a denied endpoint succeeded');
      assert.equal(s.error, 'wamp.error.not_authorized');
      const other = await outcome(session.subscribe('tcp://127.0.0.1:1?filter=x', () => {}), OP_MS, 'subscribe');
      assert.equal(other.error, 'wamp.error.not_authorized');
    });

    test('a malformed endpoint gets wamp.error.invalid_uri', { timeout: 15000 }, async () => {
      const { session } = await open();
      for (const uri of ['foo', 'tcp://x', 'tcp://127.0.0.1:99999', 'udp://127.0.0.1:5555']) {
        const r = await call(session, uri, ['hello']);
        assert.equal(r.ok, false, `call ${uri} returned ${JSON.stringify(r.value)}`);
        assert.equal(r.error, 'wamp.error.invalid_uri', `call ${uri}`);
        const s = await outcome(session.subscribe(uri, () => {}), OP_MS, `subscribe ${uri}`);
        assert.equal(s.ok, false, `subscribe ${uri} succeeded`);
        assert.equal(s.error, 'wamp.error.invalid_uri', `subscribe ${uri}`);
      }
    });

    test('REGISTER and acknowledged PUBLISH get an ERROR, not silence', { timeout: 15000 }, async () => {
      const { session } = await open();
      const reg = await outcome(session.register(env.rep.address, () => 'mine'), OP_MS, 'register');
      assert.equal(reg.ok, false, 'REGISTER succeeded');
      assert.equal(reg.error, 'zmqwamp.error.not_supported');
      const pub = await outcome(session.publish(env.pub.address, ['x'], {}, { acknowledge: true }), OP_MS, 'publish');
      assert.equal(pub.ok, false, 'acknowledged PUBLISH succeeded');
      assert.equal(pub.error, 'zmqwamp.error.not_supported');
      // an unacknowledged PUBLISH has no reply in WAMP; the session stays usable
      session.publish(env.pub.address, ['y']);
      assert.deepEqual(await call(session, env.rep.address, ['after']), { ok: true, value: 'got this after' });
      assert.equal(session.isOpen, true);
    });

    test('a wrong realm closes the connection with wamp.error.no_such_realm', { timeout: 15000 }, async () => {
      const { reason, details } = await connectRefused(autobahn, env.bridge.url, { realm: 'no-such-realm' });
      assert.equal(reason, 'closed');
      assert.equal(details.reason, 'wamp.error.no_such_realm');
      assert.equal(details.will_retry, false);
    });

    test('a bridge without --anonymous refuses an anonymous session with wamp.error.not_authorized',
      { timeout: 20000 }, async () => {
        const closed = await startBridge({ anonymous: false, allow: [env.rep.address] });
        try {
          const { reason, details } = await connectRefused(autobahn, closed.url);
          assert.equal(reason, 'closed');
          assert.equal(details.reason, 'wamp.error.not_authorized');
        } finally {
          await closed.proc.stop();
        }
      });

    // -- serializers ----------------------------------------------------------------

    for (const name of serializers) {
      test(`serializer ${name}: negotiated, call, binary payload, filtered subscribe`, { timeout: 15000 }, async () => {
        const { session, details } = await open({ serializer: name });
        assert.equal(details.transport.protocol, `wamp.2.${name}`);
        assert.equal(await withTimeout(session.call(env.rep.address, ['hello']), OP_MS, 'call'), 'got this hello');
        const multi = await withTimeout(session.call(env.rep.address, ['a', 7, { k: [1, 2] }]), OP_MS, 'call');
        assert.deepEqual(multi.args, ['got this a', 7, { k: [1, 2] }]);
        if (name !== 'json') {
          // binary serializers carry bytes: bytes go out as they are, and a reply
          // frame that is not UTF-8 comes back as bytes
          const text = await withTimeout(session.call(env.rep.address, [Buffer.from('hi')]), OP_MS, 'call');
          assert.equal(text, 'got this hi');
          const raw = Buffer.from([0xff, 0x00, 0xfe]);
          const bytes = await withTimeout(session.call(env.rep.address, [raw]), OP_MS, 'call');
          assert.ok(bytes instanceof Uint8Array, `expected bytes, got ${JSON.stringify(bytes)}`);
          assert.deepEqual(Buffer.from(bytes), Buffer.concat([Buffer.from('got this '), raw]));
        }
        const { events } = await subscribe(session, env.pub.address, { filter: 'hugo' });
        await waitUntil(() => events.length >= 3, EVENTS_MS, '3 hugo events');
        assert.deepEqual([...new Set(parseEvents(events).map((e) => e.topic))], ['hugo']);
      });
    }
  });
}
