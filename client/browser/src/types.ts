// The client's public shapes: its options, its environment, what it reports.
import type { BackoffOptions } from "./backoff.js";
import type { AirwaveError } from "./errors.js";
import type { FetchLike } from "./polling.js";
import type { ErrorCode, Position } from "./protocol.js";

/**
 * `evicted`: the server closed this, the user's oldest connection, to stay
 * under their cap; nothing reconnects until `connect()` or `reconnect()`.
 */
export type ConnectionState = "connecting" | "open" | "reconnecting" | "gave_up" | "closed" | "evicted";

/** What carries the connection: a WebSocket, or the HTTP API (polling) where WebSockets fail. */
export type Transport = "websocket" | "http";

/** The part of the browser's WebSocket the client uses. */
export interface SocketLike {
  readonly readyState: number;
  readonly protocol: string;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type SocketConstructor = new (url: string, protocols?: string | string[]) => SocketLike;

export interface Timers {
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Page lifecycle signals: online/offline and visibility. */
export interface Lifecycle {
  isOnline(): boolean;
  isHidden(): boolean;
  /** Registers the listeners; returns a function that removes them. */
  listen(handlers: { online(): void; offline(): void; visibility(): void }): () => void;
}

export interface AirwaveOptions {
  url: string;
  /** Called before every attempt (also the prompt one after `token_expired`), so an expired token is replaced rather than retried. */
  getToken?: () => Promise<string | null | undefined> | string | null | undefined;
  /** Where the token goes: a subprotocol (recommended: it stays out of URLs and logs) or the `token` query parameter. */
  tokenIn?: "subprotocol" | "query";
  backoff?: Partial<BackoffOptions>;
  /** Failures within `breakerWindowMs` that make the client give up (0: off). Default 20 in 60 s. */
  breakerThreshold?: number;
  breakerWindowMs?: number;
  /** A socket counts as healthy (and resets the backoff) after a pong, a message, or this long open. Default 5 s. */
  healthyAfterMs?: number;
  /** A handshake not done by then is abandoned. Default 10 s. */
  connectTimeoutMs?: number;
  /**
   * Quiet time after which the client sends a keep-alive ping: the time since
   * the last frame it sent (any request restarts it). API Gateway closes a
   * connection idle for 10 minutes. Default 540 s (9 minutes): a hidden tab's
   * throttled timers may run up to a minute late (Chrome), which still lands
   * the ping within the 10 minutes.
   */
  keepAliveAfterMs?: number;
  /** @deprecated Use `keepAliveAfterMs`, which it sets when that is not given. Pings are no longer periodic: they go after this much quiet. */
  pingIntervalMs?: number;
  /** A ping unanswered this long replaces the socket. Default 10 s. */
  pongTimeoutMs?: number;
  /** Default timeout of each request. Default 10 s. */
  requestTimeoutMs?: number;
  /** Requests made while disconnected wait (up to their timeout) in a queue this long; past it they fail. Default 100. */
  maxQueued?: number;
  /** How long a gap in a channel's offsets may stay open before the client re-fetches it. Default 2 s. */
  gapTimeoutMs?: number;
  /** Message ids remembered for duplicate detection. Default 1000. */
  dedupeCapacity?: number;
  /** A page hidden longer than this is checked at once when it is shown again. Default 30 s. */
  wakeCheckAfterMs?: number;
  /**
   * The HTTP API's URL (the stack's `HttpApiUrl`; the local stack's is its
   * gateway's, `http://127.0.0.1:3001`). With it the client falls back to
   * HTTP where WebSockets fail: it polls its channels' history and publishes
   * over HTTP, with the same messages, positions and order.
   */
  httpUrl?: string;
  /**
   * `auto` (default): a WebSocket, and HTTP after `fallbackAfterFailures`
   * sockets in a row failed before they proved healthy (needs `httpUrl`),
   * trying a WebSocket again every `probeIntervalMs`; `websocket`: never
   * HTTP; `http`: HTTP only.
   */
  transport?: "auto" | Transport;
  /** Sockets in a row that fail before they prove healthy, after which `auto` switches transport. Default 3. */
  fallbackAfterFailures?: number;
  /** On HTTP: the wait after a poll that brought messages, doubled after each empty one up to `pollMaxMs`. Defaults 1 s and 4 s. */
  pollMinMs?: number;
  pollMaxMs?: number;
  /** On HTTP with `auto`: how often a WebSocket is tried again (a ping that gets its pong switches back). Default 5 minutes: each try is a connect and a disconnect, which cost more than the polls between them. */
  probeIntervalMs?: number;
  /** The `fetch` the HTTP transport uses (default: the global one). */
  fetch?: FetchLike;
  WebSocket?: SocketConstructor;
  timers?: Timers;
  now?: () => number;
  random?: () => number;
  lifecycle?: Lifecycle | null;
  debug?: (message: string, detail?: unknown) => void;
}

export interface ChannelMessage<T = unknown> {
  id: string;
  channel: string | null;
  data: T;
  position: Position | null;
  /** The publisher's user id, when an authenticated client published it. */
  publisher: string | null;
  /** The user a producer addressed the message to (then `channel` and `position` are null); null for other messages. */
  toUser: string | null;
}

export type MessageHandler<T = unknown> = (data: T, message: ChannelMessage<T>) => void;

export interface RecoveryEvent {
  channel: string;
  recovered: boolean;
  /** `gap`: a missing offset could not be re-fetched; `epoch`: the channel's history was reset. */
  reason?: "reconnect" | "gap" | "epoch";
}

/** A `closing` frame: the server is about to close the connection, and why. */
export interface ClosingEvent {
  /** `token_expired`, `evicted`, or a code a newer server added. */
  code: ErrorCode;
  message: string;
}

export interface ClientStats {
  state: ConnectionState;
  transport: Transport;
  /** Sockets created since the client was made. */
  socketsOpened: number;
  attempt: number;
  reconnects: number;
  messagesReceived: number;
  duplicatesDropped: number;
  gapsRefetched: number;
  recoveryFailures: number;
  /** Subscribe requests sent (first subscriptions, resubscribes, gap re-fetches). */
  subscribeRequests: number;
  pendingRequests: number;
  queuedRequests: number;
  /** Per channel: the last delivered position, messages buffered past a gap, and whether the current socket's subscription is confirmed. */
  channels: Record<string, { position: Position | null; buffered: number; subscribed: boolean }>;
}

export interface ClientEvents {
  state: (state: ConnectionState, previous: ConnectionState) => void;
  recovery: (event: RecoveryEvent) => void;
  /** Messages sent to every connection (no channel, no `toUser`). */
  broadcast: (message: ChannelMessage) => void;
  /** Messages a producer addressed to this connection's user (`toUser` set), in arrival order. */
  user: (message: ChannelMessage) => void;
  /** The server said it is closing the connection, before the client acts on it. */
  closing: (event: ClosingEvent) => void;
  /** The client switched transport (to HTTP where WebSockets fail, and back). */
  transport: (transport: Transport) => void;
  error: (error: AirwaveError) => void;
}

export type Unsubscribe = (() => void) & {
  /** Settles when the server confirmed the (first) subscription. */
  ready: Promise<void>;
};
