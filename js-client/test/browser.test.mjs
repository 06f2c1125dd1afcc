// The demo page in a real browser: Debian's chromium driven by playwright-core.
// The bridge serves the page at / and the bundle at /js/zmqwamp.js; the page gets its
// endpoints from the query string, as `make demo` passes them.
/* global zmq -- the bundle's global, in code evaluated in the page */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { ARTIFACTS, startBridge, startCounter, startEcho, withTimeout } from "./helpers.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const SCREENSHOT = join(ARTIFACTS, "demo-page.png");

describe(
  "demo page in headless chromium",
  { skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing (scripts/ensure-chromium.sh installs it)` },
  () => {
    let bridge, echo, counter, browser, browserPid;

    before(async () => {
      [echo, counter] = await Promise.all([startEcho(), startCounter(0.3)]);
      // Like `make demo`: exactly the two example endpoints are allowed.
      bridge = await startBridge({ allow: [echo.address, counter.address] });
      browser = await withTimeout(
        chromium.launch({
          executablePath: CHROMIUM,
          headless: true,
          // playwright gives every launch a fresh temporary profile (user-data-dir).
          args: [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
          ],
          timeout: 30000,
        }),
        40000,
        "chromium launch",
      );
      browserPid = browser.process?.()?.pid;
    });

    after(async () => {
      if (browser) {
        await withTimeout(browser.close(), 10000, "browser close").catch(() => {
          if (browserPid) {
            try {
              process.kill(browserPid, "SIGKILL");
            } catch {}
          }
        });
      }
      await Promise.allSettled([bridge, echo, counter].filter(Boolean).map((p) => (p.stop ? p.stop() : p.proc.stop())));
    });

    test("the bridge serves the bundle at /js/zmqwamp.js", async () => {
      const res = await fetch(`${bridge.http}/js/zmqwamp.js`);
      assert.equal(res.status, 200);
      assert.match(res.headers.get("content-type"), /javascript/);
      assert.match(await res.text(), /^\/\* zmqwamp-client /);
      assert.equal((await fetch(`${bridge.http}/js/`)).status, 404, "no directory listing");
    });

    test("the bundle in the page: bytes round trip with json, msgpack and cbor (no Node built-ins)", async () => {
      const page = await browser.newPage();
      const problems = [];
      page.on("pageerror", (e) => problems.push(e.message));
      await page.goto(`${bridge.http}/?${new URLSearchParams({ rep: echo.address, pub: counter.address })}`, {
        timeout: 15000,
      });
      await page.waitForSelector('#status[data-state="open"]', { timeout: 15000 });
      const results = await page.evaluate(
        async ({ url, rep }) => {
          const out = {};
          for (const serializer of ["json", "msgpack", "cbor"]) {
            const ctx = zmq.Context(url, { serializer });
            const req = ctx.Socket(zmq.REQ, rep);
            const reply = await req.request(new Uint8Array([0xff, 0x00, 0x01]), { timeout: 5000 });
            out[serializer] = {
              isBytes: reply instanceof Uint8Array,
              bytes: Array.from(reply.slice(-3)),
              text: await req.request("hi"),
            };
            await ctx.close();
          }
          return out;
        },
        { url: bridge.url, rep: echo.address },
      );
      for (const serializer of ["json", "msgpack", "cbor"]) {
        assert.deepEqual(
          results[serializer],
          { isBytes: true, bytes: [0xff, 0x00, 0x01], text: "got this hi" },
          serializer,
        );
      }
      assert.deepEqual(problems, []);
      await page.close();
    });

    test("the bundle in the page: a DEALER stream (for await, cancel) and a PUSH send", async () => {
      const page = await browser.newPage();
      const problems = [];
      page.on("pageerror", (e) => problems.push(e.message));
      await page.goto(`${bridge.http}/?${new URLSearchParams({ rep: echo.address, pub: counter.address })}`, {
        timeout: 15000,
      });
      const result = await page.evaluate(
        async ({ url, rep }) => {
          const ctx = zmq.Context(url);
          const dealer = ctx.Socket(zmq.DEALER, rep);
          const parts = [];
          for await (const part of dealer.stream("hi", { timeout: 5000 })) parts.push(part);
          const callback = await new Promise((resolve) => dealer.send("cb", (part, { last }) => resolve([part, last])));
          const canceled = dealer.stream("never mind");
          await canceled.cancel();
          const push = await ctx
            .Socket(zmq.PUSH, rep)
            .send("job")
            .then(
              () => "published",
              (e) => e instanceof zmq.ZmqError && e.uri,
            );
          await ctx.close();
          return { parts, callback, canceled: canceled.state, push };
        },
        { url: bridge.url, rep: echo.address },
      );
      assert.deepEqual(result.parts, ["got this hi"]);
      assert.deepEqual(result.callback, ["got this cb", true]);
      assert.equal(result.canceled, "canceled");
      assert.match(String(result.push), /^(wamp|zmqwamp)\.error\./, "a REP address is no PUSH endpoint");
      assert.deepEqual(problems, []);
      await page.close();
    });

    test("a graceful bridge stop: the page answers the bridge's GOODBYE before closing (no 'CLOSING or CLOSED' log)", async () => {
      // A bridge of its own, stopped with SIGTERM while the demo page is connected.
      const own = await startBridge({ allow: [echo.address] });
      const page = await browser.newPage();
      const logged = [];
      page.on("console", (m) => logged.push(`${m.type()}: ${m.text()}`));
      page.on("pageerror", (e) => logged.push(`pageerror: ${e.message}`));
      try {
        await page.goto(`${own.http}/?${new URLSearchParams({ rep: echo.address })}`, { timeout: 15000 });
        await page.waitForSelector('#status[data-state="open"]', { timeout: 15000 });
        await own.stop();
        await page.waitForFunction(() => document.getElementById("status").dataset.state !== "open", null, {
          timeout: 10000,
        });
        await new Promise((r) => setTimeout(r, 300));
        const stray = logged.filter((l) => /CLOSING or CLOSED/.test(l));
        assert.deepEqual(stray, [], logged.join("\n"));
      } finally {
        await page.close();
        await own.stop();
      }
    });

    test("REQ form shows the echo reply; counter events arrive; filter box works", async () => {
      const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
      const problems = [];
      page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
      page.on("console", (m) => {
        // Errors, and the client's own warnings (e.g. a deprecated call in the demo page).
        if (m.type() === "error" || /zmqwamp-client/.test(m.text())) problems.push(`console ${m.type()}: ${m.text()}`);
      });
      page.on("response", (r) => {
        if (r.status() >= 400) problems.push(`HTTP ${r.status()} for ${r.url()}`);
      });
      const query = new URLSearchParams({ rep: echo.address, pub: counter.address, filter: "hugo" });
      await page.goto(`${bridge.http}/?${query}`, { timeout: 15000 });
      await page.waitForSelector('#status[data-state="open"]', { timeout: 15000 });

      // Request/reply through the form.
      await page.fill("#req-input", "hello from chromium");
      await page.click("#req-send");
      const reply = page.locator("#req-log li.reply").first();
      await reply.waitFor({ timeout: 10000 });
      assert.match(await reply.textContent(), /got this hello from chromium/);

      // Live counter, filtered to hugo.
      await page.waitForFunction(() => Number(document.getElementById("sub-count").textContent) >= 3, null, {
        timeout: 10000,
      });
      const lines = await page.locator("#sub-log li").allTextContents();
      assert.ok(lines.length >= 3);
      assert.ok(
        lines.every((l) => /hugo \d+$/.test(l)),
        JSON.stringify(lines),
      );

      // Another filter through the filter box.
      await page.fill("#sub-filter", "otto");
      await page.click("#sub-apply");
      await page.waitForFunction(() => Number(document.getElementById("sub-count").textContent) >= 4, null, {
        timeout: 10000,
      });
      const ottoLines = await page.locator("#sub-log li").allTextContents();
      assert.ok(
        ottoLines.every((l) => /otto \d+$/.test(l)),
        JSON.stringify(ottoLines),
      );

      // One more request so the screenshot shows a couple of replies.
      await page.fill("#req-input", '{"myrequest": "hello"}');
      await page.selectOption("#req-kind", "json");
      await page.click("#req-send");
      await page.locator("#req-log li.reply", { hasText: "myrequest" }).waitFor({ timeout: 10000 });

      mkdirSync(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: SCREENSHOT, fullPage: true });
      assert.ok(existsSync(SCREENSHOT));
      assert.deepEqual(problems, [], "no errors in the page");
      await page.close();
    });
  },
);
