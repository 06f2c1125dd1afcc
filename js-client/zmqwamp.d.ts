// Type declarations for zmqwamp-client (the ES module, the CommonJS build and the
// browser bundle's global `zmq`).  Kept by hand next to src/, and checked both ways
// (`npm run typecheck`): src/ (JavaScript with JSDoc) must implement these declarations
// (test/types/conformance.ts), and the README's examples and test/types/usage.ts must
// compile against them (test/build.test.mjs).

/** libzmq's socket type numbers; zmqwamp-client offers REQ, SUB, DEALER and PUSH. */
export declare const PUB: 1;
export declare const SUB: 2;
export declare const REQ: 3;
export declare const REP: 4;
export declare const DEALER: 5;
export declare const PUSH: 8;
export declare const version: string;

/** Error URIs raised by the client itself; errors from the bridge keep the bridge's URI. */
export declare const ERRORS: {
  readonly DISCONNECTED: "zmqwamp.error.disconnected";
  readonly CLOSED: "zmqwamp.error.closed";
  readonly CANCELED: "wamp.error.canceled";
  readonly INVALID_ARGUMENT: "wamp.error.invalid_argument";
};

/** The bundled (browser) or imported (Node) Autobahn module. */
export declare const autobahn: any;

/**
 * A value in a frame.  Out: a string is sent as its UTF-8 bytes, bytes as they are, any
 * other JSON value as its JSON text.  In: JSON if the frame parses as JSON, else text if
 * it is UTF-8, else bytes (the bridge's `auto` codec).
 */
export type Frame = string | number | boolean | null | Uint8Array | FrameObject | Frame[];
export interface FrameObject {
  [key: string]: Frame;
}
/** What may be sent: a Frame, or bytes in any ArrayBuffer form. */
export type Sendable = Frame | ArrayBuffer | ArrayBufferView;

/** A failure: `uri` is the WAMP error URI (e.g. "wamp.error.not_authorized"). */
export declare class ZmqError extends Error {
  constructor(uri: string, message?: string, details?: { args?: unknown[]; kwargs?: Record<string, unknown> });
  /** Always "ZmqError". */
  readonly name: string;
  /** The WAMP error URI. */
  readonly uri: string;
  /** Same as `uri` (Autobahn's name for it). */
  readonly error: string;
  readonly args: unknown[];
  readonly kwargs: Record<string, unknown>;
}

export interface ReconnectOptions {
  /** Seconds before the first retry (default 0.5). */
  initialDelay?: number;
  /** Cap on the delay between retries in seconds (default 30). */
  maxDelay?: number;
  /** Growth factor of the delay per failed attempt (default 1.5). */
  growth?: number;
  /** Random +/- fraction applied to every delay (default 0.1). */
  jitter?: number;
  /** Failed attempts in a row before giving up (default Infinity). */
  maxRetries?: number;
}

export interface ContextOptions {
  /** WAMP realm (default "zmqwamp"). */
  realm?: string;
  /** WAMP serializer (default "json"; "msgpack" when `binary` is true). */
  serializer?: "json" | "msgpack" | "cbor";
  /** Shorthand for serializer "msgpack". */
  binary?: boolean;
  /** Reconnect policy, or false to never reconnect. */
  reconnect?: ReconnectOptions | false;
  /** Milliseconds a first connect may take (default 10000). */
  connectTimeout?: number;
  /** Milliseconds the client waits past a request's timeout for the bridge's answer (default 2000). */
  timeoutGrace?: number;
  /**
   * The WebSocket class this context's connections use (default: the global `WebSocket`).
   * For runtimes without one (Node 20: `require("ws").WebSocket`) or to customise connections;
   * the global is never changed.
   */
  WebSocket?: WebSocketClass;
  /** Where the client's own warnings and errors go (default: `console`). */
  logger?: Logger;
}

/** A WebSocket class with the WHATWG API: browsers', Node 22's global, the `ws` package's. */
export type WebSocketClass = new (url: string, protocols?: string | string[]) => unknown;

/**
 * The client's warnings (an "error" event nobody listens to, a deprecated call) go to `warn`,
 * exceptions thrown by listeners and WAMP protocol errors to `error`.
 */
export interface Logger {
  warn(...args: unknown[]): void;
  error(...args: unknown[]): void;
}

/** No credentials: an anonymous session (the bridge must run with --anonymous). */
export interface AnonymousOptions {
  username?: undefined;
  password?: undefined;
  token?: undefined;
  secret?: undefined;
  method?: "anonymous";
}
/** WAMP "ticket": authid = username, ticket = password. */
export interface PasswordOptions {
  username: string;
  password: string;
  method?: "ticket";
}
/** WAMP "ticket" with a token (e.g. a JWT from your web app); the username is optional. */
export interface TokenOptions {
  token: string;
  username?: string;
  method?: "ticket";
}
/** WAMP-CRA: the secret never crosses the wire (salted keys are derived as the bridge asks). */
export interface WampCraOptions {
  username: string;
  secret: string;
  method: "wampcra";
}
export type Credentials = AnonymousOptions | PasswordOptions | TokenOptions | WampCraOptions;

export type ReqOptions = Credentials & {
  /** Default per-request timeout in milliseconds (the bridge's default applies otherwise). */
  timeout?: number;
};
export type SubOptions = Credentials & {
  /** ZeroMQ subscription prefix of the first frame; none: every message. */
  filter?: string | Uint8Array;
  /**
   * Ask for the endpoint's last message at once (WAMP `get_retained`): the newest one the bridge
   * holds that matches the filter, before any live one.  Needs an endpoint alias with `history`.
   */
  lastValue?: boolean;
};

/**
 * Messages were missed: the bridge could not replay everything after `since` (the last
 * publication id the socket had) when it resubscribed after a reconnect, or while it replayed.
 */
export interface GapInfo {
  /** Publication id of the last message the socket had before the gap. */
  since: number;
  /** Publication id of the first message after the gap (the one the callback gets next). */
  first: number;
  /**
   * Why: "history" (the bridge no longer holds every message after `since`), "epoch" (another
   * bridge process, e.g. after a restart or on another worker), "no_history" (the endpoint keeps
   * no history), "slow_consumer" (the bridge stopped replaying at this client's full outgoing
   * buffer and the socket could not resume: only when that resubscription was refused); another
   * bridge may give other reasons.
   */
  reason: "history" | "epoch" | "no_history" | "slow_consumer" | (string & {});
}

export type DealerOptions = Credentials & {
  /** Default timeout of each request in milliseconds: to the first reply, then between replies. */
  timeout?: number;
};
export type PushOptions = Credentials & {
  /** Default time in milliseconds a send may wait for the bridge's acknowledgement (none by default). */
  timeout?: number;
};

export interface RequestOptions {
  /** Milliseconds; the bridge answers "wamp.error.canceled" when it expires. */
  timeout?: number;
  /** `msg` is an array of frames, and the reply is always an array of frames. */
  multipart?: boolean;
}

export interface SendOptions extends RequestOptions {
  /** Hears the failure; without it the failure goes to the context's "error" listeners. */
  errback?: ((error: ZmqError) => void) | null;
}

/** A DEALER request's options. */
export interface StreamOptions {
  /**
   * Milliseconds to the first reply, then between replies (WAMP CALL option `timeout`): when it
   * expires the stream fails with "wamp.error.canceled".
   */
  timeout?: number;
  /** `msg` is an array of frames, and every part is an array of frames. */
  multipart?: boolean;
}

export interface StreamSendOptions extends StreamOptions {
  /** Hears the failure; without it the failure goes to the context's "error" listeners. */
  errback?: ((error: ZmqError) => void) | null;
}

/** What `dealer.send()`'s callback is told with each part. */
export interface PartInfo {
  /** True for the last part (the final reply): nothing follows. */
  last: boolean;
  /** The part's frames (empty for a final reply without frames). */
  frames: Frame[];
}

/**
 * WAMP CANCEL modes: "killnowait" (the default: the service is told to stop, where the bridge can
 * tell it, and the stream ends at once), "kill" (the same; the bridge answers once the service
 * stopped), "skip" (the service is not told; the bridge drops its replies).
 */
export type CancelMode = "skip" | "kill" | "killnowait";

/** "open" until the final reply ("done"), a failure ("failed") or `cancel()` ("canceled"). */
export type StreamState = "open" | "done" | "failed" | "canceled";

/**
 * The replies to one DEALER request.  From `dealer.stream()` it is async-iterable: each part's value
 * (the frame, or the array of frames) until the last; the iteration throws the ZmqError of a
 * failure, and leaving it early (break, return, an exception) cancels the stream.
 */
export declare class ReplyStream implements AsyncIterable<any> {
  /** Made by `dealer.send()` and `dealer.stream()`. */
  private constructor();
  readonly endpoint: string;
  readonly state: StreamState;
  /** Parts received so far. */
  readonly parts: number;
  /** Why the stream failed (state "failed"), else null. */
  readonly error: ZmqError | null;
  /**
   * End the stream now (default mode "killnowait"): nothing of it reaches the application any more.
   * Resolves once the bridge answered the CANCEL (at once if the request had not left yet); never rejects.
   */
  cancel(mode?: CancelMode): Promise<void>;
  [Symbol.asyncIterator](): AsyncIterator<any, undefined>;
}

export interface SessionInfo {
  session: number;
  authid?: string;
  authrole?: string;
  authmethod?: string;
  realm: string;
  serializer: "json" | "msgpack" | "cbor";
  /** True when this session replaces one that was lost. */
  reconnected: boolean;
}

export interface CloseInfo {
  /** Autobahn's reason: "closed", "lost", "unreachable", ... */
  reason: string;
  /** WAMP reason URI from the bridge, if any (e.g. "wamp.close.system_shutdown"). */
  uri: string | null;
  message: string;
  willRetry: boolean;
  /** Seconds until the next attempt, when willRetry. */
  delay?: number | null;
}

export type SocketState = "connecting" | "open" | "reconnecting" | "failed" | "closed";

declare class BaseSocket {
  readonly context: ZmqContext;
  readonly endpoint: string;
  readonly closed: boolean;
  readonly state: SocketState;
  /** Release the socket; the last socket of a session ends the session.  Never rejects. */
  close(): Promise<void>;
}

export declare class ReqSocket extends BaseSocket {
  /** Made by `ctx.Socket(zmq.REQ, ...)`. */
  private constructor();
  readonly type: 3;
  /** Callback form: `callback(reply, frames)`; failures go to `options.errback` or the context's "error". */
  send(
    msg: Sendable | Sendable[],
    callback?: ((reply: any, frames: Frame[]) => void) | null,
    options?: SendOptions | null,
  ): void;
  /** @deprecated use `send(msg, callback, {errback, timeout, multipart})`; this form goes away in the next release. */
  send(
    msg: Sendable | Sendable[],
    callback: ((reply: any, frames: Frame[]) => void) | null | undefined,
    errback: ((error: ZmqError) => void) | null | undefined,
    options?: RequestOptions,
  ): void;
  /** Promise form: resolves with the reply (an array of frames for a multipart reply). */
  request(msg: Sendable | Sendable[], options?: RequestOptions): Promise<any>;
}

export declare class DealerSocket extends BaseSocket {
  /** Made by `ctx.Socket(zmq.DEALER, ...)`. */
  private constructor();
  readonly type: 5;
  /**
   * Callback form: `callback(part, {last, frames})` for each reply as it arrives, `last` true for the
   * final one; failures go to `options.errback` or the context's "error".  Returns the stream (to cancel it).
   */
  send(
    msg: Sendable | Sendable[],
    callback?: ((part: any, info: PartInfo) => void) | null,
    options?: StreamSendOptions | null,
  ): ReplyStream;
  /** Async-iterator form: `for await (const part of dealer.stream(msg))`. */
  stream(msg: Sendable | Sendable[], options?: StreamOptions): ReplyStream;
  /** Cancels the streams still open (they fail with "zmqwamp.error.closed"), then releases the socket. */
  close(): Promise<void>;
}

export declare class PushSocket extends BaseSocket {
  /** Made by `ctx.Socket(zmq.PUSH, ...)`. */
  private constructor();
  readonly type: 8;
  /**
   * Resolves once the bridge's ZeroMQ PUSH took the message (WAMP PUBLISHED); rejects with the
   * bridge's error (e.g. "zmqwamp.error.backend_unavailable": no PULL worker, or all at their
   * high-water mark) or as a REQ request does when not connected.
   */
  send(msg: Sendable | Sendable[], options?: RequestOptions): Promise<void>;
}

export declare class SubSocket extends BaseSocket {
  /** Made by `ctx.Socket(zmq.SUB, ...)`. */
  private constructor();
  readonly type: 2;
  /** Set the handler `fn(msg, frames)`; `errback` hears subscribe failures (e.g. not authorized). */
  callback(fn: (msg: any, frames: Frame[]) => void, errback?: (error: ZmqError) => void): this;
  /** Resolves when the bridge confirmed the subscription in the current session. */
  ready(): Promise<this>;
  /** "gap": messages were missed across a reconnect; emitted before the callback gets the next message. */
  on(event: "gap", fn: (gap: GapInfo) => void): this;
  off(event: "gap", fn: (gap: GapInfo) => void): this;
}

export declare class ZmqContext {
  constructor(url: string, options?: ContextOptions);
  readonly url: string;
  readonly realm: string;
  readonly serializer: "json" | "msgpack" | "cbor";
  readonly closed: boolean;
  /** WAMP sessions (WebSockets) held: one per distinct set of credentials. */
  readonly sessionCount: number;
  Socket(type: typeof REQ | "REQ" | "req", endpoint: string, options?: ReqOptions): ReqSocket;
  Socket(type: typeof SUB | "SUB" | "sub", endpoint: string, options?: SubOptions): SubSocket;
  Socket(type: typeof DEALER | "DEALER" | "dealer", endpoint: string, options?: DealerOptions): DealerSocket;
  Socket(type: typeof PUSH | "PUSH" | "push", endpoint: string, options?: PushOptions): PushSocket;
  socket(type: typeof REQ | "REQ" | "req", endpoint: string, options?: ReqOptions): ReqSocket;
  socket(type: typeof SUB | "SUB" | "sub", endpoint: string, options?: SubOptions): SubSocket;
  socket(type: typeof DEALER | "DEALER" | "dealer", endpoint: string, options?: DealerOptions): DealerSocket;
  socket(type: typeof PUSH | "PUSH" | "push", endpoint: string, options?: PushOptions): PushSocket;
  on(event: "open", fn: (info: SessionInfo) => void): this;
  on(event: "close", fn: (info: CloseInfo) => void): this;
  on(event: "error", fn: (error: ZmqError) => void): this;
  off(event: "open" | "close" | "error", fn: (...args: any[]) => void): this;
  /** Close every socket and session; resolves when the WebSockets are closed. */
  close(): Promise<void>;
}

/** `zmq.Context(url, {realm})`, with or without `new`. */
export declare function Context(url: string, options?: ContextOptions): ZmqContext;

export as namespace zmq;
// Only what is exported above is the module's API (BaseSocket is a declaration helper, not an export).
export {};
