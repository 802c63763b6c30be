// A small but real POP3 server as a Cloudflare Worker, behind `wsbridge tcp2ws`.
//
// Mail clients speak POP3 over TCP (POP3S on 995, or STLS on 110) to wsbridge; wsbridge opens one WebSocket
// per client to this Worker and speaks the tcp2ws wire contract (DESIGN §1.1, README "The wire contract"):
//   - the first frame is Text `{"type":"bridge_hello","tls":…,"client_ip":…,…}`;
//   - Binary frames are the client's bytes, both ways;
//   - Text frames are JSON control: we send `{"type":"start_tls","reply":"+OK …\r\n"}` for STLS, the bridge
//     answers `{"type":"tls_started",…}` or `{"type":"tls_failed",…}`.
//
// POP3: RFC 1939 (USER/PASS, STAT, LIST, UIDL, RETR, TOP, DELE, NOOP, RSET, QUIT), RFC 2449 (CAPA, RESP-CODES),
// RFC 2595 (STLS), RFC 3206 (AUTH-RESP-CODE). One account, from the bindings POP3_USER / POP3_PASS (default
// alice / secret — set a real password with `wrangler secret put POP3_PASS`). The mailbox is the fixed
// MESSAGES below, copied per connection: DELE marks, QUIT applies the deletions to that connection's copy
// only, so every new connection sees all messages again (this is a demo; a real server keeps the maildrop in
// a Durable Object, KV or R2).
//
// Plaintext authentication: on a connection that is not under TLS (a `--starttls` listener before STLS),
// CAPA does not list USER and USER/PASS are refused, so a password never crosses the network in the clear
// (RFC 8314 §4; curl then says "No known authentication mechanisms supported" unless it did STLS). Set the
// binding ALLOW_PLAINTEXT_AUTH = "true" to allow it (only for a local test behind a plain listener).
//
// No build step: this file is the whole Worker (an ES module).

const SUBPROTOCOL = 'wsbridge.v1';
const MAX_LINE = 1024; // octets, CRLF included (RFC 2449 allows 255 for a command; leave room)
const MAX_AUTH_FAILURES = 3; // then the connection is closed

// The maildrop. CRLF line ends; message 1 has lines that start with a dot (dot-stuffed by RETR/TOP), message 3
// has a line that is a lone dot and non-ASCII text (sizes are in octets of UTF-8, not in JS characters).
const MESSAGES = [
  'From: Bob <bob@example.test>\r\n' +
    'To: Alice <alice@example.test>\r\n' +
    'Subject: Hello through the bridge\r\n' +
    'Message-ID: <1@example.test>\r\n' +
    '\r\n' +
    'Hello Alice,\r\n' +
    '.this line starts with a dot\r\n' +
    '..and this one with two\r\n' +
    '\r\n' +
    'Bob\r\n',
  'From: Carol <carol@example.test>\r\n' +
    'To: Alice <alice@example.test>\r\n' +
    'Subject: Short\r\n' +
    'Message-ID: <2@example.test>\r\n' +
    '\r\n' +
    'Short.\r\n',
  'From: Dan <dan@example.test>\r\n' +
    'To: Alice <alice@example.test>\r\n' +
    'Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n' +
    'Message-ID: <3@example.test>\r\n' +
    'Content-Type: text/plain; charset=utf-8\r\n' +
    '\r\n' +
    'Grüße aus dem Worker.\r\n' +
    '.\r\n' +
    'The line above is a lone dot; it must not end the message.\r\n',
].map((text, i) => ({ uid: `msg-${i + 1}`, bytes: new TextEncoder().encode(text) }));

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8'); // non-fatal: a bad byte becomes U+FFFD and the command fails

export default {
  async fetch(request, env) {
    if ((request.headers.get('Upgrade') || '').toLowerCase() !== 'websocket') {
      return new Response(
        'POP3 backend for wsbridge tcp2ws: connect with a WebSocket, e.g.\n' +
          '  wsbridge tcp2ws --listen 0.0.0.0:995 --tls-cert … --tls-key … --backend wss://<this host>/\n',
        { status: 426, headers: { Upgrade: 'websocket', 'Content-Type': 'text/plain; charset=utf-8' } },
      );
    }
    const pair = new WebSocketPair();
    const [client, server] = [pair[0], pair[1]];
    server.accept();
    new Pop3Session(server, settings(env));
    const headers = new Headers();
    const offered = (request.headers.get('Sec-WebSocket-Protocol') || '').split(',').map((p) => p.trim());
    if (offered.includes(SUBPROTOCOL)) headers.set('Sec-WebSocket-Protocol', SUBPROTOCOL);
    return new Response(null, { status: 101, webSocket: client, headers });
  },
};

function settings(env = {}) {
  return {
    user: env.POP3_USER || 'alice',
    pass: env.POP3_PASS || 'secret',
    allowPlaintextAuth: String(env.ALLOW_PLAINTEXT_AUTH || '').toLowerCase() === 'true',
  };
}

/** One POP3 session over one bridged WebSocket. */
class Pop3Session {
  constructor(ws, cfg) {
    this.ws = ws;
    this.cfg = cfg;
    // hello: waiting for bridge_hello; auth: AUTHORIZATION; stls: waiting for tls_started;
    // trans: TRANSACTION; closed.
    this.phase = 'hello';
    this.tls = false;
    this.user = null;
    this.failures = 0;
    this.deleted = new Set(); // 1-based numbers marked by DELE
    this.mailbox = MESSAGES.slice(); // this connection's copy
    this.buf = new Uint8Array(0); // client bytes not yet cut into lines
    this.discarding = false; // inside an over-long line: drop bytes until its LF
    this.out = []; // replies to send as one Binary frame
    this.id = '?';
    ws.addEventListener('message', (ev) => {
      try {
        if (typeof ev.data === 'string') this.onControl(ev.data);
        else this.onData(new Uint8Array(ev.data));
      } catch (e) {
        console.error(`pop3 conn=${this.id} internal error: ${e && e.stack}`);
        this.close(1011, 'internal error');
      }
    });
    ws.addEventListener('close', (ev) => {
      // The bridge closed (client gone, or --half-close close after the client's FIN). Answer its Close.
      if (this.phase !== 'closed') {
        this.phase = 'closed';
        try { ws.close(1000, 'bye'); } catch { /* already closing */ }
      }
    });
    ws.addEventListener('error', () => { this.phase = 'closed'; });
  }

  // ---- the bridge's frames ----

  onControl(text) {
    let msg;
    try { msg = JSON.parse(text); } catch { msg = null; }
    if (!msg || typeof msg !== 'object' || Array.isArray(msg) || typeof msg.type !== 'string') {
      return this.close(1008, 'malformed control message');
    }
    switch (msg.type) {
      case 'bridge_hello':
        if (this.phase !== 'hello') return; // only the first one counts
        this.tls = msg.tls === true;
        this.id = String(msg.connection_id || '?');
        console.log(`pop3 conn=${this.id} client=${msg.client_ip}:${msg.client_port} tls=${this.tls} listener=${msg.listener}`);
        this.phase = 'auth';
        this.reply('+OK POP3 server ready (wsbridge worker example)');
        return this.flush();
      case 'tls_started':
        if (this.phase !== 'stls') return;
        this.tls = true;
        this.phase = 'auth';
        // RFC 2595 §4: forget what was learnt before TLS; the client issues CAPA again. No new greeting.
        this.user = null;
        this.buf = new Uint8Array(0);
        this.discarding = false;
        return;
      case 'tls_failed':
        console.log(`pop3 conn=${this.id} tls_failed: ${msg.reason}`);
        return this.close(1000, 'TLS failed');
      case 'eof':
        // --half-close eof: the client sent FIN without QUIT. No UPDATE state (RFC 1939 §6): deletions dropped.
        return this.close(1000, 'client closed');
      default:
        return; // unknown control types are ignored (forward compatible)
    }
  }

  onData(bytes) {
    switch (this.phase) {
      case 'hello':
        return this.close(1008, 'bridge_hello expected as the first frame');
      case 'stls':
        // Plaintext the client pipelined after STLS, before the switch: never a command (CVE-2011-0411).
        return;
      case 'closed':
        return;
    }
    this.buf = concat(this.buf, bytes);
    while (this.phase === 'auth' || this.phase === 'trans') {
      const lf = this.buf.indexOf(0x0a);
      if (this.discarding) {
        if (lf < 0) { this.buf = new Uint8Array(0); break; }
        this.buf = this.buf.subarray(lf + 1);
        this.discarding = false;
        continue;
      }
      if (lf < 0) {
        if (this.buf.length > MAX_LINE) {
          this.reply('-ERR line too long');
          this.buf = new Uint8Array(0);
          this.discarding = true;
        }
        break;
      }
      const line = this.buf.subarray(0, lf + 1);
      this.buf = this.buf.subarray(lf + 1);
      if (line.length > MAX_LINE) this.reply('-ERR line too long');
      else this.command(decoder.decode(line).replace(/\r?\n$/, ''));
    }
    this.flush();
  }

  // ---- POP3 ----

  command(line) {
    const sp = line.indexOf(' ');
    const verb = (sp < 0 ? line : line.slice(0, sp)).toUpperCase();
    const arg = sp < 0 ? '' : line.slice(sp + 1);
    const args = arg.split(' ').filter((a) => a !== '');
    const authed = this.phase === 'trans';
    const plainOk = this.tls || this.cfg.allowPlaintextAuth;

    switch (verb) {
      case 'CAPA': {
        const caps = ['+OK Capability list follows'];
        if (!authed && !this.tls) caps.push('STLS');
        if (!authed && plainOk) caps.push('USER');
        caps.push('TOP', 'UIDL', 'PIPELINING', 'RESP-CODES', 'AUTH-RESP-CODE', 'IMPLEMENTATION wsbridge-worker-example', '.');
        return this.reply(caps.join('\r\n'));
      }
      case 'QUIT':
        return this.quit();
      case 'NOOP':
        return this.reply(authed ? '+OK' : '-ERR authenticate first');
    }

    if (!authed) {
      switch (verb) {
        case 'STLS':
          if (this.tls) return this.reply('-ERR command not permitted when TLS active');
          if (arg !== '') return this.reply('-ERR STLS takes no argument');
          return this.startTls();
        case 'USER':
          if (!plainOk) return this.reply('-ERR [AUTH] plaintext authentication is disabled: use STLS first');
          if (arg === '') return this.reply('-ERR USER needs a name');
          this.user = arg;
          return this.reply('+OK send PASS');
        case 'PASS': {
          if (!plainOk) return this.reply('-ERR [AUTH] plaintext authentication is disabled: use STLS first');
          if (this.user === null) return this.reply('-ERR USER first');
          const user = this.user;
          this.user = null;
          // RFC 1939: the password is the rest of the line and may contain spaces.
          if (equal(user, this.cfg.user) && equal(arg, this.cfg.pass)) {
            this.phase = 'trans';
            const [n, size] = this.stat();
            return this.reply(`+OK ${user}'s maildrop has ${n} messages (${size} octets)`);
          }
          this.failures++;
          this.reply('-ERR [AUTH] invalid user or password');
          if (this.failures >= MAX_AUTH_FAILURES) this.close(1000, 'too many authentication failures');
          return;
        }
        default:
          return this.reply('-ERR authenticate first');
      }
    }

    switch (verb) {
      case 'STAT': {
        if (args.length) return this.reply('-ERR STAT takes no argument');
        const [n, size] = this.stat();
        return this.reply(`+OK ${n} ${size}`);
      }
      case 'LIST':
      case 'UIDL': {
        const show = (n) => (verb === 'LIST' ? `${n} ${this.mailbox[n - 1].bytes.length}` : `${n} ${this.mailbox[n - 1].uid}`);
        if (args.length === 0) {
          const lines = [verb === 'LIST' ? '+OK scan listing follows' : '+OK unique-id listing follows'];
          for (let n = 1; n <= this.mailbox.length; n++) if (!this.deleted.has(n)) lines.push(show(n));
          lines.push('.');
          return this.reply(lines.join('\r\n'));
        }
        if (args.length !== 1) return this.reply(`-ERR usage: ${verb} [msg]`);
        const n = this.number(args[0]);
        return this.reply(n ? `+OK ${show(n)}` : '-ERR no such message');
      }
      case 'RETR': {
        if (args.length !== 1) return this.reply('-ERR usage: RETR msg');
        const n = this.number(args[0]);
        if (!n) return this.reply('-ERR no such message');
        const m = this.mailbox[n - 1].bytes;
        this.reply(`+OK ${m.length} octets`);
        this.out.push(dotStuff(m), encoder.encode('.\r\n'));
        return;
      }
      case 'TOP': {
        if (args.length !== 2 || !/^\d+$/.test(args[1])) return this.reply('-ERR usage: TOP msg lines');
        const n = this.number(args[0]);
        if (!n) return this.reply('-ERR no such message');
        this.reply('+OK top of message follows');
        this.out.push(dotStuff(top(this.mailbox[n - 1].bytes, Number(args[1]))), encoder.encode('.\r\n'));
        return;
      }
      case 'DELE': {
        if (args.length !== 1) return this.reply('-ERR usage: DELE msg');
        const n = this.number(args[0]);
        if (!n) return this.reply('-ERR no such message');
        this.deleted.add(n);
        return this.reply(`+OK message ${n} deleted`);
      }
      case 'RSET': {
        this.deleted.clear();
        const [n, size] = this.stat();
        return this.reply(`+OK maildrop has ${n} messages (${size} octets)`);
      }
      case 'USER':
      case 'PASS':
        return this.reply('-ERR already authenticated');
      case 'STLS':
        return this.reply('-ERR STLS is only valid before authentication');
      default:
        return this.reply('-ERR unknown command');
    }
  }

  /** The number of a message that exists and is not marked deleted, or 0. */
  number(s) {
    if (!/^[1-9][0-9]{0,8}$/.test(s)) return 0;
    const n = Number(s);
    return n <= this.mailbox.length && !this.deleted.has(n) ? n : 0;
  }

  stat() {
    let n = 0;
    let size = 0;
    this.mailbox.forEach((m, i) => {
      if (!this.deleted.has(i + 1)) { n++; size += m.bytes.length; }
    });
    return [n, size];
  }

  startTls() {
    // Replies queued before STLS (pipelined commands) go first, as data; then the control frame. The bridge
    // writes `reply` as the last plaintext and switches, so the client cannot send its ClientHello too early.
    this.flush();
    this.phase = 'stls';
    this.user = null;
    this.buf = new Uint8Array(0); // what the client pipelined after STLS is discarded, never executed
    this.discarding = false;
    this.send(JSON.stringify({ type: 'start_tls', reply: '+OK Begin TLS negotiation\r\n' }));
  }

  quit() {
    if (this.phase === 'trans') {
      // UPDATE state (RFC 1939 §6): remove the marked messages — from this connection's copy only.
      const gone = this.deleted.size;
      this.mailbox = this.mailbox.filter((_, i) => !this.deleted.has(i + 1));
      this.deleted.clear();
      console.log(`pop3 conn=${this.id} QUIT: ${gone} deleted, ${this.mailbox.length} left`);
      this.reply(`+OK bye (${gone} message${gone === 1 ? '' : 's'} deleted, ${this.mailbox.length} left)`);
    } else {
      this.reply('+OK bye');
    }
    this.close(1000, 'QUIT');
  }

  // ---- output ----

  reply(text) {
    this.out.push(encoder.encode(`${text}\r\n`));
  }

  /** Sends the queued replies as one Binary frame. */
  flush() {
    if (this.out.length === 0 || this.phase === 'closed') { this.out = []; return; }
    const frame = new Uint8Array(this.out.reduce((n, part) => n + part.length, 0));
    let at = 0;
    for (const part of this.out) { frame.set(part, at); at += part.length; }
    this.out = [];
    this.send(frame);
  }

  send(data) {
    try { this.ws.send(data); } catch { this.phase = 'closed'; }
  }

  /** Flushes the replies, then closes; the bridge flushes them to the client before it shuts it down. */
  close(code, reason) {
    if (this.phase === 'closed') return;
    this.flush();
    this.phase = 'closed';
    try { this.ws.close(code, reason); } catch { /* already closed */ }
  }
}

// ---- helpers ----

function concat(a, b) {
  if (a.length === 0) return b;
  if (b.length === 0) return a;
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/** Dot-stuffs a CRLF message (RFC 1939 §3): every line starting with "." gets one more; ends with CRLF. */
function dotStuff(bytes) {
  const out = [];
  let lineStart = true;
  for (const b of bytes) {
    if (lineStart && b === 0x2e) out.push(0x2e);
    out.push(b);
    lineStart = b === 0x0a;
  }
  if (!(out.length >= 2 && out[out.length - 2] === 0x0d && out[out.length - 1] === 0x0a)) out.push(0x0d, 0x0a);
  return Uint8Array.from(out);
}

/** The headers, the blank line and the first `lines` lines of the body (RFC 1939 TOP). */
function top(bytes, lines) {
  const text = decoder.decode(bytes);
  const sep = text.indexOf('\r\n\r\n');
  if (sep < 0) return bytes;
  const head = text.slice(0, sep + 4);
  const body = text.slice(sep + 4).split('\r\n');
  if (body[body.length - 1] === '') body.pop();
  const kept = body.slice(0, lines);
  return encoder.encode(head + kept.map((l) => `${l}\r\n`).join(''));
}

/** String comparison whose time does not depend on where the strings differ. */
function equal(a, b) {
  const x = encoder.encode(a);
  const y = encoder.encode(b);
  let diff = x.length ^ y.length;
  for (let i = 0; i < Math.max(x.length, y.length); i++) diff |= (x[i] | 0) ^ (y[i] | 0);
  return diff === 0;
}
