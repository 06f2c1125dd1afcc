// The suite against npm `autobahn` 26.x (installed as the alias `autobahn26`).
//
// autobahn 26 opens its WebSocket with the global `WebSocket` and nothing else.
// Node has that global by default from Node 22 on; on Node 20 it needs the flag
// --experimental-websocket, which exposes the same built-in (undici) WebSocket
// that Node 22+ ships.  `make test-js` and `npm test` pass that flag, so this
// line is tested on the WebSocket it is made for.  Run by hand without the
// flag on Node 20, the `ws` package is put on globalThis instead (ws's
// WebSocket has the browser-style onopen/onmessage/onclose, binaryType and
// protocol that autobahn uses), so the tests still run; the suite title says
// which WebSocket was used.
import { createRequire } from 'node:module';

import { defineBridgeSuite } from './suite.mjs';

const require = createRequire(import.meta.url);

let websocket = 'Node built-in WebSocket';
if (typeof globalThis.WebSocket !== 'function') {
  globalThis.WebSocket = require('ws');
  websocket = `ws ${require('ws/package.json').version} on globalThis (no built-in WebSocket: run node with --experimental-websocket)`;
}

const autobahn = require('autobahn26');
// Autobahn's own warnings ("connection closed", ...) go to stderr, not into the report.
autobahn.log.warn = () => {};

defineBridgeSuite({
  title: `autobahn ${autobahn.version} (npm alias autobahn26), ${websocket}`,
  autobahn,
  serializers: ['json', 'msgpack', 'cbor'],
});
