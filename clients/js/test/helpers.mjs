// Shared by the clients/js tests: a real `wsbridge ws2tcp` gateway, TCP and TLS echo targets, bounded waits.
//
// Env: WSBRIDGE_BIN (default ../../../target/debug/wsbridge).

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const BIN = process.env.WSBRIDGE_BIN || path.resolve(here, '../../../target/debug/wsbridge');
/** Every wait in the tests is bounded by this. */
export const WAIT_MS = 20_000;

/** `promise`, or a rejection after `ms` naming `what`. */
export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

export const listen = (server) => withTimeout(new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(0, '127.0.0.1', () => resolve(server.address().port));
}), WAIT_MS, 'listen');

export const closeServer = (server) => withTimeout(new Promise((r) => server.close(r)), WAIT_MS, 'server close');

/** A loopback port nothing listens on (bound, then released). */
export async function freePort() {
  const s = net.createServer();
  const port = await listen(s);
  await closeServer(s);
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

/** Starts `wsbridge ws2tcp --listen 127.0.0.1:<free> ...args`; resolves once it accepts connections. */
export async function startGateway(args) {
  assert.ok(existsSync(BIN), `wsbridge binary not found at ${BIN} (cargo build -p wsbridge-mio --bin wsbridge, or set WSBRIDGE_BIN)`);
  const port = await freePort();
  const argv = ['ws2tcp', '--listen', `127.0.0.1:${port}`, ...args];
  const child = spawn(BIN, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  const gw = { child, port, url: `ws://127.0.0.1:${port}/`, log: '', exited: null };
  child.stdout.on('data', (d) => { gw.log += d; });
  child.stderr.on('data', (d) => { gw.log += d; });
  child.on('exit', (code, signal) => { gw.exited = { code, signal }; });
  gw.stop = () => stopChild(child);
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    if (gw.exited) assert.fail(`wsbridge ${argv.join(' ')} exited ${JSON.stringify(gw.exited)} before listening:\n${gw.log}`);
    if (await canConnect(port)) return gw;
    if (Date.now() > deadline) {
      await gw.stop();
      assert.fail(`wsbridge ${argv.join(' ')} not accepting on ${port} after ${WAIT_MS} ms:\n${gw.log}`);
    }
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

/**
 * A TCP (or, with `tlsOptions`, TLS) echo target on loopback. `connections` counts accepted clients,
 * `ended` counts clients whose FIN arrived; `sockets` are the open ones.
 */
export async function startEcho(tlsOptions) {
  const echo = { connections: 0, ended: 0, sockets: new Set() };
  const onSocket = (sock) => {
    echo.connections++;
    echo.sockets.add(sock);
    sock.on('end', () => { echo.ended++; });
    sock.on('close', () => echo.sockets.delete(sock));
    sock.on('error', () => {});
    sock.pipe(sock);
  };
  echo.server = tlsOptions ? tls.createServer(tlsOptions, onSocket) : net.createServer(onSocket);
  echo.port = await listen(echo.server);
  echo.stop = async () => {
    for (const s of echo.sockets) s.destroy();
    await closeServer(echo.server);
  };
  return echo;
}

/** Waits (bounded) until `cond()` is true. */
export async function until(cond, what) {
  const deadline = Date.now() + WAIT_MS;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out after ${WAIT_MS} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Reads exactly `n` bytes from `reader` (bounded), as one Uint8Array. */
export async function readExactly(reader, n) {
  const out = new Uint8Array(n);
  let have = 0;
  while (have < n) {
    const { value, done } = await withTimeout(reader.read(), WAIT_MS, `read (${have}/${n} bytes so far)`);
    if (done) assert.fail(`stream ended after ${have} of ${n} bytes`);
    assert.ok(have + value.byteLength <= n, `got ${have + value.byteLength} bytes, expected ${n}`);
    out.set(value, have);
    have += value.byteLength;
  }
  return out;
}

/**
 * A throwaway CA and a leaf certificate for 127.0.0.1 and localhost, made by the `openssl` CLI (rustls
 * refuses a CA certificate as the server's own, hence two). Returns `{ caPath, key, cert, cleanup }`.
 */
export function makeCertificates() {
  const dir = mkdtempSync(path.join(tmpdir(), 'wsbridge-js-tls-'));
  const f = (name) => path.join(dir, name);
  const openssl = (...args) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: WAIT_MS });
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '2', '-subj', '/CN=wsbridge test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign');
  openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', f('leaf.key'), '-out', f('leaf.csr'), '-subj', '/CN=localhost');
  writeFileSync(f('leaf.ext'), [
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature',
    'extendedKeyUsage=serverAuth',
    'subjectAltName=DNS:localhost,IP:127.0.0.1',
  ].join('\n'));
  openssl('x509', '-req', '-in', f('leaf.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial',
    '-out', f('leaf.pem'), '-days', '2', '-extfile', f('leaf.ext'));
  return {
    caPath: f('ca.pem'),
    key: readFileSync(f('leaf.key')),
    cert: readFileSync(f('leaf.pem')),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}
