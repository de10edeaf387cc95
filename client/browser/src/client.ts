import { backoffDelay, CircuitBreaker, DEFAULT_BACKOFF, type BackoffOptions } from "./backoff.js";
import { AirwaveError } from "./errors.js";
import {
  isMessageFrame,
  isPosition,
  parseFrame,
  REPLY_TYPE,
  type ClientRequest,
  type ErrorCode,
  type MessageFrame,
  type Position,
  type ReplyFor,
  type ReplyFrame,
  type RequestId,
  type Stats,
  type SubscribedFrame,
} from "./protocol.js";
import { RecentIds } from "./recent.js";

export type ConnectionState = "connecting" | "open" | "reconnecting" | "gave_up" | "closed";

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
  /** Called before every attempt, so an expired token is replaced rather than retried. */
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
  /** Ping period. Default 180 s: under API Gateway's 10-minute idle timeout even when a hidden tab's timers run late. */
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
}

export type MessageHandler<T = unknown> = (data: T, message: ChannelMessage<T>) => void;

export interface RecoveryEvent {
  channel: string;
  recovered: boolean;
  /** `gap`: a missing offset could not be re-fetched; `epoch`: the channel's history was reset. */
  reason?: "reconnect" | "gap" | "epoch";
}

export interface ClientStats {
  state: ConnectionState;
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

interface ClientEvents {
  state: (state: ConnectionState, previous: ConnectionState) => void;
  recovery: (event: RecoveryEvent) => void;
  /** Messages sent to every connection (no channel). */
  broadcast: (message: ChannelMessage) => void;
  error: (error: AirwaveError) => void;
}

export type Unsubscribe = (() => void) & {
  /** Settles when the server confirmed the (first) subscription. */
  ready: Promise<void>;
};

interface PendingRequest {
  id: number;
  request: ClientRequest;
  resolve: (reply: ReplyFrame) => void;
  reject: (error: AirwaveError) => void;
  timer: unknown;
  /** Sent on the current socket (vs. queued waiting for one). */
  sent: boolean;
  /** Internal requests (pings, resubscribes) are not queued: they belong to one socket. */
  internal: boolean;
}

interface ChannelState {
  handlers: Set<MessageHandler>;
  last: Position | null;
  /** Out-of-order messages waiting for the gap before them, by offset. */
  buffer: Map<number, MessageFrame>;
  /** Messages that arrived while a subscribe was in flight. */
  held: MessageFrame[];
  awaiting: boolean;
  gapTimer: unknown;
  unsubscribeTimer: unknown;
  ready: Promise<void>;
  settleReady: (error?: AirwaveError) => void;
  confirmed: boolean;
  /** Confirmed on the current socket. */
  live: boolean;
}

const OPEN = 1;

function defaultLifecycle(): Lifecycle | null {
  const win = (globalThis as { window?: Window }).window;
  const doc = (globalThis as { document?: Document }).document;
  if (!win || !doc) return null;
  return {
    isOnline: () => (typeof navigator === "undefined" ? true : navigator.onLine !== false),
    isHidden: () => doc.visibilityState === "hidden",
    listen(handlers) {
      win.addEventListener("online", handlers.online);
      win.addEventListener("offline", handlers.offline);
      doc.addEventListener("visibilitychange", handlers.visibility);
      return () => {
        win.removeEventListener("online", handlers.online);
        win.removeEventListener("offline", handlers.offline);
        doc.removeEventListener("visibilitychange", handlers.visibility);
      };
    },
  };
}

/**
 * One logical connection to an Airwave endpoint: at most one socket at a time,
 * reconnecting with jittered backoff, resubscribing with recovery, and
 * delivering each channel's messages once and in position order.
 */
export class AirwaveClient {
  private readonly options: Required<
    Omit<AirwaveOptions, "getToken" | "backoff" | "WebSocket" | "lifecycle" | "debug">
  > & { backoff: BackoffOptions };
  private readonly WebSocketImpl: SocketConstructor;
  private readonly timers: Timers;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly lifecycle: Lifecycle | null;
  private readonly debug: (message: string, detail?: unknown) => void;
  private readonly getToken: AirwaveOptions["getToken"];
  private readonly breaker: CircuitBreaker;
  private readonly recent: RecentIds;

  private current: ConnectionState = "closed";
  private socket: SocketLike | null = null;
  /** Bumped for every socket, so late events of an abandoned one are ignored. */
  private generation = 0;
  private attempt = 0;
  private healthy = false;
  private retryTimer: unknown = null;
  private connectTimer: unknown = null;
  private healthyTimer: unknown = null;
  private pingTimer: unknown = null;
  private pingDueAt = 0;
  private hiddenAt: number | null = null;
  private waitingForOnline = false;
  private stopListening: (() => void) | null = null;
  private openWaiters: { resolve: () => void; reject: (error: AirwaveError) => void }[] = [];

  private nextId = 1;
  /** Servers from before request ids refuse an `id` field; then requests go without one. */
  private sendIds = true;
  private readonly pending = new Map<number, PendingRequest>();
  private readonly channels = new Map<string, ChannelState>();
  private readonly listeners: { [K in keyof ClientEvents]: Set<ClientEvents[K]> } = {
    state: new Set(),
    recovery: new Set(),
    broadcast: new Set(),
    error: new Set(),
  };
  private counters = {
    socketsOpened: 0,
    reconnects: 0,
    messagesReceived: 0,
    duplicatesDropped: 0,
    gapsRefetched: 0,
    recoveryFailures: 0,
    subscribeRequests: 0,
  };

  constructor(options: AirwaveOptions) {
    this.options = {
      url: options.url,
      tokenIn: options.tokenIn ?? "subprotocol",
      backoff: { ...DEFAULT_BACKOFF, ...options.backoff },
      breakerThreshold: options.breakerThreshold ?? 20,
      breakerWindowMs: options.breakerWindowMs ?? 60_000,
      healthyAfterMs: options.healthyAfterMs ?? 5_000,
      connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
      pingIntervalMs: options.pingIntervalMs ?? 180_000,
      pongTimeoutMs: options.pongTimeoutMs ?? 10_000,
      requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
      maxQueued: options.maxQueued ?? 100,
      gapTimeoutMs: options.gapTimeoutMs ?? 2_000,
      dedupeCapacity: options.dedupeCapacity ?? 1_000,
      wakeCheckAfterMs: options.wakeCheckAfterMs ?? 30_000,
      timers: options.timers ?? {
        setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
        clearTimeout: (handle) => globalThis.clearTimeout(handle as Parameters<typeof globalThis.clearTimeout>[0]),
      },
      now: options.now ?? (() => Date.now()),
      random: options.random ?? Math.random,
    };
    const ctor = options.WebSocket ?? (globalThis as { WebSocket?: SocketConstructor }).WebSocket;
    if (!ctor) throw new AirwaveError("not_connected", "no WebSocket implementation: pass options.WebSocket");
    this.WebSocketImpl = ctor;
    this.timers = this.options.timers;
    this.now = this.options.now;
    this.random = this.options.random;
    this.lifecycle = options.lifecycle === undefined ? defaultLifecycle() : options.lifecycle;
    this.debug = options.debug ?? (() => {});
    this.getToken = options.getToken;
    this.breaker = new CircuitBreaker(this.options.breakerThreshold, this.options.breakerWindowMs);
    this.recent = new RecentIds(this.options.dedupeCapacity);
  }

  get state(): ConnectionState {
    return this.current;
  }

  on<K extends keyof ClientEvents>(event: K, listener: ClientEvents[K]): () => void {
    this.listeners[event].add(listener);
    return () => {
      this.listeners[event].delete(listener);
    };
  }

  /**
   * Opens the connection; resolves once a socket is open. Calling it again
   * while connecting or open shares the same socket.
   */
  connect(): Promise<void> {
    if (this.current === "open") return Promise.resolve();
    const opened = new Promise<void>((resolve, reject) => this.openWaiters.push({ resolve, reject }));
    if (this.current === "closed" || this.current === "gave_up") {
      this.start();
    }
    return opened;
  }

  /** Starts over now: a fresh attempt budget and breaker, a new socket. */
  reconnect(): Promise<void> {
    const opened = new Promise<void>((resolve, reject) => this.openWaiters.push({ resolve, reject }));
    this.start();
    return opened;
  }

  /** Closes the connection for good (until `connect()` again). Subscriptions are kept for that. */
  close(): void {
    this.clearConnectionTimers();
    this.dropSocket(1000, "client closed");
    this.failRequests(new AirwaveError("closed", "the client was closed"), () => true);
    this.setState("closed");
    this.rejectWaiters(new AirwaveError("closed", "the client was closed"));
    this.stopListening?.();
    this.stopListening = null;
  }

  /** Subscribes `handler` to `channel`; returns the function that unsubscribes it. */
  subscribe<T = unknown>(channel: string, handler: MessageHandler<T>): Unsubscribe {
    let state = this.channels.get(channel);
    if (!state) {
      let settle: (error?: AirwaveError) => void = () => {};
      const ready = new Promise<void>((resolve, reject) => {
        settle = (error) => (error ? reject(error) : resolve());
      });
      // A caller that ignores `ready` must not see an unhandled rejection.
      ready.catch(() => {});
      state = {
        handlers: new Set(),
        last: null,
        buffer: new Map(),
        held: [],
        awaiting: false,
        gapTimer: null,
        unsubscribeTimer: null,
        ready,
        settleReady: settle,
        confirmed: false,
        live: false,
      };
      this.channels.set(channel, state);
      if (this.current === "open") this.sendSubscribe(channel, state, "reconnect");
    } else if (state.unsubscribeTimer !== null) {
      // Unsubscribed and subscribed again in one go (React StrictMode): keep the subscription.
      this.timers.clearTimeout(state.unsubscribeTimer);
      state.unsubscribeTimer = null;
    }
    const entry = handler as MessageHandler;
    state.handlers.add(entry);
    const current = state;
    const unsubscribe = () => this.removeHandler(channel, current, entry);
    return Object.assign(unsubscribe, { ready: current.ready });
  }

  /** Drops every handler of `channel` and leaves it. */
  unsubscribe(channel: string): void {
    const state = this.channels.get(channel);
    if (!state) return;
    for (const handler of [...state.handlers]) this.removeHandler(channel, state, handler);
  }

  /** Publishes `data` to `channel` (null: every connection); resolves to the message id. */
  async publish(channel: string | null, data: unknown): Promise<string> {
    const request =
      channel === null ? { action: "publish" as const, data } : { action: "publish" as const, channel, data };
    const reply = await this.request<"publish">(request);
    const messageId = reply.message_id ?? (typeof reply.id === "string" ? reply.id : undefined);
    if (messageId === undefined) throw new AirwaveError("invalid_request", "published reply without a message id");
    return messageId;
  }

  /** The server's `stats` reply. */
  async serverStats(): Promise<Stats> {
    const reply = await this.request<"stats">({ action: "stats" });
    const { type: _type, id: _id, ...stats } = reply;
    return stats;
  }

  /** Checks the socket now: a ping when open, an attempt now when waiting to reconnect. */
  ping(): Promise<void> {
    return this.request({ action: "ping" }).then(() => undefined);
  }

  /** The client's own counters. */
  stats(): ClientStats {
    const channels: ClientStats["channels"] = {};
    for (const [name, state] of this.channels) {
      channels[name] = { position: state.last, buffered: state.buffer.size, subscribed: state.live };
    }
    let queued = 0;
    for (const request of this.pending.values()) if (!request.sent) queued += 1;
    return {
      state: this.current,
      attempt: this.attempt,
      ...this.counters,
      pendingRequests: this.pending.size - queued,
      queuedRequests: queued,
      channels,
    };
  }

  /** Sends one request and waits for its reply (paired by `id`). */
  request<A extends ClientRequest["action"]>(
    request: Extract<ClientRequest, { action: A }>,
    options: { timeoutMs?: number } = {},
  ): Promise<ReplyFor<A>> {
    return this.sendRequest(request, options.timeoutMs ?? this.options.requestTimeoutMs, false) as Promise<ReplyFor<A>>;
  }

  // --- connection ---------------------------------------------------------

  private start(): void {
    this.clearConnectionTimers();
    this.dropSocket(1000, "starting over");
    this.attempt = 0;
    this.breaker.reset();
    if (!this.stopListening && this.lifecycle) {
      this.stopListening = this.lifecycle.listen({
        online: () => this.onOnline(),
        offline: () => this.onOffline(),
        visibility: () => this.onVisibility(),
      });
    }
    this.setState("connecting");
    void this.openSocket();
  }

  private async openSocket(): Promise<void> {
    const generation = ++this.generation;
    if (this.lifecycle && !this.lifecycle.isOnline()) {
      // Offline: an attempt could only fail; wait for the `online` event instead of spending one.
      this.waitingForOnline = true;
      this.debug("offline; waiting for the online event");
      return;
    }
    let token: string | null | undefined;
    try {
      token = this.getToken ? await this.getToken() : undefined;
    } catch (error) {
      if (generation !== this.generation) return;
      this.emitError(new AirwaveError("not_connected", `getToken failed: ${String(error)}`));
      this.handleFailure(generation);
      return;
    }
    if (generation !== this.generation || this.current === "closed" || this.current === "gave_up") return;
    // Never two sockets: whatever was there is closed before the new one opens.
    this.dropSocket(1000, "replaced");
    let url = this.options.url;
    const protocols = ["airwave"];
    if (token) {
      if (this.options.tokenIn === "query") {
        url += (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
      } else {
        protocols.push(token);
      }
    }
    let socket: SocketLike;
    try {
      socket = new this.WebSocketImpl(url, protocols);
    } catch (error) {
      this.emitError(new AirwaveError("not_connected", `cannot create a WebSocket: ${String(error)}`));
      this.handleFailure(generation);
      return;
    }
    this.socket = socket;
    this.counters.socketsOpened += 1;
    this.healthy = false;
    this.connectTimer = this.timers.setTimeout(() => {
      this.connectTimer = null;
      if (generation !== this.generation) return;
      this.debug("handshake timed out");
      this.handleFailure(generation);
    }, this.options.connectTimeoutMs);
    socket.onopen = () => {
      if (generation !== this.generation) return;
      this.onSocketOpen(generation);
    };
    socket.onmessage = (event) => {
      if (generation !== this.generation) return;
      if (typeof event.data === "string") this.onFrame(event.data);
    };
    // A refused handshake looks the same whatever the HTTP status (error, then close 1006),
    // so every failure is treated alike: backoff, and a fresh token on the next attempt.
    socket.onerror = () => {
      this.debug("socket error");
    };
    socket.onclose = (event) => {
      if (generation !== this.generation) return;
      this.debug("socket closed", event);
      this.handleFailure(generation);
    };
  }

  private onSocketOpen(generation: number): void {
    this.timers.clearTimeout(this.connectTimer);
    this.connectTimer = null;
    if (this.current === "reconnecting") this.counters.reconnects += 1;
    this.setState("open");
    this.healthyTimer = this.timers.setTimeout(() => {
      this.healthyTimer = null;
      if (generation === this.generation) this.markHealthy();
    }, this.options.healthyAfterMs);
    this.schedulePing();
    for (const [channel, state] of this.channels) {
      if (state.unsubscribeTimer === null) this.sendSubscribe(channel, state, "reconnect");
    }
    for (const request of this.pending.values()) {
      if (!request.sent) this.transmit(request);
    }
    const waiters = this.openWaiters;
    this.openWaiters = [];
    for (const waiter of waiters) waiter.resolve();
  }

  /** A socket that proved itself: the next loss starts the backoff schedule over. */
  private markHealthy(): void {
    if (this.healthy) return;
    this.healthy = true;
    this.attempt = 0;
  }

  /** The socket of `generation` failed to open or was lost. */
  private handleFailure(generation: number): void {
    if (generation !== this.generation) return;
    this.clearConnectionTimers();
    this.dropSocket(4000, "abandoned");
    this.failRequests(
      new AirwaveError("disconnected", "the connection was lost before the reply"),
      (request) => request.sent || request.internal,
    );
    for (const state of this.channels.values()) {
      // Resubscribing with `since` after the reconnect re-fetches any gap.
      state.awaiting = false;
      state.live = false;
      this.timers.clearTimeout(state.gapTimer);
      state.gapTimer = null;
    }
    if (this.current === "closed" || this.current === "gave_up") return;
    if (this.breaker.fail(this.now())) {
      this.giveUp(`${this.breaker.recentFailures} failures within ${this.options.breakerWindowMs} ms`);
      return;
    }
    if (this.attempt >= this.options.backoff.maxAttempts) {
      this.giveUp(`${this.attempt} attempts failed`);
      return;
    }
    const delay = backoffDelay(this.attempt, this.options.backoff, this.random);
    this.attempt += 1;
    this.setState("reconnecting");
    if (this.lifecycle && !this.lifecycle.isOnline()) {
      this.waitingForOnline = true;
      return;
    }
    this.debug(`reconnect attempt ${this.attempt} in ${delay} ms`);
    this.retryTimer = this.timers.setTimeout(() => {
      this.retryTimer = null;
      void this.openSocket();
    }, delay);
  }

  private giveUp(why: string): void {
    this.debug(`giving up: ${why}`);
    this.setState("gave_up");
    const error = new AirwaveError("gave_up", `gave up connecting: ${why}`);
    this.failRequests(error, () => true);
    this.rejectWaiters(error);
  }

  private dropSocket(code: number, reason: string): void {
    const socket = this.socket;
    if (!socket) return;
    this.socket = null;
    socket.onopen = null;
    socket.onmessage = null;
    socket.onclose = null;
    socket.onerror = null;
    try {
      socket.close(code, reason);
    } catch {
      // Already closing or closed.
    }
  }

  private clearConnectionTimers(): void {
    for (const timer of [this.retryTimer, this.connectTimer, this.healthyTimer, this.pingTimer]) {
      if (timer !== null) this.timers.clearTimeout(timer);
    }
    this.retryTimer = this.connectTimer = this.healthyTimer = this.pingTimer = null;
    this.waitingForOnline = false;
  }

  private setState(state: ConnectionState): void {
    const previous = this.current;
    if (previous === state) return;
    this.current = state;
    for (const listener of this.listeners.state) listener(state, previous);
  }

  private rejectWaiters(error: AirwaveError): void {
    const waiters = this.openWaiters;
    this.openWaiters = [];
    for (const waiter of waiters) waiter.reject(error);
  }

  private emitError(error: AirwaveError): void {
    this.debug(error.message);
    for (const listener of this.listeners.error) listener(error);
  }

  // --- heartbeat and page lifecycle --------------------------------------

  private schedulePing(): void {
    if (this.pingTimer !== null) this.timers.clearTimeout(this.pingTimer);
    this.pingDueAt = this.now() + this.options.pingIntervalMs;
    this.pingTimer = this.timers.setTimeout(() => {
      this.pingTimer = null;
      // Timers stop while a machine sleeps; a wall clock far past the due time says it did.
      if (this.now() - this.pingDueAt > this.options.pingIntervalMs) this.debug("woke from a long sleep");
      this.checkNow();
    }, this.options.pingIntervalMs);
  }

  /** Pings now; a ping that gets no pong in time replaces the socket. */
  private checkNow(): void {
    if (this.current === "open" && this.socket) {
      const generation = this.generation;
      this.sendRequest({ action: "ping" }, this.options.pongTimeoutMs, true).then(
        () => {
          if (generation === this.generation) this.markHealthy();
        },
        (error: AirwaveError) => {
          if (error.code === "timeout" && generation === this.generation) {
            this.debug("no pong in time; replacing the socket");
            this.handleFailure(generation);
          }
        },
      );
      this.schedulePing();
    } else if (this.current === "reconnecting" && (this.retryTimer !== null || this.waitingForOnline)) {
      // Waiting out a backoff delay: try now instead.
      if (this.retryTimer !== null) this.timers.clearTimeout(this.retryTimer);
      this.retryTimer = null;
      this.waitingForOnline = false;
      void this.openSocket();
    }
  }

  private onOnline(): void {
    this.debug("online");
    this.checkNow();
  }

  private onOffline(): void {
    this.debug("offline");
    if (this.retryTimer !== null) {
      // Keep the attempt for when the network is back.
      this.timers.clearTimeout(this.retryTimer);
      this.retryTimer = null;
      this.waitingForOnline = true;
    }
  }

  private onVisibility(): void {
    if (!this.lifecycle) return;
    if (this.lifecycle.isHidden()) {
      // Pings go on while hidden: a paused heartbeat would let API Gateway's
      // 10-minute idle timeout close the socket.
      this.hiddenAt = this.now();
      return;
    }
    const hiddenFor = this.hiddenAt === null ? 0 : this.now() - this.hiddenAt;
    this.hiddenAt = null;
    if (hiddenFor >= this.options.wakeCheckAfterMs || this.now() > this.pingDueAt + this.options.pongTimeoutMs) {
      this.checkNow();
    }
  }

  // --- requests -----------------------------------------------------------

  private sendRequest(request: ClientRequest, timeoutMs: number, internal: boolean): Promise<ReplyFrame> {
    return new Promise<ReplyFrame>((resolve, reject) => {
      if (this.current === "closed" || this.current === "gave_up") {
        reject(new AirwaveError("not_connected", `not connected (${this.current})`));
        return;
      }
      const open = this.current === "open" && this.socket !== null && this.socket.readyState === OPEN;
      if (!open && !internal) {
        let queued = 0;
        for (const pending of this.pending.values()) if (!pending.sent) queued += 1;
        if (queued >= this.options.maxQueued) {
          reject(new AirwaveError("queue_full", `${queued} requests already wait for a connection`));
          return;
        }
      }
      const id = this.nextId++;
      const pending: PendingRequest = {
        id,
        request,
        resolve,
        reject,
        internal,
        sent: false,
        timer: this.timers.setTimeout(() => {
          if (this.pending.delete(id)) {
            reject(new AirwaveError("timeout", `no reply to ${request.action} within ${timeoutMs} ms`, id));
          }
        }, timeoutMs),
      };
      this.pending.set(id, pending);
      if (open) this.transmit(pending);
      else if (internal) this.settle(pending, new AirwaveError("disconnected", "no open socket"));
    });
  }

  private transmit(pending: PendingRequest): void {
    if (!this.socket) return;
    pending.sent = true;
    try {
      this.socket.send(JSON.stringify(this.sendIds ? { ...pending.request, id: pending.id } : pending.request));
    } catch (error) {
      this.settle(pending, new AirwaveError("disconnected", `send failed: ${String(error)}`));
    }
  }

  private settle(pending: PendingRequest, outcome: ReplyFrame | AirwaveError): void {
    if (!this.pending.delete(pending.id)) return;
    this.timers.clearTimeout(pending.timer);
    if (outcome instanceof AirwaveError) pending.reject(outcome);
    else if (outcome.type === "error") {
      pending.reject(new AirwaveError(outcome.code, outcome.message, pending.id));
    } else pending.resolve(outcome);
  }

  private failRequests(error: AirwaveError, which: (request: PendingRequest) => boolean): void {
    for (const request of [...this.pending.values()]) {
      if (which(request)) this.settle(request, new AirwaveError(error.code, error.message, request.id));
    }
  }

  /** The request a reply answers: by id, or (servers without request ids) the oldest of the matching kind. */
  private findRequest(reply: ReplyFrame): PendingRequest | undefined {
    if (typeof reply.id === "number") {
      const byId = this.pending.get(reply.id);
      if (byId?.sent) return byId;
    }
    for (const request of this.pending.values()) {
      if (!request.sent) continue;
      if (reply.type === "error") return request;
      if (REPLY_TYPE[request.request.action] !== reply.type) continue;
      if ("channel" in reply && "channel" in request.request && reply.channel !== request.request.channel) continue;
      return request;
    }
    return undefined;
  }

  // --- frames -------------------------------------------------------------

  private onFrame(text: string): void {
    const frame = parseFrame(text);
    if (!frame) {
      this.debug("ignored a frame that is not a JSON object", text);
      return;
    }
    const type = frame.type;
    if (type === "message") {
      this.onActivity();
      this.onMessage(frame);
    } else if (type === "batch") {
      this.onActivity();
      const messages = Array.isArray(frame.messages) ? frame.messages : [];
      for (const message of messages) this.onMessage(message);
    } else if (
      type === "pong" ||
      type === "subscribed" ||
      type === "unsubscribed" ||
      type === "published" ||
      type === "stats" ||
      type === "error"
    ) {
      this.onReply(frame as unknown as ReplyFrame);
    } else if (type === undefined && typeof frame.message === "string") {
      // API Gateway's own error: no request id, so it answers the oldest request.
      const oldest = [...this.pending.values()].find((request) => request.sent);
      const error = new AirwaveError("internal_error", `the server failed: ${frame.message}`, oldest?.id);
      if (oldest) this.settle(oldest, error);
      else this.emitError(error);
    } else {
      this.debug(`ignored a frame of unknown type ${String(type)}`, frame);
    }
  }

  private onActivity(): void {
    this.markHealthy();
  }

  private onReply(reply: ReplyFrame): void {
    const request = this.findRequest(reply);
    if (reply.type === "error" && reply.code === "unknown_connection") {
      // The server forgot this connection: only a new one helps.
      if (request) this.settle(request, reply);
      this.handleFailure(this.generation);
      return;
    }
    if (!request) {
      this.debug("a reply no request waits for", reply);
      return;
    }
    if (
      reply.type === "error" &&
      reply.code === "invalid_request" &&
      this.sendIds &&
      /unknown field `id`/.test(reply.message)
    ) {
      // An older server: send this request again, and the next ones, without ids.
      this.debug("the server does not know request ids; sending without them");
      this.sendIds = false;
      this.transmit(request);
      return;
    }
    this.settle(request, reply);
  }

  // --- channels -----------------------------------------------------------

  private removeHandler(channel: string, state: ChannelState, handler: MessageHandler): void {
    if (!state.handlers.delete(handler) || state.handlers.size > 0) return;
    if (state.unsubscribeTimer !== null) return;
    // Deferred one tick: a subscribe right after (a React remount) cancels it, so the server sees nothing.
    state.unsubscribeTimer = this.timers.setTimeout(() => {
      state.unsubscribeTimer = null;
      if (this.channels.get(channel) !== state || state.handlers.size > 0) return;
      this.timers.clearTimeout(state.gapTimer);
      this.channels.delete(channel);
      state.settleReady(new AirwaveError("closed", "unsubscribed"));
      if (this.current === "open") {
        this.sendRequest({ action: "unsubscribe", channel }, this.options.requestTimeoutMs, true).catch(() => {});
      }
    }, 0);
  }

  private sendSubscribe(channel: string, state: ChannelState, reason: "reconnect" | "gap"): void {
    const since = state.last;
    state.awaiting = true;
    this.counters.subscribeRequests += 1;
    const request: ClientRequest = since ? { action: "subscribe", channel, since } : { action: "subscribe", channel };
    this.sendRequest(request, this.options.requestTimeoutMs, true).then(
      (reply) => {
        if (this.channels.get(channel) === state) this.onSubscribed(channel, state, reply as SubscribedFrame, since, reason);
      },
      (error: AirwaveError) => {
        if (this.channels.get(channel) !== state) return;
        state.awaiting = false;
        const held = state.held;
        state.held = [];
        for (const message of held) this.accept(channel, state, message);
        if (error.code === "disconnected") return; // resubscribed after the reconnect
        this.emitError(new AirwaveError(error.code, `subscribe to ${channel}: ${error.message}`, error.requestId));
        if (!state.confirmed) state.settleReady(error);
      },
    );
  }

  private onSubscribed(
    channel: string,
    state: ChannelState,
    reply: SubscribedFrame,
    since: Position | null,
    reason: "reconnect" | "gap",
  ): void {
    state.awaiting = false;
    state.live = true;
    const position = isPosition(reply.position) ? reply.position : null;
    if (since && reply.recovered === false) {
      // Recovery impossible: hand over what we have, in order, and start again from `position`.
      this.flushBuffer(channel, state);
      state.last = position;
      this.reportRecovery(channel, false, reason);
    } else if (since && reply.recovered === true) {
      for (const message of reply.publications ?? []) this.accept(channel, state, message);
      if (position && state.last && position.epoch === state.last.epoch && position.offset > state.last.offset) {
        state.last = position;
      }
      this.reportRecovery(channel, true, reason);
    } else if (!since) {
      state.last = position;
    }
    if (!state.confirmed) {
      state.confirmed = true;
      state.settleReady();
    }
    const held = state.held;
    state.held = [];
    for (const message of held) this.accept(channel, state, message);
    if (state.buffer.size > 0 && state.gapTimer === null) this.startGapTimer(channel, state);
  }

  private reportRecovery(channel: string, recovered: boolean, reason: RecoveryEvent["reason"]): void {
    if (!recovered) this.counters.recoveryFailures += 1;
    const event: RecoveryEvent = { channel, recovered, reason };
    for (const listener of this.listeners.recovery) listener(event);
  }

  private onMessage(raw: unknown): void {
    if (!isMessageFrame(raw)) {
      this.debug("ignored a message without an id", raw);
      return;
    }
    this.counters.messagesReceived += 1;
    const channel = typeof raw.channel === "string" ? raw.channel : null;
    if (channel === null) {
      if (!this.recent.add(raw.id)) {
        this.counters.duplicatesDropped += 1;
        return;
      }
      const message: ChannelMessage = { id: raw.id, channel: null, data: raw.data ?? null, position: null };
      for (const listener of this.listeners.broadcast) listener(message);
      return;
    }
    const state = this.channels.get(channel);
    if (!state) {
      this.debug(`a message for ${channel}, which has no subscriber`);
      return;
    }
    if (state.awaiting) {
      state.held.push(raw);
      return;
    }
    this.accept(channel, state, raw);
  }

  /** The ordering rule: deliver the next offset, drop old ones, buffer those past a gap. */
  private accept(channel: string, state: ChannelState, message: MessageFrame): void {
    if (this.recent.has(message.id)) {
      this.counters.duplicatesDropped += 1;
      return;
    }
    const position = isPosition(message.position) ? message.position : null;
    const last = state.last;
    if (!position || !last) {
      // No positions (an older server, or none known yet): id-only dedupe, arrival order.
      this.deliver(channel, state, message);
      if (position) state.last = position;
      return;
    }
    if (position.epoch !== last.epoch) {
      // The channel's history was reset: what we hold cannot be completed.
      this.flushBuffer(channel, state);
      this.reportRecovery(channel, false, "epoch");
      this.deliver(channel, state, message);
      state.last = position;
      return;
    }
    if (position.offset <= last.offset) {
      this.counters.duplicatesDropped += 1;
      return;
    }
    if (position.offset > last.offset + 1) {
      if (state.buffer.has(position.offset)) this.counters.duplicatesDropped += 1;
      else state.buffer.set(position.offset, message);
      if (state.gapTimer === null && !state.awaiting) this.startGapTimer(channel, state);
      return;
    }
    this.deliver(channel, state, message);
    state.last = position;
    let next = state.buffer.get(position.offset + 1);
    while (next && state.last) {
      state.buffer.delete(state.last.offset + 1);
      this.deliverIfNew(channel, state, next);
      state.last = { epoch: state.last.epoch, offset: state.last.offset + 1 };
      next = state.buffer.get(state.last.offset + 1);
    }
    if (state.buffer.size === 0 && state.gapTimer !== null) {
      this.timers.clearTimeout(state.gapTimer);
      state.gapTimer = null;
    }
  }

  private startGapTimer(channel: string, state: ChannelState): void {
    state.gapTimer = this.timers.setTimeout(() => {
      state.gapTimer = null;
      if (this.channels.get(channel) !== state || state.buffer.size === 0) return;
      if (this.current !== "open") return; // the resubscribe after the reconnect re-fetches it
      this.counters.gapsRefetched += 1;
      this.debug(`gap on ${channel} after ${state.last?.offset}; re-fetching`);
      this.sendSubscribe(channel, state, "gap");
    }, this.options.gapTimeoutMs);
  }

  /** Delivers every buffered message in offset order and moves `last` past them. */
  private flushBuffer(channel: string, state: ChannelState): void {
    const offsets = [...state.buffer.keys()].sort((a, b) => a - b);
    for (const offset of offsets) {
      const message = state.buffer.get(offset);
      if (!message) continue;
      this.deliverIfNew(channel, state, message);
      if (isPosition(message.position)) state.last = message.position;
    }
    state.buffer.clear();
    if (state.gapTimer !== null) this.timers.clearTimeout(state.gapTimer);
    state.gapTimer = null;
  }

  private deliverIfNew(channel: string, state: ChannelState, message: MessageFrame): void {
    if (this.recent.has(message.id)) {
      this.counters.duplicatesDropped += 1;
      return;
    }
    this.deliver(channel, state, message);
  }

  private deliver(channel: string, state: ChannelState, message: MessageFrame): void {
    this.recent.add(message.id);
    const delivered: ChannelMessage = {
      id: message.id,
      channel,
      data: message.data ?? null,
      position: isPosition(message.position) ? message.position : null,
    };
    for (const handler of [...state.handlers]) {
      try {
        handler(delivered.data, delivered);
      } catch (error) {
        // One failing handler must not stop delivery to the others.
        this.emitError(new AirwaveError("handler_failed", `a handler of ${channel} threw: ${String(error)}`));
      }
    }
  }
}

export type { ErrorCode, RequestId };
