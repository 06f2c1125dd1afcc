// The build outputs: the committed bundle the bridge serves is the one js-client builds,
// the ES module / CommonJS builds agree; and the types (`npm run typecheck`): src/ checks, it
// implements zmqwamp.d.ts, and the README's examples compile against zmqwamp.d.ts.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { JS_CLIENT, ROOT } from "./helpers.mjs";
import { checkReadme } from "./types/check-readme.mjs";

const require = createRequire(import.meta.url);

test("zmqwamp/static/js/zmqwamp.js is the current build of js-client (run `make js-bundle` and commit it)", () => {
  const built = readFileSync(join(JS_CLIENT, "dist/zmqwamp.js"), "utf8");
  const committed = readFileSync(join(ROOT, "zmqwamp/static/js/zmqwamp.js"), "utf8");
  assert.ok(
    built === committed,
    "the bundle served by the bridge is stale: run `make js-bundle` and commit zmqwamp/static/js/zmqwamp.js",
  );
});

test("the ES module, CommonJS and browser builds export the same API", async () => {
  const esm = await import("../dist/zmqwamp.mjs");
  const cjs = require("../dist/zmqwamp.cjs");
  const names = [
    "Context",
    "ERRORS",
    "PUB",
    "REP",
    "REQ",
    "SUB",
    "DEALER",
    "PUSH",
    "DealerSocket",
    "PushSocket",
    "ReplyStream",
    "ZmqError",
    "autobahn",
    "version",
  ];
  for (const name of names) {
    assert.ok(name in esm, `ESM exports ${name}`);
    assert.ok(name in cjs, `CJS exports ${name}`);
  }
  const pkg = JSON.parse(readFileSync(join(JS_CLIENT, "package.json"), "utf8"));
  assert.equal(esm.version, pkg.version, "src/index.js version matches package.json");
  assert.equal(esm.REQ, 3);
  assert.equal(esm.SUB, 2);
  assert.equal(esm.DEALER, 5);
  assert.equal(esm.PUSH, 8);
  const browserEsm = readFileSync(join(JS_CLIENT, "dist/zmqwamp.browser.mjs"), "utf8");
  const iife = readFileSync(join(JS_CLIENT, "dist/zmqwamp.js"), "utf8");
  assert.match(iife, /var zmq=/, "the browser bundle defines the global zmq");
  assert.doesNotMatch(iife, /require\("(stream|buffer|msgpack5|cbor)"\)/, "no Node built-ins in the browser bundle");
  assert.ok(browserEsm.includes("export{"));
});

/** Run tsc on a project; fail the test with its output. */
function tsc(project) {
  const bin = join(JS_CLIENT, "node_modules/typescript/bin/tsc");
  try {
    execFileSync(process.execPath, [bin, "-p", join(JS_CLIENT, project)], { encoding: "utf8", timeout: 120000 });
  } catch (e) {
    assert.fail(`tsc -p ${project} failed:\n${e.stdout}${e.stderr}`);
  }
}

test("src/ type-checks: JavaScript with JSDoc under tsc --strict (tsconfig.json)", () => {
  tsc("tsconfig.json");
});

test("src/ implements zmqwamp.d.ts, and test/types/usage.ts compiles against it (tsc --strict)", () => {
  tsc("test/types/tsconfig.json");
});

test("every js example in README.md type-checks against zmqwamp.d.ts", () => {
  const { count } = checkReadme();
  assert.ok(count >= 4, `README.md has ${count} js examples`);
});
