import { backoffDelay, CircuitBreaker, DEFAULT_BACKOFF, type BackoffOptions } from "./backoff.js";
import { closingAction, endsConnection } from "./closing.js";
import { AirwaveError } from "./errors.js";
import { defaultLifecycle } from "./lifecycle.js";
import { ChannelOrder, type RecoveryReason } from "./ordering.js";
import {
  isMessageFrame,
  isPosition,
  parseFrame,
  type ClientRequest,
  type ErrorCode,
  type MessageFrame,
  type ReplyFor,
  type ReplyFrame,
  type Stats,
  type SubscribedFrame,
} from "./protocol.js";
import { RecentIds } from "./recent.js";
import { PendingRequests } from "./requests.js";
import type {
  AirwaveOptions,
  ChannelMessage,
  ClientEvents,
  ClientStats,
  ClosingEvent,
  ConnectionState,
  Lifecycle,
  MessageHandler,
  RecoveryEvent,
  SocketConstructor,
  SocketLike,
  Timers,
  Unsubscribe,
} from "./types.js";

/** One subscribed channel: its handlers, its ordering, and its standing with the server. */
interface Subscription {
  handlers: Set<MessageHandler>;
  order: ChannelOrder;
  unsubscribeTimer: unknown;
  ready: Promise<void>;
  settleReady: (error?: AirwaveError) => void;
  confirmed: boolean;
  /** Confirmed on the current socket. */
  live: boolean;
}

const OPEN = 1;

/**
 * One logical connection to an Airwave endpoint: at most one socket at a time,
 * reconnecting with jittered backoff, resubscribing with recovery, and
 * delivering each channel's messages once and in position order.
 */
export class AirwaveClient {
  private readonly options: Required<
    Omit<AirwaveOptions, "getToken" | "backoff" | "WebSocket" | "lifecycle" | "debug" | "pingIntervalMs">
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
  private readonly requests: PendingRequests;

  private current: ConnectionState = "closed";
  private socket: SocketLike | null = null;
  /** Bumped for every socket, so late events of an abandoned one are ignored. */
  private generation = 0;
  private attempt = 0;
  private healthy = false;
  /** A prompt reconnect after `token_expired` was spent and no socket has proved healthy since. */
  private expiryRetried = false;
  private retryTimer: unknown = null;
  private connectTimer: unknown = null;
  private healthyTimer: unknown = null;
  /** Fires after `keepAliveAfterMs` without a frame sent on the open socket. */
  private keepAliveTimer: unknown = null;
  private keepAliveDueAt = 0;
  private hiddenAt: number | null = null;
  private waitingForOnline = false;
  private stopListening: (() => void) | null = null;
  private openWaiters: { resolve: () => void; reject: (error: AirwaveError) => void }[] = [];

  private readonly channels = new Map<string, Subscription>();
  private readonly listeners: { [K in keyof ClientEvents]: Set<ClientEvents[K]> } = {
    state: new Set(),
    recovery: new Set(),
    broadcast: new Set(),
    user: new Set(),
    closing: new Set(),
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
      keepAliveAfterMs: options.keepAliveAfterMs ?? options.pingIntervalMs ?? 540_000,
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
    this.requests = new PendingRequests(
      this.timers,
      this.options.maxQueued,
      (message) => this.debug(message),
      () => this.restartKeepAlive(),
    );
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
    if (this.stopped) this.start();
    return opened;
  }

  /** Starts over now (also after `gave_up` or `evicted`): a fresh attempt budget and breaker, a new socket. */
  reconnect(): Promise<void> {
    const opened = new Promise<void>((resolve, reject) => this.openWaiters.push({ resolve, reject }));
    this.start();
    return opened;
  }

  /** Closes the connection for good (until `connect()` again). Subscriptions are kept for that. */
  close(): void {
    this.stop("closed", new AirwaveError("closed", "the client was closed"));
  }

  /** Subscribes `handler` to `channel`; returns the function that unsubscribes it. */
  subscribe<T = unknown>(channel: string, handler: MessageHandler<T>): Unsubscribe {
    let state = this.channels.get(channel);
    if (!state) {
      state = this.createSubscription(channel);
      this.channels.set(channel, state);
      if (this.current === "open") this.sendSubscribe(channel, state, "reconnect");
    } else if (state.unsubscribeTimer !== null) {
      // Unsubscribed and subscribed again in one go (React StrictMode): keep the subscription.
      this.timers.clearTimeout(state.unsubscribeTimer);
      state.unsubscribeTimer = null;
      // A socket that opened meanwhile skipped this channel as leaving: subscribe on it now.
      if (this.current === "open" && !state.live && !state.order.subscribing) {
        this.sendSubscribe(channel, state, "reconnect");
      }
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

  /**
   * Pings the server (queued while disconnected, like any request); resolves
   * on its pong. A ping while another is outstanding shares it.
   */
  ping(): Promise<void> {
    return this.request({ action: "ping" }).then(() => undefined);
  }

  /** The client's own counters. */
  stats(): ClientStats {
    const channels: ClientStats["channels"] = {};
    for (const [name, state] of this.channels) {
      channels[name] = { position: state.order.last, buffered: state.order.buffered, subscribed: state.live };
    }
    return {
      state: this.current,
      attempt: this.attempt,
      ...this.counters,
      pendingRequests: this.requests.inFlight,
      queuedRequests: this.requests.queued,
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

  /** States in which nothing reconnects until `connect()` or `reconnect()`. */
  private get stopped(): boolean {
    return this.current === "closed" || this.current === "gave_up" || this.current === "evicted";
  }

  private start(): void {
    const replaced = new AirwaveError("disconnected", "the connection was replaced before the reply");
    this.endSocket(1000, "starting over", replaced);
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
    if (generation !== this.generation || this.stopped) return;
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
    this.restartKeepAlive();
    for (const [channel, state] of this.channels) {
      if (state.unsubscribeTimer === null) this.sendSubscribe(channel, state, "reconnect");
    }
    if (this.socket) this.requests.sendQueued(this.socket);
    const waiters = this.openWaiters;
    this.openWaiters = [];
    for (const waiter of waiters) waiter.resolve();
  }

  /** A socket that proved itself: the next loss starts the backoff schedule over. */
  private markHealthy(): void {
    if (this.healthy) return;
    this.healthy = true;
    this.attempt = 0;
    this.expiryRetried = false;
  }

  /**
   * The socket of `generation` failed to open or was lost. `prompt`: try
   * again at once, outside the backoff schedule and the breaker.
   */
  private handleFailure(generation: number, prompt = false): void {
    if (generation !== this.generation) return;
    this.endSocket(4000, "abandoned", new AirwaveError("disconnected", "the connection was lost before the reply"));
    if (this.stopped) return;
    let delay = 0;
    if (!prompt) {
      if (this.breaker.fail(this.now())) {
        this.giveUp(`${this.breaker.recentFailures} failures within ${this.options.breakerWindowMs} ms`);
        return;
      }
      if (this.attempt >= this.options.backoff.maxAttempts) {
        this.giveUp(`${this.attempt} attempts failed`);
        return;
      }
      delay = backoffDelay(this.attempt, this.options.backoff, this.random);
      this.attempt += 1;
    }
    this.setState("reconnecting");
    if (this.lifecycle && !this.lifecycle.isOnline()) {
      this.waitingForOnline = true;
      return;
    }
    this.debug(prompt ? "reconnecting at once" : `reconnect attempt ${this.attempt} in ${delay} ms`);
    this.retryTimer = this.timers.setTimeout(() => {
      this.retryTimer = null;
      void this.openSocket();
    }, delay);
  }

  private giveUp(why: string): void {
    this.debug(`giving up: ${why}`);
    this.setState("gave_up");
    const error = new AirwaveError("gave_up", `gave up connecting: ${why}`);
    this.requests.failAll(error);
    this.rejectWaiters(error);
  }

  /** Stays down until `connect()` or `reconnect()`: `close()`, or evicted by the server. */
  private stop(state: "closed" | "evicted", error: AirwaveError): void {
    this.endSocket(1000, state === "closed" ? "client closed" : "evicted", error);
    this.requests.failAll(error);
    this.setState(state);
    this.rejectWaiters(error);
    this.stopListening?.();
    this.stopListening = null;
  }

  /**
   * Ends everything tied to the current socket, however it ends (lost,
   * abandoned, replaced, closed): its timers and handlers, the requests sent
   * on it (`error`), and its channels' standing, so the next socket
   * resubscribes them from a clean slate.
   */
  private endSocket(code: number, reason: string, error: AirwaveError): void {
    this.clearConnectionTimers();
    this.dropSocket(code, reason);
    this.requests.failSent(error);
    for (const state of this.channels.values()) {
      state.live = false;
      state.order.disconnected();
    }
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
    for (const timer of [this.retryTimer, this.connectTimer, this.healthyTimer, this.keepAliveTimer]) {
      if (timer !== null) this.timers.clearTimeout(timer);
    }
    this.retryTimer = this.connectTimer = this.healthyTimer = this.keepAliveTimer = null;
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

  /**
   * Restarts the quiet period after which a keep-alive ping goes: called on
   * the socket's opening and after every frame the client sends on it. API
   * Gateway closes a connection idle for 10 minutes, and any frame resets
   * that. Only frames the client sends count here, not those it receives:
   * whether server-to-client frames reset API Gateway's idle timer is not
   * documented. The 9-minute default leaves a minute for hidden tabs, whose
   * timers browsers throttle (Chrome: to once a minute), so a late keep-alive
   * still goes out within the 10 minutes.
   */
  private restartKeepAlive(): void {
    if (this.keepAliveTimer !== null) this.timers.clearTimeout(this.keepAliveTimer);
    this.keepAliveDueAt = this.now() + this.options.keepAliveAfterMs;
    this.keepAliveTimer = this.timers.setTimeout(() => {
      this.keepAliveTimer = null;
      // Timers stop while a machine sleeps; a wall clock far past the due time says it did.
      if (this.now() - this.keepAliveDueAt > this.options.keepAliveAfterMs) this.debug("woke from a long sleep");
      this.checkNow();
    }, this.options.keepAliveAfterMs);
  }

  /** Pings now (the ping restarts the quiet period); a ping that gets no pong in time replaces the socket. */
  private checkNow(): void {
    if (this.current === "open" && this.socket) {
      const generation = this.generation;
      // Joins the outstanding ping, if there is one: a pong cannot say which ping it answers.
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
      // A joined ping sent nothing, so nothing restarted the quiet period: keep it running.
      if (this.keepAliveTimer === null && this.current === "open") this.restartKeepAlive();
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
      // The keep-alive goes on while hidden (its timer runs, if throttled):
      // pausing it would let API Gateway's 10-minute idle timeout close a
      // quiet socket.
      this.hiddenAt = this.now();
      return;
    }
    const hiddenFor = this.hiddenAt === null ? 0 : this.now() - this.hiddenAt;
    this.hiddenAt = null;
    // Hidden long, or a keep-alive overdue (the wall clock jumped: the machine slept): the socket may be stale.
    if (hiddenFor >= this.options.wakeCheckAfterMs || this.now() > this.keepAliveDueAt + this.options.pongTimeoutMs) {
      this.checkNow();
    }
  }

  // --- requests -----------------------------------------------------------

  private sendRequest(request: ClientRequest, timeoutMs: number, internal: boolean): Promise<ReplyFrame> {
    if (this.stopped) {
      return Promise.reject(new AirwaveError("not_connected", `not connected (${this.current})`));
    }
    const open = this.current === "open" && this.socket !== null && this.socket.readyState === OPEN;
    return this.requests.send(request, timeoutMs, internal, open ? this.socket : null);
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
    } else if (type === "closing") {
      const code = typeof frame.code === "string" ? frame.code : "unknown";
      this.onClosing(code, typeof frame.message === "string" ? frame.message : "");
    } else if (type === undefined && typeof frame.message === "string") {
      // API Gateway's own error: no request id, so it answers the oldest request.
      const message = frame.message;
      const unclaimed = this.requests.failOldest(
        (id) => new AirwaveError("internal_error", `the server failed: ${message}`, id),
      );
      if (unclaimed) this.emitError(unclaimed);
    } else {
      this.debug(`ignored a frame of unknown type ${String(type)}`, frame);
    }
  }

  /** The server is about to close this socket (it no longer serves it): act now rather than at the close. */
  private onClosing(code: ErrorCode, message: string): void {
    const generation = this.generation;
    this.debug(`the server is closing the connection: ${code}: ${message}`);
    const event: ClosingEvent = { code, message };
    for (const listener of this.listeners.closing) listener(event);
    // A listener may have closed or restarted the client.
    if (generation !== this.generation || this.stopped) return;
    const action = closingAction(code);
    if (action === "stop") {
      this.stop("evicted", new AirwaveError("evicted", `evicted: ${message}`));
    } else if (action === "renew") {
      // One prompt retry; expiring again before a socket proved healthy means backoff, not a loop.
      const prompt = !this.expiryRetried;
      this.expiryRetried = true;
      this.handleFailure(generation, prompt);
    } else {
      this.handleFailure(generation);
    }
  }

  private onActivity(): void {
    this.markHealthy();
  }

  private onReply(reply: ReplyFrame): void {
    const answered = this.requests.answer(reply, this.socket);
    if (reply.type === "error" && reply.code === "unknown_connection") {
      // The server forgot this connection: only a new one helps.
      this.handleFailure(this.generation);
      return;
    }
    if (reply.type === "error" && endsConnection(reply.code)) {
      // The closing frame may be on its way; this socket is done either way.
      this.onClosing(reply.code, reply.message);
      return;
    }
    if (!answered) this.debug("a reply no request waits for", reply);
  }

  // --- channels -----------------------------------------------------------

  private createSubscription(channel: string): Subscription {
    let settle: (error?: AirwaveError) => void = () => {};
    const ready = new Promise<void>((resolve, reject) => {
      settle = (error) => (error ? reject(error) : resolve());
    });
    // A caller that ignores `ready` must not see an unhandled rejection.
    ready.catch(() => {});
    const handlers = new Set<MessageHandler>();
    const subscription: Subscription = {
      handlers,
      order: new ChannelOrder(
        { recent: this.recent, timers: this.timers, gapTimeoutMs: this.options.gapTimeoutMs },
        {
          deliver: (message) => this.deliver(channel, handlers, message),
          duplicate: () => {
            this.counters.duplicatesDropped += 1;
          },
          recovery: (recovered, reason) => this.reportRecovery(channel, recovered, reason),
          gap: () => this.onGap(channel, subscription),
        },
      ),
      unsubscribeTimer: null,
      ready,
      settleReady: settle,
      confirmed: false,
      live: false,
    };
    return subscription;
  }

  private removeHandler(channel: string, state: Subscription, handler: MessageHandler): void {
    if (!state.handlers.delete(handler) || state.handlers.size > 0) return;
    if (state.unsubscribeTimer !== null) return;
    // Deferred one tick: a subscribe right after (a React remount) cancels it, so the server sees nothing.
    state.unsubscribeTimer = this.timers.setTimeout(() => {
      state.unsubscribeTimer = null;
      if (this.channels.get(channel) !== state || state.handlers.size > 0) return;
      state.order.dispose();
      this.channels.delete(channel);
      state.settleReady(new AirwaveError("closed", "unsubscribed"));
      if (this.current === "open") {
        this.sendRequest({ action: "unsubscribe", channel }, this.options.requestTimeoutMs, true).catch(() => {});
      }
    }, 0);
  }

  private sendSubscribe(channel: string, state: Subscription, reason: RecoveryReason): void {
    const since = state.order.subscribe();
    this.counters.subscribeRequests += 1;
    const request: ClientRequest = since ? { action: "subscribe", channel, since } : { action: "subscribe", channel };
    this.sendRequest(request, this.options.requestTimeoutMs, true).then(
      (reply) => {
        if (this.channels.get(channel) !== state) return;
        state.live = true;
        state.order.subscribed(reply as SubscribedFrame, since, reason);
        if (!state.confirmed) {
          state.confirmed = true;
          state.settleReady();
        }
      },
      (error: AirwaveError) => {
        if (this.channels.get(channel) !== state) return;
        state.order.subscribeFailed();
        if (error.code === "disconnected") return; // resubscribed after the reconnect
        this.emitError(new AirwaveError(error.code, `subscribe to ${channel}: ${error.message}`, error.requestId));
        if (!state.confirmed) state.settleReady(error);
      },
    );
  }

  /** A gap stayed open: re-fetch it now, unless the resubscribe after a reconnect will. */
  private onGap(channel: string, state: Subscription): void {
    if (this.channels.get(channel) !== state || this.current !== "open") return;
    this.counters.gapsRefetched += 1;
    this.debug(`gap on ${channel} after ${state.order.last?.offset}; re-fetching`);
    this.sendSubscribe(channel, state, "gap");
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
    const toUser = typeof raw.to_user === "string";
    const channel = typeof raw.channel === "string" && !toUser ? raw.channel : null;
    if (channel === null) {
      // To a user or to everyone: no positions, so id dedupe and arrival order only.
      if (!this.recent.add(raw.id)) {
        this.counters.duplicatesDropped += 1;
        return;
      }
      const message = toChannelMessage(raw, null);
      for (const listener of toUser ? this.listeners.user : this.listeners.broadcast) listener(message);
      return;
    }
    const state = this.channels.get(channel);
    if (!state) {
      this.debug(`a message for ${channel}, which has no subscriber`);
      return;
    }
    state.order.receive(raw);
  }

  private deliver(channel: string, handlers: Set<MessageHandler>, message: MessageFrame): void {
    const delivered = toChannelMessage(message, channel);
    for (const handler of [...handlers]) {
      try {
        handler(delivered.data, delivered);
      } catch (error) {
        // One failing handler must not stop delivery to the others.
        this.emitError(new AirwaveError("handler_failed", `a handler of ${channel} threw: ${String(error)}`));
      }
    }
  }
}

/** The application's view of a message frame; only a channel message has a position. */
function toChannelMessage(frame: MessageFrame, channel: string | null): ChannelMessage {
  return {
    id: frame.id,
    channel,
    data: frame.data ?? null,
    position: channel !== null && isPosition(frame.position) ? frame.position : null,
    publisher: typeof frame.publisher === "string" ? frame.publisher : null,
    toUser: typeof frame.to_user === "string" ? frame.to_user : null,
  };
}
