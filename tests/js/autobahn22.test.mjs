// The suite against npm `autobahn` 22.11.1 (installed as the alias `autobahn22`),
// the older line many sites still ship (also as autobahn-browser 22.11.1).
//
// autobahn 22 uses a global `WebSocket` when there is one (the browser case,
// which is the same code as autobahn 26's transport and is covered by
// autobahn26.test.mjs), and otherwise require('ws') -- the path Node programs
// using this line run, and the one tested here.  It only works with ws 1.1.4-7
// (ws 8 fails with "invalid or duplicated subprotocol"), hence "ws": "^7" in
// package.json.  The global that --experimental-websocket (or Node 22+)
// provides is removed before autobahn is loaded, in this test process only.
import { createRequire } from 'node:module';

import { defineBridgeSuite } from './suite.mjs';

delete globalThis.WebSocket;

const require = createRequire(import.meta.url);
const autobahn = require('autobahn22');
autobahn.log.warn = () => {};

defineBridgeSuite({
  title: `autobahn ${autobahn.version} (npm alias autobahn22), ws ${require('ws/package.json').version}`,
  autobahn,
  serializers: ['json', 'msgpack', 'cbor'],
});
