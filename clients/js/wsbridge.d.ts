// Types of @wsbridge/client (wsbridge.mjs). See README.md and the comments in wsbridge.mjs for the contract.

/** The Close code sent when the reader falls more than `maxReadBuffer` bytes behind. */
export declare const READ_OVERFLOW_CODE: 4009;

/** The subset of the WHATWG WebSocket this client uses (the platform's, or the `ws` package's). */
export interface WebSocketLike {
  readonly readyState: number;
  readonly bufferedAmount: number;
  binaryType: string;
  send(data: string | ArrayBufferView | ArrayBuffer): void;
  close(code?: number, reason?: string): void;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string; wasClean: boolean }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}

export interface WebSocketConstructor {
  new (url: string): WebSocketLike;
}

export type TargetProtocol = "tcp" | "tls";

export interface ConnectOptions {
  /** The target's host name or IP address (`target_ip` of the handshake). */
  host: string;
  /** The target's port, 1..=65535. */
  port: number;
  /** `"tcp"` (default) or `"tls"` (the gateway dials TLS to the target). */
  protocol?: TargetProtocol;
  /** The WebSocket class to use; default `globalThis.WebSocket` (browsers, Node >= 22). */
  WebSocket?: WebSocketConstructor;
  /** Aborts the connection attempt (rejecting with its reason); once connected, closes the socket. */
  signal?: AbortSignal;
  /** Bound on open + greeting + handshake + the gateway's status, in ms (default 30000). */
  timeoutMs?: number;
  /** Received bytes queued for a slow reader before the socket is closed with 4009 (default 8 MiB). */
  maxReadBuffer?: number;
  /** A write resolves once at most this many bytes wait in the WebSocket (default 1 MiB). */
  writeHighWaterMark?: number;
}

export interface CloseInfo {
  code: number;
  reason: string;
  wasClean: boolean;
}

/** An error of the gateway or of the connection. */
export declare class WsbridgeError extends Error {
  constructor(
    message: string,
    details?: { reason?: string; code?: number; closeReason?: string; wasClean?: boolean; cause?: unknown },
  );
  name: "WsbridgeError" | "TimeoutError";
  /** The gateway's failure `reason`, from its status message. */
  reason?: string;
  /** The WebSocket Close code (1008 refused target, 1011/1014 upstream failure, 1006 abnormal …). */
  code?: number;
  /** The WebSocket Close reason. */
  closeReason?: string;
  wasClean?: boolean;
}

export declare class WsbridgeCloseEvent extends Event {
  constructor(info: CloseInfo);
  readonly type: "close";
  code: number;
  reason: string;
  wasClean: boolean;
}

export declare class WsbridgeErrorEvent extends Event {
  constructor(error: Error);
  readonly type: "error";
  error: Error;
}

export interface WsbridgeSocketEventMap {
  close: WsbridgeCloseEvent;
  error: WsbridgeErrorEvent;
}

/** A connection to a target through the gateway. Made by {@link connect}. */
export declare class WsbridgeSocket extends EventTarget {
  private constructor();
  /** The gateway's success status message (it may carry extra fields). */
  readonly status: { status: string; [field: string]: unknown };
  readonly host: string;
  readonly port: number;
  readonly protocol: TargetProtocol;
  /** The target's bytes. Ends on Close 1000 or after `close()`; errors (WsbridgeError) on other closes,
   * after every byte received before was read. */
  readonly readable: ReadableStream<Uint8Array>;
  /** Bytes to the target, each chunk as Binary frames; strings are UTF-8 encoded. */
  readonly writable: WritableStream<Uint8Array | ArrayBuffer | ArrayBufferView | string>;
  /** Resolves when the WebSocket has closed; never rejects. */
  readonly closed: Promise<CloseInfo>;
  /** Sends a WebSocket Close (code 1000 or 3000–4999); the gateway then ends the target connection. */
  close(code?: number, reason?: string): void;
  addEventListener<K extends keyof WsbridgeSocketEventMap>(
    type: K,
    listener: (event: WsbridgeSocketEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof WsbridgeSocketEventMap>(
    type: K,
    listener: (event: WsbridgeSocketEventMap[K]) => void,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
}

/** Connects to `host:port` through the gateway at `url`; see ConnectOptions and WsbridgeError. */
export declare function connect(url: string | URL, options: ConnectOptions): Promise<WsbridgeSocket>;
