// The web console of `wsbridge ws2tcp --console` in a real browser: headless Chromium (Debian's
// /usr/bin/chromium, driven by playwright-core) opens the page the gateway itself serves at /, connects to a
// TCP echo target, sends text and hex, and reads both directions back from the hexdump; the client library
// the page imports (/wsbridge.mjs) does a 64 KiB binary round trip in the same page, under the page's CSP.
//
//   node --test tests/browser/*.test.mjs        (tests/browser/run.sh installs, builds and runs it)
//
// Env: WSBRIDGE_BIN (default ../../target/debug/wsbridge), CHROMIUM_BIN (default /usr/bin/chromium),
//      CONSOLE_SCREENSHOT (default /tmp/console.png).
// Nothing here is skipped: a browser that cannot start, a missing binary or a gateway that never listens fails the run.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { WAIT_MS, startEcho, startGateway, withTimeout } from '../../clients/js/test/helpers.mjs';

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const SCREENSHOT = process.env.CONSOLE_SCREENSHOT || '/tmp/console.png';
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

let context; // playwright persistent context (fresh --user-data-dir)
let userDataDir;
let gw; // wsbridge ws2tcp --console --allow 127.0.0.0/8
let echo;

/** A new page with its console errors, page errors and CSP violations collected in `problems`. */
async function openConsole(query = '', gateway = gw) {
  const page = await context.newPage();
  const problems = [];
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  const response = await page.goto(`http://127.0.0.1:${gateway.port}/${query}`, { timeout: WAIT_MS });
  await page.waitForSelector('#state:text("disconnected")', { timeout: WAIT_MS });
  return { page, response, problems };
}

/** The text of every hexdump entry of a direction (`tx` or `rx`), ASCII columns joined. */
const dumpText = (page, direction) => page.$$eval(`.entry.${direction} .ascii`, (els) => els.map((e) => e.textContent).join(''));
const dumpHex = (page, direction) => page.$$eval(`.entry.${direction} .hex`, (els) => els.map((e) => e.textContent).join(' ').replace(/\s+/g, ' '));

before(async () => {
  echo = await startEcho();
  gw = await startGateway(['--console', '--allow', '127.0.0.0/8']);
  assert.ok(existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM} (apt-get install chromium)`);
  userDataDir = mkdtempSync(path.join(tmpdir(), 'wsbridge-chromium-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: WAIT_MS,
    viewport: { width: 1100, height: 720 },
  });
});

after(async () => {
  if (context) await withTimeout(context.close(), WAIT_MS, 'close chromium').catch((e) => console.error(e));
  await gw?.stop();
  await echo?.stop();
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
});

test('console: connect, send text and hex, see both directions in the hexdump, disconnect', { timeout: 60_000 }, async () => {
  const { page, response, problems } = await openConsole();
  const headers = response.headers();
  assert.equal(response.status(), 200);
  assert.equal(headers['content-type'], 'text/html; charset=utf-8');
  assert.equal(headers['cache-control'], 'no-cache');
  assert.equal(headers['x-content-type-options'], 'nosniff');
  assert.match(headers['content-security-policy'], /^default-src 'none'; script-src 'self' 'sha256-/);
  assert.equal(await page.inputValue('#gateway'), `ws://127.0.0.1:${gw.port}/`);

  const connsBefore = echo.connections;
  await page.fill('#host', '127.0.0.1');
  await page.fill('#port', String(echo.port));
  await page.click('#connect');
  await page.waitForSelector('#state:text("connected")', { timeout: WAIT_MS });
  assert.equal(echo.connections - connsBefore, 1, 'the page reached the target through the gateway');

  await page.fill('#send-text', 'hello console');
  await page.press('#send-text', 'Enter'); // line end \n by default
  await page.waitForSelector('.entry.rx', { timeout: WAIT_MS });
  await page.waitForFunction(() => [...document.querySelectorAll('.entry.rx')]
    .reduce((n, e) => n + Number(e.dataset.bytes), 0) >= 14, null, { timeout: WAIT_MS });
  assert.equal(await dumpText(page, 'tx'), ' |hello console.|');
  assert.equal(await dumpText(page, 'rx'), ' |hello console.|');
  assert.match(await dumpHex(page, 'tx'), /^68 65 6c 6c 6f 20 63 6f 6e 73 6f 6c 65 0a/);
  assert.match(await page.textContent('.entry.tx .mark'), /→ sent 14 B/);
  assert.match(await page.textContent('.entry.rx .mark'), /← received 14 B/);
  assert.match(await page.textContent('.entry.rx .meta'), /^\d\d:\d\d:\d\d\.\d{3}/, 'timestamped');
  assert.match(await page.textContent('.entry.rx .off'), /^00000000/);

  await page.selectOption('#send-mode', 'hex');
  await page.fill('#send-text', 'de ad be ef 00 ff');
  await page.click('#send');
  await page.waitForFunction(() => document.querySelectorAll('.entry.rx').length >= 2
    && [...document.querySelectorAll('.entry.rx')].reduce((n, e) => n + Number(e.dataset.bytes), 0) >= 20,
  null, { timeout: WAIT_MS });
  assert.match(await dumpHex(page, 'rx'), /de ad be ef 00 ff/);
  assert.equal(await page.textContent('#counters'), '→ 20 B · ← 20 B');

  await page.screenshot({ path: SCREENSHOT, fullPage: true, timeout: WAIT_MS });

  const endedBefore = echo.ended;
  await page.click('#disconnect');
  await page.waitForSelector('#state:text("disconnected")', { timeout: WAIT_MS });
  await page.waitForSelector('.entry.info:has-text("closed: 1000")', { timeout: WAIT_MS });
  const deadline = Date.now() + WAIT_MS;
  while (echo.ended === endedBefore && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.ok(echo.ended > endedBefore, 'the target got its FIN');
  assert.equal(await page.isDisabled('#send'), true);
  assert.deepEqual(problems, [], 'no console errors or CSP violations');
  await page.close();
});

test("console: a denied target shows the gateway's reason and Close 1008", { timeout: 60_000 }, async () => {
  const { page, problems } = await openConsole('?host=10.1.2.3&port=80');
  assert.equal(await page.inputValue('#host'), '10.1.2.3');
  const connsBefore = echo.connections;
  await page.click('#connect');
  await page.waitForSelector('#state:text("failed")', { timeout: WAIT_MS });
  const error = await page.textContent('#error');
  assert.match(error, /not allowed/);
  assert.match(error, /close 1008/);
  assert.match(await page.textContent('.entry.error'), /connection failed: .*not allowed/);
  assert.equal(echo.connections, connsBefore);
  await page.screenshot({ path: SCREENSHOT.replace(/\.png$/, '-denied.png'), fullPage: true, timeout: WAIT_MS });
  assert.deepEqual(problems, []);
  await page.close();
});

test('console: with --path the page connects to that path', { timeout: 60_000 }, async () => {
  const pathed = await startGateway(['--console', '--path', '/gw', '--allow', '127.0.0.0/8']);
  try {
    const { page, problems } = await openConsole(`?host=127.0.0.1&port=${echo.port}`, pathed);
    assert.equal(await page.inputValue('#gateway'), `ws://127.0.0.1:${pathed.port}/gw`);
    await page.click('#connect');
    await page.waitForSelector('#state:text("connected")', { timeout: WAIT_MS });
    await page.click('#disconnect');
    await page.waitForSelector('#state:text("disconnected")', { timeout: WAIT_MS });
    assert.deepEqual(problems, []);
    await page.close();
  } finally {
    await pathed.stop();
  }
});

test('the page\'s wsbridge.mjs does a 64 KiB binary round trip in the browser', { timeout: 60_000 }, async () => {
  const { page, problems } = await openConsole();
  const result = await page.evaluate(async (port) => {
    const { connect } = await import('/wsbridge.mjs');
    const sock = await connect(`ws://${location.host}/`, { host: '127.0.0.1', port, timeoutMs: 10_000 });
    const data = new Uint8Array(65536);
    for (let i = 0; i < data.length; i++) data[i] = (i * 31 + (i >> 8)) & 0xff;
    const writer = sock.writable.getWriter();
    const reader = sock.readable.getReader();
    const got = new Uint8Array(data.length);
    let have = 0;
    let chunks = 0;
    await writer.write(data);
    while (have < data.length) {
      const { value, done } = await reader.read();
      if (done) break;
      got.set(value, have);
      have += value.byteLength;
      chunks++;
    }
    sock.close();
    const closed = await sock.closed;
    return { have, chunks, equal: got.every((b, i) => b === data[i]), closed, hasWebSocketStream: 'WebSocketStream' in globalThis };
  }, echo.port);
  assert.equal(result.have, 65536);
  assert.equal(result.equal, true);
  assert.equal(result.closed.code, 1000);
  assert.deepEqual(problems, []);
  console.log(`browser wsbridge.mjs: 64 KiB back in ${result.chunks} chunk(s), closed ${JSON.stringify(result.closed)}`);
  await page.close();
});
