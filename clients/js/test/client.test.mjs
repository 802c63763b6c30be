// @wsbridge/client against a real `wsbridge ws2tcp` and real TCP/TLS echo targets on 127.0.0.1, plus a few
// cases against a scripted fake gateway (the `ws` package's server) for what a real gateway never does.
//
//   clients/js/run.sh            (npm ci, builds the binary unless WSBRIDGE_BIN is set, runs these)
//   node --test clients/js/test/*.test.mjs
//
// Node 20 has no global WebSocket, so the `ws` package's is passed in as { WebSocket } (a devDependency,
// for these tests only; the library itself has no dependencies).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import WebSocket, { WebSocketServer } from 'ws';
import { connect, WsbridgeError, READ_OVERFLOW_CODE } from '../wsbridge.mjs';
import {
  WAIT_MS, closeServer, freePort, listen, makeCertificates, readExactly, startEcho, startGateway, until,
  withTimeout,
} from './helpers.mjs';

let gw; // wsbridge ws2tcp --allow 127.0.0.0/8 --target-ca <test CA>
let echo; // TCP echo target
let tlsEcho; // TLS echo target (certificate for 127.0.0.1 from the test CA)
let certs;

const open = (options) => withTimeout(
  connect(gw.url, { host: '127.0.0.1', WebSocket, timeoutMs: WAIT_MS, ...options }),
  WAIT_MS + 1000, 'connect',
);

/** connect() must reject; returns the error. */
async function rejection(promise) {
  try {
    await withTimeout(promise, WAIT_MS + 1000, 'connect rejection');
  } catch (e) {
    return e;
  }
  return assert.fail('connect() resolved, expected a rejection');
}

before(async () => {
  certs = makeCertificates();
  echo = await startEcho();
  tlsEcho = await startEcho({ key: certs.key, cert: certs.cert });
  gw = await startGateway(['--allow', '127.0.0.0/8', '--target-ca', certs.caPath, '--connect-timeout', '5']);
});

after(async () => {
  await gw?.stop();
  await echo?.stop();
  await tlsEcho?.stop();
  certs?.cleanup();
});

test('tcp: text, ArrayBuffer and 1 MiB of random bytes round-trip exactly; close() ends it', { timeout: 60_000 }, async () => {
  const connsBefore = echo.connections;
  const sock = await open({ port: echo.port });
  assert.equal(sock.status.status, 'Successfully connected, starting to proxy');
  assert.deepEqual([sock.host, sock.port, sock.protocol], ['127.0.0.1', echo.port, 'tcp']);
  const writer = sock.writable.getWriter();
  const reader = sock.readable.getReader();

  const text = 'héllo ✓ over TCP\n';
  await writer.write(text);
  assert.equal(new TextDecoder().decode(await readExactly(reader, Buffer.byteLength(text))), text);

  await writer.write(new Uint8Array([0, 1, 2, 255]).buffer);
  assert.deepEqual([...await readExactly(reader, 4)], [0, 1, 2, 255]);

  const blob = new Uint8Array(randomBytes(1 << 20));
  const [, back] = await Promise.all([writer.write(blob), readExactly(reader, blob.byteLength)]);
  assert.ok(Buffer.from(back).equals(Buffer.from(blob)), '1 MiB echoed byte for byte');
  assert.equal(echo.connections - connsBefore, 1, 'one real TCP connection to the target');

  const endedBefore = echo.ended;
  const closeEvent = new Promise((resolve) => sock.addEventListener('close', resolve, { once: true }));
  sock.close();
  const info = await withTimeout(sock.closed, WAIT_MS, 'closed');
  // Our Close is a half-close for the gateway: the echo target gets its FIN, ends, and the gateway's
  // Close reply says so.
  assert.deepEqual(info, { code: 1000, reason: 'target closed the connection', wasClean: true });
  const event = await withTimeout(closeEvent, WAIT_MS, 'close event');
  assert.equal(event.code, 1000);
  assert.deepEqual(await withTimeout(reader.read(), WAIT_MS, 'read after close'), { value: undefined, done: true });
  await until(() => echo.ended > endedBefore, 'the target to get its FIN');
  await assert.rejects(writer.write('late'), WsbridgeError);
});

test('denied target: rejects with the gateway reason and Close 1008, nothing dialled', { timeout: 30_000 }, async () => {
  const connsBefore = echo.connections;
  // 10.0.0.0/8 is outside --allow 127.0.0.0/8: the policy refuses it before any packet is sent.
  const err = await rejection(open({ host: '10.1.2.3', port: 80 }));
  assert.ok(err instanceof WsbridgeError, String(err));
  assert.match(err.reason, /not allowed/);
  assert.equal(err.code, 1008);
  assert.match(err.closeReason, /not allowed/);
  assert.match(err.message, /not allowed/);
  // A port outside 1..=65535 never leaves the client.
  await assert.rejects(connect(gw.url, { host: '127.0.0.1', port: 70000, WebSocket }), TypeError);
  assert.equal(echo.connections, connsBefore);
});

test('connection refused: rejects with the reason and Close 1011', { timeout: 30_000 }, async () => {
  const port = await freePort();
  const err = await rejection(open({ port }));
  assert.ok(err instanceof WsbridgeError, String(err));
  assert.match(err.reason, /cannot connect|refused/i);
  assert.ok([1011, 1014].includes(err.code), `close code ${err.code}`);
});

test('the target closes: readable yields its last bytes then ends, closed resolves 1000', { timeout: 30_000 }, async () => {
  const closer = net.createServer((s) => { s.on('error', () => {}); s.end('bye\n'); });
  const port = await listen(closer);
  try {
    const sock = await open({ port });
    const events = [];
    sock.addEventListener('close', (e) => events.push(e.code));
    const chunks = [];
    for await (const chunk of sock.readable) chunks.push(...chunk);
    assert.equal(new TextDecoder().decode(new Uint8Array(chunks)), 'bye\n');
    const info = await withTimeout(sock.closed, WAIT_MS, 'closed');
    assert.equal(info.code, 1000);
    assert.equal(info.wasClean, true);
    assert.match(info.reason, /target closed/);
    assert.deepEqual(events, [1000]);
  } finally {
    await closeServer(closer);
  }
});

test('the target resets: readable errors with the Close 1011 after the bytes before it', { timeout: 30_000 }, async () => {
  let target = null;
  const resetter = net.createServer((s) => { target = s; s.on('error', () => {}); s.write('partial'); });
  const port = await listen(resetter);
  try {
    const sock = await open({ port });
    const reader = sock.readable.getReader();
    assert.equal(new TextDecoder().decode(await readExactly(reader, 7)), 'partial');
    target.resetAndDestroy();
    const err = await withTimeout(reader.read().then(() => null, (e) => e), WAIT_MS, 'read after the reset');
    assert.ok(err instanceof WsbridgeError, `readable errored: ${err}`);
    assert.equal(err.code, 1011);
    assert.match(err.closeReason, /target connection lost/);
    assert.equal((await withTimeout(sock.closed, WAIT_MS, 'closed')).code, 1011);
  } finally {
    await closeServer(resetter);
  }
});

test('tls: a TLS echo target trusted through --target-ca', { timeout: 30_000 }, async () => {
  const sock = await open({ port: tlsEcho.port, protocol: 'tls' });
  assert.equal(sock.protocol, 'tls');
  const writer = sock.writable.getWriter();
  const reader = sock.readable.getReader();
  const blob = new Uint8Array(randomBytes(200_000));
  const [, back] = await Promise.all([writer.write(blob), readExactly(reader, blob.byteLength)]);
  assert.ok(Buffer.from(back).equals(Buffer.from(blob)));
  sock.close();
  assert.equal((await withTimeout(sock.closed, WAIT_MS, 'closed')).code, 1000);
});

test('tls: a target whose certificate is not trusted rejects with 1014', { timeout: 30_000 }, async () => {
  // The same TLS echo target, through a gateway without --target-ca: only the Mozilla roots.
  const plain = await startGateway(['--allow', '127.0.0.0/8']);
  try {
    const err = await rejection(connect(plain.url, {
      host: '127.0.0.1', port: tlsEcho.port, protocol: 'tls', WebSocket, timeoutMs: WAIT_MS,
    }));
    assert.ok(err instanceof WsbridgeError, String(err));
    assert.equal(err.code, 1014, err.message);
    assert.ok(err.reason.length > 0);
  } finally {
    await plain.stop();
  }
});

test('an HTTP refusal (wrong --path) rejects with 1006', { timeout: 30_000 }, async () => {
  const pathed = await startGateway(['--allow', '127.0.0.0/8', '--path', '/gw']);
  try {
    const err = await rejection(connect(`ws://127.0.0.1:${pathed.port}/elsewhere`, {
      host: '127.0.0.1', port: echo.port, WebSocket, timeoutMs: WAIT_MS,
    }));
    assert.ok(err instanceof WsbridgeError, String(err));
    assert.equal(err.code, 1006);
    const sock = await connect(`ws://127.0.0.1:${pathed.port}/gw`, {
      host: '127.0.0.1', port: echo.port, WebSocket, timeoutMs: WAIT_MS,
    });
    sock.close();
    await withTimeout(sock.closed, WAIT_MS, 'closed');
  } finally {
    await pathed.stop();
  }
});

// ---- a scripted fake gateway, for what a real one never does ----

/** A `ws` server on loopback running `script(socket)` per client. */
async function fakeGateway(script) {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await withTimeout(new Promise((r) => server.once('listening', r)), WAIT_MS, 'fake gateway listening');
  server.on('connection', script);
  return {
    url: `ws://127.0.0.1:${server.address().port}/`,
    stop: () => {
      for (const c of server.clients) c.terminate();
      return withTimeout(new Promise((r) => server.close(r)), WAIT_MS, 'fake gateway close');
    },
  };
}

const GREETING_TCP_ONLY = JSON.stringify({ supported_protocols: { tcp: { target_ip: 'IP Address', target_port: 'Port for IP Address' } } });

test('fake gateway: an unsupported protocol, a silent gateway and an abort reject', { timeout: 30_000 }, async () => {
  const fake = await fakeGateway((ws, req) => { if (!req.url.includes('silent')) ws.send(GREETING_TCP_ONLY); });
  try {
    const err = await rejection(connect(fake.url, { host: 'h', port: 1, protocol: 'tls', WebSocket, timeoutMs: WAIT_MS }));
    assert.match(err.message, /does not support protocol "tls".*tcp/);

    const started = Date.now();
    const slow = await rejection(connect(`${fake.url}silent`, { host: 'h', port: 1, WebSocket, timeoutMs: 300 }));
    assert.equal(slow.name, 'TimeoutError');
    assert.ok(Date.now() - started < 5000);

    const ac = new AbortController();
    const pending = connect(`${fake.url}silent`, { host: 'h', port: 1, WebSocket, signal: ac.signal, timeoutMs: WAIT_MS });
    ac.abort(new Error('changed my mind'));
    assert.equal((await rejection(pending)).message, 'changed my mind');
  } finally {
    await fake.stop();
  }
});

test('fake gateway: a reader that falls behind maxReadBuffer gets 4009 after reading what was queued', { timeout: 30_000 }, async () => {
  let serverSaw = null;
  const piece = 64 * 1024;
  const fake = await fakeGateway((ws) => {
    ws.send(GREETING_TCP_ONLY);
    ws.once('message', () => {
      ws.send(JSON.stringify({ status: 'Successfully connected, starting to proxy' }));
      for (let i = 0; i < 40; i++) ws.send(new Uint8Array(piece).fill(i)); // 2.5 MiB, never read in time
    });
    ws.on('close', (code) => { serverSaw = code; });
  });
  try {
    const sock = await connect(fake.url, { host: 'h', port: 1, WebSocket, timeoutMs: WAIT_MS, maxReadBuffer: 1 << 20 });
    const errors = [];
    sock.addEventListener('error', (e) => errors.push(e.error));
    await withTimeout(sock.closed, WAIT_MS, 'closed after overflow');
    assert.equal(errors.length, 1);
    assert.equal(errors[0].code, READ_OVERFLOW_CODE);
    let got = 0;
    const reader = sock.readable.getReader();
    const err = await (async () => {
      try {
        for (;;) {
          const { value, done } = await withTimeout(reader.read(), WAIT_MS, 'read');
          if (done) return null;
          assert.equal(value[0], Math.floor(got / piece), 'chunks in order');
          got += value.byteLength;
        }
      } catch (e) {
        return e;
      }
    })();
    assert.ok(err instanceof WsbridgeError, `readable errored: ${err}`);
    assert.equal(err.code, READ_OVERFLOW_CODE);
    assert.equal(got, 16 * piece, 'everything queued within the bound was delivered first');
    await until(() => serverSaw !== null, 'the fake gateway to see the Close');
    assert.equal(serverSaw, READ_OVERFLOW_CODE);
  } finally {
    await fake.stop();
  }
});
