// A real browser against `wsbridge ws2tcp`: headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core)
// opens a page served from 127.0.0.1 that talks the Socket2Web handshake through the gateway to a TCP echo target.
//
//   node --test tests/browser/*.test.mjs        (tests/browser/run.sh installs, builds and runs it)
//
// Env: WSBRIDGE_BIN (default ../../target/debug/wsbridge), CHROMIUM_BIN (default /usr/bin/chromium),
//      WSBRIDGE_REPORTS (default ../../reports; the echo page's screenshot goes there).
// Nothing here is skipped: a browser that cannot start, a missing binary or a gateway that never listens fails the run.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const BIN = process.env.WSBRIDGE_BIN || path.resolve(here, '../../target/debug/wsbridge');
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const REPORTS = process.env.WSBRIDGE_REPORTS || path.resolve(here, '../../reports');
const WAIT_MS = 20_000; // every wait below is bounded by this
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
const PAGE = readFileSync(path.join(here, 'ws2tcp.html'));

const children = [];
const cleanups = [];
let context; // playwright persistent context (fresh --user-data-dir)
let pageServer, pagePort;
let echo; // { server, port, connections, bytes }

const withTimeout = (promise, ms, what) => {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms); }),
  ]).finally(() => clearTimeout(timer));
};

const listen = (server) => withTimeout(new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(0, '127.0.0.1', () => resolve(server.address().port));
}), WAIT_MS, 'listen');

async function freePort() {
  const s = net.createServer();
  const port = await listen(s);
  await new Promise((r) => s.close(r));
  return port;
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.setTimeout(1000);
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
    s.once('timeout', () => { s.destroy(); resolve(false); });
  });
}

/** Starts `wsbridge ws2tcp --listen 127.0.0.1:<free> ...args` and waits until it accepts TCP connections. */
async function startGateway(args) {
  assert.ok(existsSync(BIN), `wsbridge binary not found at ${BIN} (build it or set WSBRIDGE_BIN)`);
  const port = await freePort();
  const argv = ['ws2tcp', '--listen', `127.0.0.1:${port}`, ...args];
  const child = spawn(BIN, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const gw = { child, port, url: `ws://127.0.0.1:${port}/`, log: '', exited: null };
  child.stdout.on('data', (d) => { gw.log += d; });
  child.stderr.on('data', (d) => { gw.log += d; });
  child.on('exit', (code, signal) => { gw.exited = { code, signal }; });
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    if (gw.exited) assert.fail(`wsbridge ${argv.join(' ')} exited ${JSON.stringify(gw.exited)} before listening:\n${gw.log}`);
    if (await canConnect(port)) return gw;
    if (Date.now() > deadline) assert.fail(`wsbridge ${argv.join(' ')} not accepting on ${port} after ${WAIT_MS} ms:\n${gw.log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function stopChild(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 3000);
  await withTimeout(exited, WAIT_MS, 'child exit').finally(() => clearTimeout(t));
}

/** Opens the page in Chromium, waits (bounded) for its verdict, returns { page, result }. */
async function runPage(gw, { ip = '127.0.0.1', port, expect }) {
  const page = await context.newPage();
  const console_ = [];
  page.on('console', (m) => console_.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => console_.push(`pageerror: ${e.message}`));
  const q = new URLSearchParams({ ws: gw.url, ip, port: String(port), expect });
  await page.goto(`http://127.0.0.1:${pagePort}/ws2tcp.html?${q}`, { timeout: WAIT_MS });
  try {
    await page.waitForSelector('#result[data-done]', { state: 'attached', timeout: WAIT_MS });
  } catch (e) {
    const partial = await page.evaluate(() => document.body.innerText).catch(() => '?');
    assert.fail(`page gave no verdict in ${WAIT_MS} ms: ${e.message}\npage:\n${partial}\nconsole:\n${console_.join('\n')}\ngateway:\n${gw.log}`);
  }
  const result = JSON.parse(await page.textContent('#result'));
  return { page, result, diag: `\npage events:\n${result.events.join('\n')}\nconsole:\n${console_.join('\n')}\ngateway log:\n${gw.log}` };
}

/** A raw upgrade request with a given Origin; resolves to the HTTP status (101 on upgrade). */
function upgradeStatus(port, origin) {
  return withTimeout(new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1', port, path: '/', headers: {
        Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==', Origin: origin,
      },
    });
    req.on('upgrade', (res, socket) => { socket.destroy(); resolve(res.statusCode); });
    req.on('response', (res) => { res.resume(); resolve(res.statusCode); });
    req.on('error', reject);
    req.end();
  }), WAIT_MS, `upgrade with Origin ${origin}`);
}

before(async () => {
  // TCP echo target; counts what it saw so a test can prove the bytes really reached it (or never did).
  echo = { connections: 0, bytes: 0, sockets: new Set() };
  echo.server = net.createServer((sock) => {
    echo.connections++; echo.sockets.add(sock);
    sock.on('data', (d) => { echo.bytes += d.length; });
    sock.on('close', () => echo.sockets.delete(sock));
    sock.on('error', () => {});
    sock.pipe(sock);
  });
  echo.port = await listen(echo.server);

  pageServer = http.createServer((req, res) => {
    if (req.url.startsWith('/ws2tcp.html')) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      res.end(PAGE);
    } else {
      res.writeHead(404); res.end();
    }
  });
  pagePort = await listen(pageServer);

  assert.ok(existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM} (apt-get install chromium)`);
  const userDataDir = mkdtempSync(path.join(tmpdir(), 'wsbridge-chromium-'));
  cleanups.push(() => rmSync(userDataDir, { recursive: true, force: true }));
  // launchPersistentContext: playwright refuses --user-data-dir in args; this is how a fresh one is given.
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: WAIT_MS,
    viewport: { width: 1000, height: 720 },
  });
  let version = context.browser()?.version();
  if (!version) {
    const probe = await context.newPage();
    version = await probe.evaluate(() => navigator.userAgent);
    await probe.close();
  }
  console.log(`chromium ${version}, playwright-core ${JSON.parse(readFileSync(path.join(here, 'node_modules/playwright-core/package.json'))).version}, wsbridge ${BIN}`);
});

after(async () => {
  if (context) await withTimeout(context.close(), WAIT_MS, 'close chromium').catch((e) => console.error(e));
  for (const c of children) await stopChild(c).catch((e) => console.error(e));
  for (const s of echo?.sockets ?? []) s.destroy();
  await Promise.all([echo?.server, pageServer].filter(Boolean).map((s) => new Promise((r) => s.close(r))));
  for (const f of cleanups) f();
});

test('echo: Text and 64 KiB Binary through ws2tcp to a TCP echo target, byte for byte', { timeout: 60_000 }, async () => {
  const gw = await startGateway(['--allow', '127.0.0.1/32']);
  const before_ = { ...echo };
  const { page, result, diag } = await runPage(gw, { port: echo.port, expect: 'echo' });
  mkdirSync(REPORTS, { recursive: true });
  await page.screenshot({ path: path.join(REPORTS, 'browser-ws2tcp.png'), fullPage: true, timeout: WAIT_MS });
  assert.equal(result.ok, true, `page verdict: ${result.problem}${diag}`);
  assert.equal(result.origin, `http://127.0.0.1:${pagePort}`);
  assert.ok(result.greeting.supported_protocols.tcp, 'greeting lists tcp');
  assert.equal(result.status.status, 'Successfully connected, starting to proxy');
  assert.deepEqual(
    { text: result.textEcho.received, match: result.textEcho.match },
    { text: 'hello from chromium', match: true },
  );
  assert.equal(result.binaryEcho.bytes, 65536);
  assert.equal(result.binaryEcho.match, true);
  assert.equal(result.close.code, 1000, diag);
  // The bytes went through a real TCP connection to the target.
  assert.equal(echo.connections - before_.connections, 1);
  assert.equal(echo.bytes - before_.bytes, 'hello from chromium'.length + 65536);
  console.log(`echo: text ${result.textEcho.ms} ms, 64 KiB binary ${result.binaryEcho.ms} ms in ${result.binaryEcho.frames} frame(s), page total ${result.elapsedMs} ms`);
  await page.close();
});

test('denied target: failure status, then Close 1008 with a reason', { timeout: 60_000 }, async (t) => {
  // The echo target listens (on an ephemeral port, > 1000), so only the policy can stop the connection.
  assert.ok(echo.port > 1000);
  const cases = [
    ['port outside --allow 127.0.0.1/32:1-1000', ['--allow', '127.0.0.1/32:1-1000']],
    ['loopback denied by default (no --allow)', []],
  ];
  for (const [name, args] of cases) {
    await t.test(name, async () => {
      const gw = await startGateway(args);
      const connsBefore = echo.connections;
      const { page, result, diag } = await runPage(gw, { port: echo.port, expect: 'denied' });
      assert.equal(result.ok, true, `page verdict: ${result.problem}${diag}`);
      assert.equal(result.status.status, 'Connection failed, cancelling proxy');
      assert.ok(result.status.reason, 'failure status carries a reason');
      assert.equal(result.close.code, 1008);
      assert.ok(result.close.reason.length > 0, 'close reason');
      assert.equal(echo.connections, connsBefore, 'the gateway never connected to the denied target');
      console.log(`denied (${name}): status reason ${JSON.stringify(result.status.reason)}, close 1008 ${JSON.stringify(result.close.reason)}`);
      await page.close();
    });
  }
});

test('--allow-origin: the page from another origin is refused (403 → browser close 1006)', { timeout: 60_000 }, async () => {
  const gw = await startGateway(['--allow', '127.0.0.1/32', '--allow-origin', 'http://allowed.example']);
  const pageOrigin = `http://127.0.0.1:${pagePort}`;
  // Control from node: the gateway is up and decides by Origin alone.
  assert.equal(await upgradeStatus(gw.port, 'http://allowed.example'), 101);
  assert.equal(await upgradeStatus(gw.port, pageOrigin), 403);
  const connsBefore = echo.connections;
  const { page, result, diag } = await runPage(gw, { port: echo.port, expect: 'refused' });
  assert.equal(result.origin, pageOrigin);
  assert.equal(result.ok, true, `page verdict: ${result.problem}${diag}`);
  assert.equal(result.greeting, null);
  assert.equal(result.error, true);
  assert.equal(result.close.code, 1006);
  assert.equal(echo.connections, connsBefore);
  await page.close();
});
