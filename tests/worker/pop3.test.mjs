// The example Cloudflare Worker (examples/worker/worker.js, a POP3 server) run in workerd, behind two real
// `wsbridge tcp2ws` listeners (implicit TLS and STARTTLS), driven by real curl — and, for what curl cannot do
// (split and pipelined commands, an over-long line, plaintext pipelined after STLS), by a raw TCP/TLS client.
//
//   node --test tests/worker/*.test.mjs        (tests/worker/run.sh installs, builds and runs it)
//
// Env: WSBRIDGE_BIN (default ../../target/debug/wsbridge), WORKERD_BIN (default node_modules/.bin/workerd).
// Everything listens on 127.0.0.1 on free ports; a throwaway CA and a server certificate for the IP SAN
// 127.0.0.1 are made with the openssl CLI in a temp dir, and curl verifies them (--cacert, never -k).
// Nothing is skipped: a workerd, curl, openssl or wsbridge that cannot start fails the run. Every wait is bounded.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import http from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const BIN = process.env.WSBRIDGE_BIN || path.resolve(here, '../../target/debug/wsbridge');
const WORKERD = process.env.WORKERD_BIN || path.resolve(here, 'node_modules/.bin/workerd');
const CONFIG = path.resolve(here, '../../examples/worker/workerd.capnp');
const WAIT_MS = 20_000; // every wait below is bounded by this
const CURL_MAX_TIME = 15; // seconds, curl's own limit; the process is killed after WAIT_MS anyway

// What the Worker's maildrop must deliver, written out independently of worker.js: CRLF line ends, dot-lines
// that RETR must dot-stuff (and curl un-stuff), a lone "." line, and UTF-8 (LIST sizes are octets).
const MESSAGE_1 = Buffer.from(
  'From: Bob <bob@example.test>\r\nTo: Alice <alice@example.test>\r\nSubject: Hello through the bridge\r\n' +
    'Message-ID: <1@example.test>\r\n\r\nHello Alice,\r\n.this line starts with a dot\r\n..and this one with two\r\n' +
    '\r\nBob\r\n',
);
const MESSAGE_2 = Buffer.from(
  'From: Carol <carol@example.test>\r\nTo: Alice <alice@example.test>\r\nSubject: Short\r\n' +
    'Message-ID: <2@example.test>\r\n\r\nShort.\r\n',
);
const MESSAGE_3 = Buffer.from(
  'From: Dan <dan@example.test>\r\nTo: Alice <alice@example.test>\r\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n' +
    'Message-ID: <3@example.test>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGrüße aus dem Worker.\r\n.\r\n' +
    'The line above is a lone dot; it must not end the message.\r\n',
);
// The exact scan listing, literally: if a size were counted in JS characters rather than octets, 3 would differ.
const LIST_ALL = '1 205\r\n2 122\r\n3 261\r\n';

const children = [];
let dir; // temp dir with ca.pem, server.pem, server.key
let workerdPort, implicit, starttls; // implicit/starttls: { port, log }
let workerdLog = { text: '' };

// ---- helpers ----

const withTimeout = (promise, ms, what) => {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms); }),
  ]).finally(() => clearTimeout(timer));
};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function freePort() {
  const s = net.createServer();
  const port = await withTimeout(new Promise((resolve, reject) => {
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => resolve(s.address().port));
  }), WAIT_MS, 'listen');
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

/** Runs a program to completion (bounded); resolves to { code, stdout: Buffer, stderr: string }. */
function run(cmd, args, { timeout = WAIT_MS } = {}) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { encoding: 'buffer', timeout, killSignal: 'SIGKILL', maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') {
        return reject(new Error(`${cmd} ${args.join(' ')}: ${err.message} (signal ${err.signal})\n${stderr}`));
      }
      resolve({ code: err ? err.code : 0, stdout, stderr: stderr.toString() });
    });
  });
}

/** Spawns a long-running child, keeps its output, waits until `port` accepts TCP connections. */
async function startDaemon(name, cmd, args, port) {
  assert.ok(existsSync(cmd), `${name} not found at ${cmd}`);
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const d = { child, port, log: '', exited: null };
  child.stdout.on('data', (x) => { d.log += x; });
  child.stderr.on('data', (x) => { d.log += x; });
  child.on('exit', (code, signal) => { d.exited = { code, signal }; });
  child.on('error', (e) => { d.exited = { error: e.message }; });
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    if (d.exited) assert.fail(`${name} (${cmd} ${args.join(' ')}) exited ${JSON.stringify(d.exited)} before listening:\n${d.log}`);
    if (await canConnect(port)) return d;
    if (Date.now() > deadline) assert.fail(`${name} not accepting on ${port} after ${WAIT_MS} ms:\n${d.log}`);
    await sleep(100);
  }
}

async function stopChild(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 3000);
  await withTimeout(exited, WAIT_MS, 'child exit').finally(() => clearTimeout(t));
}

/** curl with the test CA (never -k); resolves to { code, stdout: Buffer, stderr }. */
function curl(...args) {
  return run('curl', ['-sS', '--max-time', String(CURL_MAX_TIME), ...args]);
}

const logs = () => `\n--- workerd:\n${workerdLog.text}\n--- wsbridge implicit TLS:\n${implicit?.log}\n--- wsbridge STARTTLS:\n${starttls?.log}`;

/** A raw client: collects what the server sends, lets a test wait (bounded) for a string in it. */
class Raw {
  constructor(socket) {
    this.socket = socket;
    this.data = Buffer.alloc(0);
    this.closed = false;
    this.waiters = new Set();
    this.attach(socket);
  }

  attach(socket) {
    this.socket = socket;
    socket.on('data', (d) => { this.data = Buffer.concat([this.data, d]); this.wake(); });
    socket.on('end', () => { this.closed = true; this.wake(); });
    socket.on('close', () => { this.closed = true; this.wake(); });
    socket.on('error', () => { this.closed = true; this.wake(); });
  }

  wake() { for (const w of this.waiters) w(); }

  /** Waits until the received text contains `s`; returns everything received so far and clears it. */
  async until(s, what = JSON.stringify(s)) {
    await withTimeout(new Promise((resolve, reject) => {
      const check = () => {
        if (this.data.includes(s)) { this.waiters.delete(check); resolve(); }
        else if (this.closed) { this.waiters.delete(check); reject(new Error(`closed before ${what}; got ${JSON.stringify(this.data.toString())}`)); }
      };
      this.waiters.add(check);
      check();
    }), WAIT_MS, `${what}; got ${JSON.stringify(this.data.toString())}`);
    const out = this.data.toString();
    this.data = Buffer.alloc(0);
    return out;
  }

  async untilClosed() {
    await withTimeout(new Promise((resolve) => {
      const check = () => { if (this.closed) { this.waiters.delete(check); resolve(); } };
      this.waiters.add(check);
      check();
    }), WAIT_MS, 'server close');
    return this.data.toString();
  }

  write(s) { this.socket.write(s); }
}

function connectTcp(port) {
  return withTimeout(new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => resolve(s));
    s.once('error', reject);
  }), WAIT_MS, `connect to ${port}`);
}

function connectTls(options) {
  return withTimeout(new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', ca: readFileSync(path.join(dir, 'ca.pem')), ...options }, () => resolve(s));
    s.once('error', reject);
  }), WAIT_MS, 'TLS handshake');
}

// ---- setup and teardown ----

before(async () => {
  // Tools first: a missing one is a failure that says how to get it.
  const v = await run('curl', ['-V']).catch((e) => assert.fail(`curl is required (apt-get install curl): ${e.message}`));
  const protocols = v.stdout.toString().match(/^Protocols: (.*)$/m)?.[1].split(' ') ?? [];
  for (const p of ['pop3', 'pop3s']) assert.ok(protocols.includes(p), `this curl does not speak ${p}: ${v.stdout}`);
  await run('openssl', ['version']).catch((e) => assert.fail(`openssl is required (apt-get install openssl): ${e.message}`));

  // A throwaway CA and a server certificate for the IP address 127.0.0.1 (IP SAN, which curl checks).
  dir = mkdtempSync(path.join(tmpdir(), 'wsbridge-worker-'));
  const f = (n) => path.join(dir, n);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  const ok = async (args) => {
    const r = await run('openssl', args);
    assert.equal(r.code, 0, `openssl ${args.join(' ')}:\n${r.stderr}`);
  };
  await ok(['req', '-x509', ...ec, '-days', '2', '-subj', '/CN=wsbridge worker test CA', '-keyout', f('ca.key'), '-out', f('ca.pem'),
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  await ok(['req', ...ec, '-subj', '/CN=127.0.0.1', '-keyout', f('server.key'), '-out', f('server.csr')]);
  writeFileSync(f('ext.cnf'), 'subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n' +
    'keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n');
  await ok(['x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial',
    '-days', '2', '-extfile', f('ext.cnf'), '-out', f('server.pem')]);

  // workerd with the example's own config, on a free port instead of 8787.
  workerdPort = await freePort();
  const wd = await startDaemon('workerd', WORKERD, ['serve', CONFIG, '--socket-addr', `http=127.0.0.1:${workerdPort}`], workerdPort);
  workerdLog = { get text() { return wd.log; } };
  // It is the Worker answering (not just a socket): a plain GET gets its 426 "connect with a WebSocket".
  const status = await withTimeout(new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: workerdPort, path: '/' }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ code: res.statusCode, body }));
    }).on('error', reject);
  }), WAIT_MS, 'GET / from workerd');
  assert.equal(status.code, 426, `workerd answered ${status.code}: ${status.body}${logs()}`);
  assert.match(status.body, /POP3 backend for wsbridge tcp2ws/);

  const backend = ['--backend', `ws://127.0.0.1:${workerdPort}/`];
  const cert = ['--tls-cert', f('server.pem'), '--tls-key', f('server.key')];
  let port = await freePort();
  implicit = await startDaemon('wsbridge (implicit TLS)', BIN, ['tcp2ws', '--listen', `127.0.0.1:${port}`, ...cert, ...backend], port);
  port = await freePort();
  starttls = await startDaemon('wsbridge (STARTTLS)', BIN, ['tcp2ws', '--listen', `127.0.0.1:${port}`, '--starttls', ...cert, ...backend], port);
});

after(async () => {
  await Promise.allSettled(children.map(stopChild));
  if (dir) rmSync(dir, { recursive: true, force: true });
});
// Should the runner itself die, take the daemons along.
process.on('exit', () => { for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL'); });

// ---- curl over implicit TLS (POP3S) ----

test('the expected maildrop is what the listing says (sizes in octets)', () => {
  assert.equal(LIST_ALL, [MESSAGE_1, MESSAGE_2, MESSAGE_3].map((m, i) => `${i + 1} ${m.length}\r\n`).join(''));
});

test('curl pop3s: LIST over implicit TLS lists the three messages, and curl verified the certificate', async () => {
  const base = `pop3s://127.0.0.1:${implicit.port}/`;
  const r = await curl('-v', base, '--cacert', path.join(dir, 'ca.pem'), '-u', 'alice:secret');
  assert.equal(r.code, 0, `curl failed: ${r.stderr}${logs()}`);
  assert.equal(r.stdout.toString(), LIST_ALL);
  assert.match(r.stderr, /SSL certificate verify ok/, r.stderr);
  assert.match(r.stderr, /IP address "127\.0\.0\.1" matched|subjectAltName.*127\.0\.0\.1/, r.stderr);

  // Without the test CA the same URL fails verification (60): curl really checks, the pass above is not -k.
  const untrusted = await curl(base, '-u', 'alice:secret');
  assert.equal(untrusted.code, 60, `expected CURLE_PEER_FAILED_VERIFICATION: ${untrusted.stderr}`);
  assert.equal(untrusted.stdout.length, 0);
});

test('curl pop3s: RETR 1 and RETR 3 are byte-exact (dot-stuffing, a lone ".", UTF-8)', async () => {
  for (const [n, want] of [[1, MESSAGE_1], [3, MESSAGE_3]]) {
    const r = await curl(`pop3s://127.0.0.1:${implicit.port}/${n}`, '--cacert', path.join(dir, 'ca.pem'), '-u', 'alice:secret');
    assert.equal(r.code, 0, `curl RETR ${n} failed: ${r.stderr}${logs()}`);
    assert.equal(Buffer.compare(r.stdout, want), 0, `RETR ${n}: got ${JSON.stringify(r.stdout.toString())}`);
  }
  const missing = await curl(`pop3s://127.0.0.1:${implicit.port}/4`, '--cacert', path.join(dir, 'ca.pem'), '-u', 'alice:secret');
  assert.notEqual(missing.code, 0, 'RETR of a message that does not exist succeeded');
  assert.equal(missing.stdout.length, 0);
});

test('curl pop3s: a wrong password is refused with curl\'s login error', async () => {
  const r = await curl('-v', `pop3s://127.0.0.1:${implicit.port}/1`, '--cacert', path.join(dir, 'ca.pem'), '-u', 'alice:wrong');
  assert.equal(r.code, 67, `expected CURLE_LOGIN_DENIED (67), got ${r.code}: ${r.stderr}`);
  assert.match(r.stderr, /-ERR \[AUTH\] invalid user or password/);
  assert.equal(r.stdout.length, 0);
});

test('curl pop3s: DELE marks within the session, QUIT applies it, and the maildrop is per connection', async () => {
  const ca = ['--cacert', path.join(dir, 'ca.pem'), '-u', 'alice:secret'];
  const url = `pop3s://127.0.0.1:${implicit.port}/`;
  // One curl, two transfers on one reused connection: `DELE 1` (no body: -I), then LIST.
  const r = await curl('-v', ...ca, url, '-X', 'DELE 1', '-I', '--next', ...ca, url);
  assert.equal(r.code, 0, `curl failed: ${r.stderr}${logs()}`);
  assert.match(r.stderr, /> DELE 1\r?\n[^]*< \+OK message 1 deleted/, r.stderr);
  assert.match(r.stderr, /Re-using existing connection/, 'the LIST must run in the same POP3 session as the DELE');
  assert.equal(r.stdout.toString(), '2 122\r\n3 261\r\n', 'message 1 is gone from the listing after DELE');
  // curl sends QUIT when it cleans up, without tracing it; the Worker's log says what UPDATE did.
  const deadline = Date.now() + WAIT_MS;
  while (!/pop3 conn=\S+ QUIT: 1 deleted, 2 left/.test(workerdLog.text)) {
    assert.ok(Date.now() < deadline, `no "QUIT: 1 deleted, 2 left" in the Worker's log${logs()}`);
    await sleep(50);
  }

  // A new connection sees the full maildrop again: the Worker keeps the mailbox per connection (a demo; a
  // real server would keep it in a Durable Object), so DELE is never persisted.
  const fresh = await curl(url, ...ca);
  assert.equal(fresh.code, 0, fresh.stderr);
  assert.equal(fresh.stdout.toString(), LIST_ALL);
});

// ---- curl over STARTTLS (STLS) ----

test('curl pop3 --ssl-reqd: STLS through the bridge, then login and LIST under TLS', async () => {
  const r = await curl('-v', `pop3://127.0.0.1:${starttls.port}/`, '--ssl-reqd', '--cacert', path.join(dir, 'ca.pem'), '-u', 'alice:secret');
  assert.equal(r.code, 0, `curl failed: ${r.stderr}${logs()}`);
  assert.equal(r.stdout.toString(), LIST_ALL);
  const e = r.stderr;
  const stls = e.indexOf('> STLS');
  const begin = e.indexOf('< +OK Begin TLS negotiation');
  const verified = e.indexOf('SSL certificate verify ok');
  const user = e.indexOf('> USER alice');
  assert.ok(stls >= 0 && stls < begin && begin < verified && verified < user, `STLS, TLS, then USER:\n${e}`);
  // Before TLS CAPA offered STLS and not USER; after TLS USER and not STLS.
  const capas = [...e.matchAll(/< \+OK Capability list follows\r?\n((?:< .*\r?\n)*?)< \.\r?\n/g)].map((m) => m[1]);
  assert.equal(capas.length, 2, `two CAPA answers expected:\n${e}`);
  assert.match(capas[0], /< STLS/);
  assert.doesNotMatch(capas[0], /< USER/);
  assert.match(capas[1], /< USER/);
  assert.doesNotMatch(capas[1], /< STLS/);

  const retr = await curl(`pop3://127.0.0.1:${starttls.port}/1`, '--ssl-reqd', '--cacert', path.join(dir, 'ca.pem'), '-u', 'alice:secret');
  assert.equal(retr.code, 0, retr.stderr);
  assert.equal(Buffer.compare(retr.stdout, MESSAGE_1), 0, JSON.stringify(retr.stdout.toString()));
});

test('curl pop3 without --ssl-reqd on the STARTTLS listener: refused cleanly, no credentials in plaintext', async () => {
  // Choice (see worker.js): before TLS the Worker does not offer USER and refuses USER/PASS, so curl, which
  // does not ask for STLS unless told to, stops with "no known authentication mechanisms" — quickly, and
  // without ever sending the user name or the password in the clear.
  const started = Date.now();
  const r = await curl('-v', `pop3://127.0.0.1:${starttls.port}/`, '-u', 'alice:secret');
  assert.equal(r.code, 67, `expected CURLE_LOGIN_DENIED (67), got ${r.code}: ${r.stderr}`);
  assert.ok(Date.now() - started < 5000, 'a refusal, not a timeout');
  assert.match(r.stderr, /No known authentication mechanisms supported/);
  assert.doesNotMatch(r.stderr, /> (USER|PASS)/);
  assert.equal(r.stdout.length, 0);

  // --ssl (use TLS if offered) takes the STLS the Worker offers and then works.
  const opportunistic = await curl(`pop3://127.0.0.1:${starttls.port}/`, '--ssl', '--cacert', path.join(dir, 'ca.pem'), '-u', 'alice:secret');
  assert.equal(opportunistic.code, 0, opportunistic.stderr);
  assert.equal(opportunistic.stdout.toString(), LIST_ALL);
});

// ---- a raw client, for what curl does not do ----

test('raw POP3S: split and pipelined commands, an over-long line, TOP, UIDL, RSET, and QUIT closes', async () => {
  const c = new Raw(await connectTls({ port: implicit.port }));
  try {
    assert.match(await c.until('\r\n', 'greeting'), /^\+OK POP3 server ready/);
    // A command split across writes (so across frames), then several commands in one write.
    c.write('US');
    await sleep(100);
    c.write('ER ali');
    await sleep(100);
    c.write('ce\r\nPASS secret\r\nSTAT\r\nLIST 2\r\nUIDL\r\n');
    const got = await c.until('\r\n.\r\n', 'UIDL listing');
    assert.equal(got, '+OK send PASS\r\n+OK alice\'s maildrop has 3 messages (588 octets)\r\n+OK 3 588\r\n+OK 2 122\r\n' +
      '+OK unique-id listing follows\r\n1 msg-1\r\n2 msg-2\r\n3 msg-3\r\n.\r\n');
    // A line over 1 KiB: refused once, its tail (up to its LF) discarded, the next command works.
    c.write(`NOOP ${'x'.repeat(3000)}`);
    assert.equal(await c.until('\r\n', 'line too long'), '-ERR line too long\r\n');
    c.write(`${'y'.repeat(500)}\r\nNOOP\r\n`);
    assert.equal(await c.until('\r\n', 'NOOP after the long line'), '+OK\r\n');
    // TOP 1 0: headers and the blank line only; TOP 3 1: one body line. Then DELE, RSET, wrong numbers.
    c.write('TOP 1 0\r\n');
    assert.equal(await c.until('\r\n.\r\n'), `+OK top of message follows\r\n${MESSAGE_1.toString().split('\r\n\r\n')[0]}\r\n\r\n.\r\n`);
    c.write('TOP 3 2\r\n');
    assert.match(await c.until('\r\n.\r\n'), /\r\n\r\nGrüße aus dem Worker\.\r\n\.\.\r\n\.\r\n$/);
    c.write('DELE 2\r\nRETR 2\r\nLIST 0\r\nLIST 9\r\nRSET\r\nLIST 2\r\n');
    assert.equal(await c.until('+OK 2 122\r\n'), '+OK message 2 deleted\r\n-ERR no such message\r\n-ERR no such message\r\n' +
      '-ERR no such message\r\n+OK maildrop has 3 messages (588 octets)\r\n+OK 2 122\r\n');
    c.write('USER bob\r\nFOO\r\nQUIT\r\n');
    const tail = await c.untilClosed();
    assert.equal(tail, '-ERR already authenticated\r\n-ERR unknown command\r\n+OK bye (0 messages deleted, 3 left)\r\n');
  } finally {
    c.socket.destroy();
  }
});

test('raw POP3 STLS: plaintext pipelined after STLS is never executed (CVE-2011-0411 class)', async () => {
  const plain = await connectTcp(starttls.port);
  const c = new Raw(plain);
  let secure;
  try {
    assert.match(await c.until('\r\n', 'greeting'), /^\+OK POP3 server ready/);
    // Plaintext USER is refused before TLS.
    c.write('USER alice\r\n');
    assert.match(await c.until('\r\n'), /^-ERR \[AUTH\] plaintext authentication is disabled/);
    // STLS with an injected command behind it in the same segment: only the STLS reply comes back in clear.
    c.write('STLS\r\nCAPA\r\n');
    assert.equal(await c.until('+OK Begin TLS negotiation\r\n'), '+OK Begin TLS negotiation\r\n');
    await sleep(200);
    assert.equal(c.data.length, 0, `plaintext after the STLS reply: ${JSON.stringify(c.data.toString())}`);
    plain.removeAllListeners('data');
    secure = await connectTls({ socket: plain });
    const s = new Raw(secure);
    // Under TLS the injected CAPA must not have been answered; our own CAPA is the first answer we see.
    s.write('NOOP\r\n');
    assert.equal(await s.until('\r\n', 'NOOP under TLS'), '-ERR authenticate first\r\n');
    s.write('CAPA\r\nUSER alice\r\nPASS secret\r\nSTLS\r\nSTAT\r\nQUIT\r\n');
    const got = await s.untilClosed();
    assert.match(got, /^\+OK Capability list follows\r\nUSER\r\n/);
    assert.ok(got.endsWith('+OK send PASS\r\n+OK alice\'s maildrop has 3 messages (588 octets)\r\n' +
      '-ERR STLS is only valid before authentication\r\n+OK 3 588\r\n+OK bye (0 messages deleted, 3 left)\r\n'), got);
  } finally {
    plain.destroy();
    secure?.destroy();
  }
});

test('raw POP3S: three wrong passwords close the connection', async () => {
  const c = new Raw(await connectTls({ port: implicit.port }));
  try {
    await c.until('\r\n', 'greeting');
    c.write('PASS x\r\nUSER alice\r\nPASS a\r\nUSER alice\r\nPASS b b\r\nUSER alice\r\nPASS secret \r\n');
    const got = await c.untilClosed();
    assert.equal(got, '-ERR USER first\r\n' + '+OK send PASS\r\n-ERR [AUTH] invalid user or password\r\n'.repeat(3));
  } finally {
    c.socket.destroy();
  }
});

test('a client that half-closes right after RETR gets the whole answer (--half-close close and eof)', async () => {
  // close (the default): the client's FIN becomes Close(1000) after its data; the Worker has answered RETR
  // before it sees the Close, and workerd sends in order. eof: the FIN becomes {"type":"eof"}; the Worker
  // closes (no QUIT, so no UPDATE) after its answer.
  const port = await freePort();
  const eofBridge = await startDaemon('wsbridge (--half-close eof)', BIN, ['tcp2ws', '--listen', `127.0.0.1:${port}`, '--half-close', 'eof',
    '--tls-cert', path.join(dir, 'server.pem'), '--tls-key', path.join(dir, 'server.key'), '--backend', `ws://127.0.0.1:${workerdPort}/`], port);
  for (const [mode, p] of [['close', implicit.port], ['eof', eofBridge.port]]) {
    const c = new Raw(await connectTls({ port: p }));
    try {
      c.socket.end('USER alice\r\nPASS secret\r\nRETR 1\r\n');
      const got = await c.untilClosed();
      const want = '+OK send PASS\r\n+OK alice\'s maildrop has 3 messages (588 octets)\r\n+OK 205 octets\r\n' +
        `${MESSAGE_1.toString().replace(/^\./gm, '..')}.\r\n`;
      assert.equal(got.slice(got.indexOf('\r\n') + 2), want, `--half-close ${mode}${logs()}\n--- eof bridge:\n${eofBridge.log}`);
    } finally {
      c.socket.destroy();
    }
  }
});

test('the Worker accepts the wsbridge.v1 subprotocol when offered, and only then', async () => {
  const upgrade = (protocols) => withTimeout(new Promise((resolve, reject) => {
    const headers = { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==' };
    if (protocols) headers['Sec-WebSocket-Protocol'] = protocols;
    const req = http.request({ host: '127.0.0.1', port: workerdPort, path: '/', headers });
    req.on('upgrade', (res, socket) => { socket.destroy(); resolve(res); });
    req.on('response', (res) => { res.resume(); resolve(res); });
    req.on('error', reject);
    req.end();
  }), WAIT_MS, 'upgrade to workerd');
  const offered = await upgrade('chat, wsbridge.v1');
  assert.equal(offered.statusCode, 101);
  assert.equal(offered.headers['sec-websocket-protocol'], 'wsbridge.v1');
  const plain = await upgrade(null);
  assert.equal(plain.statusCode, 101);
  assert.equal(plain.headers['sec-websocket-protocol'], undefined);
});
