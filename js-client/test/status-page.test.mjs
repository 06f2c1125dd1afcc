// The bridge's status page (/status, issue 25 item 4) in a real browser: Debian's chromium driven by
// playwright-core, as browser.test.mjs drives the demo page. The page renders, its numbers and charts move
// while calls run to an echo REP, and every request it makes goes to the bridge's own origin.
// The JSON and its ring in memory: tests/unit/service/test_sampler.py; local-only: tests/e2e/test_status_page.py.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import * as zmq from "../dist/zmqwamp.mjs";
import { ARTIFACTS, WebSocket, startBridge, startEcho, waitUntil, withTimeout } from "./helpers.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const SCREENSHOT = join(ARTIFACTS, "status-page.png");

describe(
  "status page in headless chromium",
  { skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing (scripts/ensure-chromium.sh installs it)` },
  () => {
    let bridge, echo, browser, browserPid;

    before(async () => {
      echo = await startEcho();
      bridge = await startBridge({ allow: [echo.address] });
      browser = await withTimeout(
        chromium.launch({
          executablePath: CHROMIUM,
          headless: true,
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
      await Promise.allSettled([bridge, echo].filter(Boolean).map((p) => (p.stop ? p.stop() : p.proc.stop())));
    });

    test("it renders, its numbers move while calls run, and it fetches from the bridge only", async () => {
      const page = await browser.newPage({ viewport: { width: 1300, height: 1000 } });
      const origin = new URL(bridge.http).origin;
      const requests = [];
      const problems = [];
      page.on("request", (r) => requests.push(r.url()));
      page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
      page.on("console", (m) => {
        if (m.type() === "error" || m.type() === "warning") problems.push(`console ${m.type()}: ${m.text()}`);
      });
      page.on("response", (r) => {
        if (r.status() >= 400) problems.push(`HTTP ${r.status()} for ${r.url()}`);
      });
      await page.goto(`${bridge.http}/status`, { timeout: 15000 });
      await page.waitForSelector('#state[data-state="serving"]', { timeout: 15000 });
      assert.equal(await page.title(), "zmqwamp status");
      const value = (id) => page.$eval(`#tile-${id} .value`, (e) => Number(e.dataset.value));
      const callsBefore = await value("calls-total");
      assert.equal(callsBefore, 0);
      assert.equal(await page.locator("#charts figure.chart svg path.line").count(), 13, "every chart's lines");

      // Calls from Node, through the bridge, to the echo REP: about 50 a second for a few samples.
      const ctx = zmq.Context(bridge.url, { realm: "zmqwamp", WebSocket });
      const req = ctx.Socket(zmq.REQ, echo.address);
      let running = true;
      let sent = 0;
      const traffic = (async () => {
        while (running) {
          assert.match(await req.request("hi", { timeout: 5000 }), /got this hi/);
          sent += 1;
          await new Promise((r) => setTimeout(r, 20));
        }
      })();
      try {
        // The tiles: the calls counted and a rate; the session open
        await waitUntil(async () => (await value("calls-total")) >= 50, 20000, "the page to count 50 calls");
        await waitUntil(async () => (await value("calls-per-second")) > 5, 10000, "a call rate on the page");
        assert.ok((await value("sessions")) >= 1);
        // ... and they keep moving with the next samples
        const seen = await value("calls-total");
        await waitUntil(async () => (await value("calls-total")) > seen, 10000, "the count to move on");
        // The endpoint's row, and the calls chart drawn from two samples or more
        const row = page.locator("#endpoints tbody tr", { hasText: echo.address });
        await row.waitFor({ timeout: 10000 });
        const cells = await row.locator("td").allTextContents();
        assert.equal(cells[2], "req");
        assert.equal(cells[3], "ok");
        assert.equal(cells[4], "open");
        const points = await page.$eval("#chart-calls path.s0", (p) => Number(p.dataset.points));
        assert.ok(points >= 2, `the calls chart has ${points} points`);
        assert.notEqual(await page.$eval("#chart-calls path.s0", (p) => p.getAttribute("d")), "");
      } finally {
        running = false;
        await traffic;
        await ctx.close();
      }
      assert.ok(sent >= 50);

      mkdirSync(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: SCREENSHOT, fullPage: true });

      // Every request the page made: the page, then status.json polled, all to the bridge.
      const polled = requests.filter((url) => url === `${origin}/status.json`).length;
      assert.ok(polled >= 3, `status.json polled ${polled} times`);
      assert.deepEqual(
        requests.filter((url) => new URL(url).origin !== origin),
        [],
        "requests to anywhere but the bridge",
      );
      assert.deepEqual(new Set(requests), new Set([`${origin}/status`, `${origin}/status.json`]));
      assert.deepEqual(problems, [], "no errors in the page");

      // And the browser enforces it: the page's CSP stops a fetch to another origin before it leaves.
      const blocked = await page.evaluate(
        () =>
          new Promise((resolve) => {
            document.addEventListener("securitypolicyviolation", (e) => resolve(e.effectiveDirective), { once: true });
            fetch("http://192.0.2.1/x").catch(() => {});
          }),
      );
      assert.equal(blocked, "connect-src");
      assert.ok(!requests.some((url) => url.startsWith("http://192.0.2.1")), "the blocked fetch made no request");
      await page.close();
    });
  },
);
