// @wsbridge/client: a TCP (or TLS) connection through a `wsbridge ws2tcp` gateway (or any Socket2Web
// gateway), as WHATWG streams. No dependencies: it uses the platform WebSocket (browsers, Node >= 22) or
// the one passed in as `{ WebSocket }` (e.g. the `ws` package on Node 20).
//
//   import { connect } from "./wsbridge.mjs";
//   const sock = await connect("wss://gw.example/", { host: "192.0.2.10", port: 7 });
//   const writer = sock.writable.getWriter();
//   await writer.write("hello\n");
//   for await (const bytes of sock.readable) console.log(bytes);   // Uint8Array chunks
//   console.log(await sock.closed);                                // { code, reason, wasClean }
//
// The wire (Socket2Web's handshake, DESIGN §1.2): the gateway greets with
// {"supported_protocols":{...}}, the client answers {"protocol":"tcp","target_ip":H,"target_port":P}, the
// gateway answers {"status":"Successfully connected, starting to proxy"} (then raw relay: Binary frames
// both ways) or {"status":"Connection failed, cancelling proxy","reason":"..."} followed by a Close
// (1008 for a refused target, 1011/1014 for an upstream failure).
//
// Flow control. Writing honours the WebSocket's `bufferedAmount`: a write resolves only once less than
// `writeHighWaterMark` bytes are queued in the WebSocket, so a writer that awaits its writes never buffers
// without bound. Reading: the WebSocket API cannot pause the network, so received bytes are queued until
// the reader takes them; the queue is bounded by `maxReadBuffer` (default 8 MiB). A reader that falls
// further behind than that gets the socket closed with code 4009 and `readable` errored with a
// WsbridgeError saying so, after it has read everything that was queued: nothing is silently dropped and
// memory stays bounded.

/** The success status's prefix (Socket2Web's text). */
const SUCCESS_PREFIX = "Successfully connected";
/** Largest piece handed to one `WebSocket.send` (a write larger than this becomes several frames). */
const SEND_PIECE = 64 * 1024;
/** How often a write waiting for `bufferedAmount` to drop looks again (the API has no event for it). */
const DRAIN_POLL_MS = 5;
/** After a failure status, how long to wait for the gateway's Close before rejecting without it. */
const CLOSE_GRACE_MS = 2000;
/** The Close code sent when the read queue overflows (private-use range, RFC 6455 §7.4.2). */
export const READ_OVERFLOW_CODE = 4009;

/** An error of the gateway or the connection; `reason`, `code` and `closeReason` say which. */
export class WsbridgeError extends Error {
  /**
   * @param {string} message
   * @param {{reason?: string, code?: number, closeReason?: string, wasClean?: boolean, cause?: unknown}} [details]
   */
  constructor(message, details = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = "WsbridgeError";
    /** @type {string | undefined} the gateway's failure `reason` (from its status message) */
    this.reason = details.reason;
    /** @type {number | undefined} the WebSocket Close code, once the Close arrived */
    this.code = details.code;
    /** @type {string | undefined} the WebSocket Close reason, once the Close arrived */
    this.closeReason = details.closeReason;
    /** @type {boolean | undefined} whether the close handshake completed */
    this.wasClean = details.wasClean;
  }
}

/** The `close` event of a {@link WsbridgeSocket}: the WebSocket's Close code and reason. */
export class WsbridgeCloseEvent extends Event {
  /** @param {{code: number, reason: string, wasClean: boolean}} info */
  constructor(info) {
    super("close");
    /** @type {number} */
    this.code = info.code;
    /** @type {string} */
    this.reason = info.reason;
    /** @type {boolean} */
    this.wasClean = info.wasClean;
  }
}

/** The `error` event of a {@link WsbridgeSocket}; `error` says what went wrong. A `close` event follows. */
export class WsbridgeErrorEvent extends Event {
  /** @param {Error} error */
  constructor(error) {
    super("error");
    /** @type {Error} */
    this.error = error;
  }
}

/** Bytes of a chunk given to `writable`: Uint8Array (any ArrayBufferView), ArrayBuffer, or string (UTF-8). */
function toBytes(chunk) {
  if (typeof chunk === "string") return new TextEncoder().encode(chunk);
  if (chunk instanceof ArrayBuffer) return new Uint8Array(chunk);
  if (ArrayBuffer.isView(chunk)) return new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  throw new TypeError("wsbridge: write a Uint8Array, an ArrayBuffer or a string");
}

/** Bytes of a received Binary message (an ArrayBuffer with binaryType "arraybuffer"; Node Buffers too). */
function messageBytes(data) {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return null;
}

function describeClose(code, reason) {
  return reason ? `${code} ${reason}` : `${code}`;
}

/**
 * One connection to a target through the gateway, after the gateway said it connected. Made by
 * {@link connect}; not constructed directly.
 *
 * - `readable`: the target's bytes as Uint8Array chunks. It ends (closes) when the connection closes with
 *   1000 (the target closed: "target closed the connection") or because {@link WsbridgeSocket.close} was
 *   called; any other close errors it with a WsbridgeError carrying the code and reason — in every case
 *   only after the reader took every byte received before.
 * - `writable`: Uint8Array / ArrayBuffer / string (UTF-8) chunks, each sent as Binary. Closing it only
 *   waits until what was written has left the WebSocket (the WebSocket API has no half-close: use
 *   `close()` to end the connection). Aborting it closes the socket.
 * - `closed`: resolves `{code, reason, wasClean}` when the WebSocket has closed; it never rejects.
 * - events: `close` ({@link WsbridgeCloseEvent}), `error` ({@link WsbridgeErrorEvent}).
 */
export class WsbridgeSocket extends EventTarget {
  #ws;
  #queue = [];
  #queued = 0;
  #maxReadBuffer;
  #writeHighWaterMark;
  /** @type {ReadableStreamDefaultController<Uint8Array> | null} */
  #controller = null;
  /** Resolves a `pull` that waits for data. */
  #wake = null;
  /** How `readable` ends once its queue is empty: `{ error?: Error }`, or null while open. */
  #ending = null;
  #readableDone = false;
  /** Set when this side asked for the close (close(), abort, cancel, overflow). */
  #closeRequested = false;
  #closedInfo = null;
  #resolveClosed;

  /**
   * @param {WebSocket} ws an open WebSocket whose handshake with the gateway succeeded
   * @param {object} status the gateway's success status message
   * @param {{host: string, port: number, protocol: string, maxReadBuffer: number, writeHighWaterMark: number}} info
   * @internal
   */
  constructor(ws, status, info) {
    super();
    this.#ws = ws;
    /** @type {object} the gateway's success status message (may carry extra fields) */
    this.status = status;
    /** @type {string} */
    this.host = info.host;
    /** @type {number} */
    this.port = info.port;
    /** @type {"tcp" | "tls"} */
    this.protocol = info.protocol;
    this.#maxReadBuffer = info.maxReadBuffer;
    this.#writeHighWaterMark = info.writeHighWaterMark;
    /** @type {Promise<{code: number, reason: string, wasClean: boolean}>} */
    this.closed = new Promise((resolve) => { this.#resolveClosed = resolve; });

    /** @type {ReadableStream<Uint8Array>} */
    this.readable = new ReadableStream({
      start: (controller) => { this.#controller = controller; },
      pull: () => {
        if (this.#deliver()) return undefined;
        return new Promise((resolve) => { this.#wake = resolve; });
      },
      cancel: () => {
        this.#readableDone = true;
        this.#queue = [];
        this.#queued = 0;
        this.close(1000, "reader cancelled");
      },
    }, { highWaterMark: 0 });

    /** @type {WritableStream<Uint8Array | ArrayBuffer | ArrayBufferView | string>} */
    this.writable = new WritableStream({
      write: (chunk) => this.#write(chunk),
      close: () => this.#drained(0),
      abort: () => { this.close(1000, "writer aborted"); },
    });

    ws.onmessage = (event) => this.#onMessage(event.data);
    ws.onerror = () => {
      this.dispatchEvent(new WsbridgeErrorEvent(new WsbridgeError("WebSocket error")));
    };
    ws.onclose = (event) => this.#onClose(event.code, event.reason, event.wasClean);
  }

  /**
   * Closes the connection: a WebSocket Close with `code` (1000, or 3000–4999) and `reason` (at most 123
   * UTF-8 bytes). The gateway sends the target a FIN after the bytes already sent; `closed` resolves once
   * the close handshake is over. Bytes still arriving after this call are not delivered.
   * @param {number} [code]
   * @param {string} [reason]
   */
  close(code = 1000, reason = "") {
    this.#closeRequested = true;
    if (this.#ws.readyState === 0 || this.#ws.readyState === 1) this.#ws.close(code, reason);
  }

  /** Hands the next queued chunk (or the end) to the stream; false if there is nothing to hand. */
  #deliver() {
    if (this.#readableDone) return true;
    const chunk = this.#queue.shift();
    if (chunk !== undefined) {
      this.#queued -= chunk.byteLength;
      this.#controller.enqueue(chunk);
      return true;
    }
    if (this.#ending) {
      this.#readableDone = true;
      if (this.#ending.error) this.#controller.error(this.#ending.error);
      else this.#controller.close();
      return true;
    }
    return false;
  }

  #wakeReader() {
    const wake = this.#wake;
    if (wake) {
      this.#wake = null;
      this.#deliver();
      wake();
    }
  }

  #onMessage(data) {
    if (this.#readableDone || this.#ending) return;
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : messageBytes(data);
    if (!bytes || bytes.byteLength === 0) return;
    if (this.#queued + bytes.byteLength > this.#maxReadBuffer) {
      const error = new WsbridgeError(
        `read buffer overflow: the reader fell more than ${this.#maxReadBuffer} bytes behind`,
        { code: READ_OVERFLOW_CODE },
      );
      this.#ending = { error };
      this.dispatchEvent(new WsbridgeErrorEvent(error));
      this.close(READ_OVERFLOW_CODE, "client read buffer overflow");
      this.#wakeReader();
      return;
    }
    this.#queue.push(bytes);
    this.#queued += bytes.byteLength;
    this.#wakeReader();
  }

  #onClose(code, reason, wasClean) {
    if (this.#closedInfo) return;
    this.#closedInfo = { code, reason, wasClean };
    if (!this.#ending) {
      const normal = code === 1000 || this.#closeRequested;
      this.#ending = normal ? {} : {
        error: new WsbridgeError(`connection closed: ${describeClose(code, reason)}`, {
          code, closeReason: reason, wasClean,
        }),
      };
    }
    this.#wakeReader();
    this.dispatchEvent(new WsbridgeCloseEvent(this.#closedInfo));
    this.#resolveClosed(this.#closedInfo);
  }

  #checkOpen() {
    if (this.#ws.readyState !== 1) {
      const info = this.#closedInfo;
      throw new WsbridgeError("the connection is closed", info ? {
        code: info.code, closeReason: info.reason, wasClean: info.wasClean,
      } : {});
    }
  }

  async #write(chunk) {
    const bytes = toBytes(chunk);
    for (let at = 0; at < bytes.byteLength; at += SEND_PIECE) {
      this.#checkOpen();
      this.#ws.send(bytes.subarray(at, Math.min(at + SEND_PIECE, bytes.byteLength)));
      await this.#drained(this.#writeHighWaterMark);
    }
  }

  /** Resolves once at most `mark` bytes wait in the WebSocket; rejects if it closes first. */
  async #drained(mark) {
    for (;;) {
      this.#checkOpen();
      if (this.#ws.bufferedAmount <= mark) return;
      await new Promise((resolve) => setTimeout(resolve, DRAIN_POLL_MS));
    }
  }
}

/**
 * Opens a WebSocket to the gateway at `url`, does the Socket2Web handshake for `host:port` and resolves
 * with the connected {@link WsbridgeSocket}.
 *
 * Rejects with a {@link WsbridgeError}: the gateway does not offer `protocol`; it refused the target or
 * could not reach it (`reason` is the gateway's, and `code`/`closeReason` the Close that follows: 1008 for
 * a refused target, 1011/1014 for an upstream failure); the WebSocket closed or failed before the status
 * (`code` 1006 for an HTTP refusal such as 403/404, 1013 when the gateway is at capacity); or the whole
 * handshake took longer than `timeoutMs` (name "TimeoutError"). Aborting `signal` rejects with its reason;
 * once connected, it closes the socket.
 *
 * @param {string | URL} url the gateway's ws:// or wss:// URL
 * @param {{host: string, port: number, protocol?: "tcp" | "tls", WebSocket?: typeof WebSocket,
 *   signal?: AbortSignal, timeoutMs?: number, maxReadBuffer?: number, writeHighWaterMark?: number}} options
 * @returns {Promise<WsbridgeSocket>}
 */
export function connect(url, options) {
  const {
    host, port, protocol = "tcp", signal, timeoutMs = 30_000,
    maxReadBuffer = 8 * 1024 * 1024, writeHighWaterMark = 1024 * 1024,
  } = options ?? {};
  const WebSocketImpl = options?.WebSocket ?? globalThis.WebSocket;
  if (typeof host !== "string" || host === "") return Promise.reject(new TypeError("wsbridge: host must be a non-empty string"));
  if (!Number.isInteger(port) || port < 1 || port > 65535) return Promise.reject(new TypeError("wsbridge: port must be an integer in 1..65535"));
  if (protocol !== "tcp" && protocol !== "tls") return Promise.reject(new TypeError('wsbridge: protocol must be "tcp" or "tls"'));
  if (typeof WebSocketImpl !== "function") {
    return Promise.reject(new TypeError("wsbridge: no WebSocket here; pass one as { WebSocket } (e.g. from the ws package)"));
  }
  if (signal?.aborted) return Promise.reject(signal.reason);

  return new Promise((resolve, reject) => {
    const ws = new WebSocketImpl(String(url));
    ws.binaryType = "arraybuffer";
    let stage = "greeting"; // → "status" → "done"
    let failure = null; // the error to reject with once the Close arrives
    let graceTimer = null;
    let timer = null;

    const finish = (error, socket) => {
      if (stage === "done") return;
      stage = "done";
      clearTimeout(timer);
      clearTimeout(graceTimer);
      signal?.removeEventListener("abort", onAbort);
      if (error) {
        ws.onmessage = ws.onclose = null;
        ws.onerror = () => {}; // `ws` (Node) throws on an error event without a listener
        if (ws.readyState === 0 || ws.readyState === 1) ws.close(1000);
        reject(error);
      } else {
        if (signal) signal.addEventListener("abort", () => socket.close(1000, "aborted"), { once: true });
        resolve(socket);
      }
    };
    const onAbort = () => finish(signal.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    timer = setTimeout(() => {
      const error = failure ?? new WsbridgeError(`no answer from the gateway within ${timeoutMs} ms`);
      if (!failure) error.name = "TimeoutError";
      finish(error);
    }, timeoutMs);

    const protocolError = (what) => finish(new WsbridgeError(`not a Socket2Web gateway: ${what}`));

    ws.onmessage = (event) => {
      if (failure) return;
      if (typeof event.data !== "string") return protocolError(`binary data before the ${stage}`);
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        return protocolError(`expected JSON, got ${JSON.stringify(event.data.slice(0, 80))}`);
      }
      if (stage === "greeting") {
        const supported = msg?.supported_protocols;
        if (!supported || typeof supported !== "object") return protocolError("no supported_protocols in the greeting");
        if (!Object.hasOwn(supported, protocol)) {
          return finish(new WsbridgeError(
            `the gateway does not support protocol "${protocol}" (it offers: ${Object.keys(supported).join(", ")})`,
          ));
        }
        stage = "status";
        ws.send(JSON.stringify({ protocol, target_ip: host, target_port: port }));
      } else if (stage === "status") {
        const status = typeof msg?.status === "string" ? msg.status : null;
        if (status === null) return protocolError("no status after the handshake");
        if (status.startsWith(SUCCESS_PREFIX)) {
          ws.onmessage = ws.onclose = ws.onerror = null;
          const socket = new WsbridgeSocket(ws, msg, { host, port, protocol, maxReadBuffer, writeHighWaterMark });
          return finish(null, socket);
        }
        const reason = typeof msg.reason === "string" ? msg.reason : status;
        failure = new WsbridgeError(`gateway: ${reason}`, { reason });
        // The Close with its code follows at once; don't wait for it forever.
        graceTimer = setTimeout(() => finish(failure), Math.min(CLOSE_GRACE_MS, timeoutMs));
      }
    };
    ws.onclose = (event) => {
      const details = { code: event.code, closeReason: event.reason, wasClean: event.wasClean };
      if (failure) {
        Object.assign(failure, details);
        return finish(failure);
      }
      finish(new WsbridgeError(
        `the gateway closed the connection during the ${stage}: ${describeClose(event.code, event.reason)}`,
        details,
      ));
    };
    ws.onerror = () => {}; // a close event follows
  });
}
