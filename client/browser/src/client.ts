// The client: one socket at a time and what happens to it (opening, losing,
// replacing it), the frames it carries, and the public API over both.
import { backoffDelay, CircuitBreaker } from "./backoff.js";
import { Channels } from "./channels.js";
import { closingAction, endsConnection } from "./closing.js";
import { AirwaveError } from "./errors.js";
import { handshake } from "./handshake.js";
import { KeepAlive } from "./keepalive.js";
import { defaultLifecycle } from "./lifecycle.js";
import { toChannelMessage } from "./message.js";
import { resolveOptions, type ResolvedOptions } from "./options.js";
import { PollingSocket, type FetchLike } from "./polling.js";
import {
  isMessageFrame,
  parseFrame,
  type ClientRequest,
  type ErrorCode,
  type ReplyFor,
  type ReplyFrame,
  type Stats,
} from "./protocol.js";
import { RecentIds } from "./recent.js";
import { PendingRequests } from "./requests.js";
import type { AirwaveOptions, ClientEvents, ClientStats, ClosingEvent, ConnectionState, Transport } from "./types.js";
import type { Lifecycle, MessageHandler, SocketConstructor, SocketLike, Timers, Unsubscribe } from "./types.js";

const OPEN = 1;

/**
 * One logical connection to an Airwave endpoint: at most one socket at a time,
 * reconnecting with jittered backoff, resubscribing with recovery, and
 * delivering each channel's messages once and in position order.
 */
export class AirwaveClient {
  private readonly options: ResolvedOptions;
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
  private readonly keepAlive: KeepAlive;
  private readonly channels: Channels;
  private readonly httpUrl: string | undefined;
  private readonly fetchImpl: FetchLike | undefined;

  private current: ConnectionState = "closed";
  private transport: Transport;
  /** Sockets in a row that failed before they proved healthy; `auto` switches transport at the bound. */
  private unprovenFailures = 0;
  private probeTimer: unknown = null;
  private probe: SocketLike | null = null;
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
  private waitingForOnline = false;
  private stopListening: (() => void) | null = null;
  private openWaiters: { resolve: () => void; reject: (error: AirwaveError) => void }[] = [];

  private readonly listeners: { [K in keyof ClientEvents]: Set<ClientEvents[K]> } = {
    state: new Set(),
    recovery: new Set(),
    broadcast: new Set(),
    user: new Set(),
    closing: new Set(),
    transport: new Set(),
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
    this.options = resolveOptions(options);
    const ctor = options.WebSocket ?? (globalThis as { WebSocket?: SocketConstructor }).WebSocket;
    if (!ctor) throw new AirwaveError("not_connected", "no WebSocket implementation: pass options.WebSocket");
    this.WebSocketImpl = ctor;
    this.timers = this.options.timers;
    this.now = this.options.now;
    this.random = this.options.random;
    this.lifecycle = options.lifecycle === undefined ? defaultLifecycle() : options.lifecycle;
    this.debug = options.debug ?? (() => {});
    this.getToken = options.getToken;
    this.httpUrl = options.httpUrl;
    const fetchImpl = options.fetch ?? (globalThis as { fetch?: FetchLike }).fetch;
    this.fetchImpl = fetchImpl ? (url, init) => fetchImpl(url, init) : undefined;
    if (this.options.transport === "http" && (!this.httpUrl || !this.fetchImpl)) {
      throw new AirwaveError("not_connected", "transport \"http\" needs options.httpUrl and a fetch implementation");
    }
    this.transport = this.options.transport === "http" ? "http" : "websocket";
    this.breaker = new CircuitBreaker(this.options.breakerThreshold, this.options.breakerWindowMs);
    this.recent = new RecentIds(this.options.dedupeCapacity);
    this.requests = new PendingRequests(
      this.timers,
      this.options.maxQueued,
      (message) => this.debug(message),
      () => this.keepAlive.restart(),
    );
    this.keepAlive = new KeepAlive(
      this.options,
      (message) => this.debug(message),
      () => this.checkNow(),
    );
    this.channels = new Channels(
      {
        isOpen: () => this.current === "open",
        request: (request) => this.sendRequest(request, this.options.requestTimeoutMs, true),
        emitError: (error) => this.emitError(error),
        recovery: (event) => {
          for (const listener of this.listeners.recovery) listener(event);
        },
        debug: (message) => this.debug(message),
      },
      { recent: this.recent, timers: this.timers, gapTimeoutMs: this.options.gapTimeoutMs },
      this.counters,
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
    return this.channels.subscribe(channel, handler);
  }

  /** Drops every handler of `channel` and leaves it. */
  unsubscribe(channel: string): void {
    this.channels.unsubscribe(channel);
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
    const channels = this.channels.stats();
    return {
      state: this.current,
      transport: this.transport,
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
    const { url, protocols } = handshake(this.options.url, token, this.options.tokenIn);
    let socket: SocketLike;
    try {
      socket = this.transport === "http" ? this.pollingSocket(token) : new this.WebSocketImpl(url, protocols);
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

  /** The HTTP transport, for a client whose WebSockets fail (the constructor checked what it needs). */
  private pollingSocket(token: string | null | undefined): SocketLike {
    if (!this.httpUrl || !this.fetchImpl) throw new Error("no HTTP API to fall back to");
    return new PollingSocket({
      httpUrl: this.httpUrl,
      token,
      fetch: this.fetchImpl,
      timers: this.timers,
      pollMinMs: this.options.pollMinMs,
      pollMaxMs: this.options.pollMaxMs,
      requestTimeoutMs: this.options.requestTimeoutMs,
      debug: (message) => this.debug(message),
    });
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
    this.keepAlive.restart();
    this.scheduleProbe(generation);
    this.channels.resubscribe();
    if (this.socket) this.requests.sendQueued(this.socket);
    const waiters = this.openWaiters;
    this.openWaiters = [];
    for (const waiter of waiters) waiter.resolve();
  }

  /** A socket that proved itself: the next loss starts the backoff schedule over. */
  private markHealthy(): void {
    if (this.healthy) return;
    this.healthy = true;
    this.unprovenFailures = 0;
    this.attempt = 0;
    this.expiryRetried = false;
  }

  /**
   * The socket of `generation` failed to open or was lost. `prompt`: try
   * again at once, outside the backoff schedule and the breaker.
   */
  private handleFailure(generation: number, prompt = false): void {
    if (generation !== this.generation) return;
    // A socket fails once: every later report of the same loss (each check that
    // joined one unanswered ping sees it time out) is now of an older generation.
    this.generation += 1;
    if (this.socket !== null && !this.healthy) this.countUnproven();
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
    this.channels.disconnected();
  }

  private dropSocket(code: number, reason: string): void {
    const socket = this.socket;
    if (!socket) return;
    this.socket = null;
    discard(socket, code, reason);
  }

  private clearConnectionTimers(): void {
    for (const timer of [this.retryTimer, this.connectTimer, this.healthyTimer, this.probeTimer]) {
      if (timer !== null) this.timers.clearTimeout(timer);
    }
    this.retryTimer = this.connectTimer = this.healthyTimer = this.probeTimer = null;
    this.endProbe();
    this.keepAlive.stop();
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

  // --- transport ----------------------------------------------------------

  /**
   * Counts a socket that failed before it proved healthy; at the bound,
   * `auto` tries the other transport next. The attempt still waits its
   * backoff and counts toward the retry bound: with both transports down, the
   * client backs off and gives up as it would with one.
   */
  private countUnproven(): void {
    this.unprovenFailures += 1;
    const canSwitch = this.options.transport === "auto" && this.httpUrl !== undefined && this.fetchImpl !== undefined;
    if (canSwitch && this.unprovenFailures >= this.options.fallbackAfterFailures) {
      this.useTransport(this.transport === "websocket" ? "http" : "websocket");
    }
  }

  private useTransport(transport: Transport): void {
    this.unprovenFailures = 0;
    if (transport === this.transport) return;
    this.debug(`switching to the ${transport} transport`);
    this.transport = transport;
    for (const listener of this.listeners.transport) listener(transport);
  }

  /** On HTTP under `auto`: try a WebSocket again after a while. */
  private scheduleProbe(generation: number): void {
    if (this.options.transport !== "auto" || this.transport !== "http") return;
    this.probeTimer = this.timers.setTimeout(() => {
      this.probeTimer = null;
      void this.runProbe(generation);
    }, this.options.probeIntervalMs);
  }

  /**
   * Opens a WebSocket beside the HTTP transport and pings on it: a pong
   * switches the connection back to WebSockets, whose resubscribes go on
   * from the positions delivered, so nothing is missed or repeated.
   */
  private async runProbe(generation: number): Promise<void> {
    let token: string | null | undefined;
    try {
      token = this.getToken ? await this.getToken() : undefined;
    } catch {
      if (generation === this.generation) this.scheduleProbe(generation);
      return;
    }
    if (generation !== this.generation || this.current !== "open") return;
    const { url, protocols } = handshake(this.options.url, token, this.options.tokenIn);
    let probe: SocketLike;
    try {
      probe = new this.WebSocketImpl(url, protocols);
    } catch {
      this.scheduleProbe(generation);
      return;
    }
    this.probe = probe;
    const timeout = this.timers.setTimeout(
      () => finish(false),
      this.options.connectTimeoutMs + this.options.pongTimeoutMs,
    );
    const finish = (works: boolean): void => {
      this.timers.clearTimeout(timeout);
      if (this.probe !== probe) return;
      this.endProbe();
      if (generation !== this.generation) return;
      this.debug(works ? "a WebSocket works again" : "WebSockets still fail");
      if (!works) {
        this.scheduleProbe(generation);
        return;
      }
      this.useTransport("websocket");
      this.handleFailure(generation, true);
    };
    probe.onopen = () => probe.send(JSON.stringify({ action: "ping" }));
    probe.onmessage = (event) => {
      if (typeof event.data === "string" && parseFrame(event.data)?.type === "pong") finish(true);
    };
    probe.onclose = () => finish(false);
  }

  private endProbe(): void {
    const probe = this.probe;
    if (!probe) return;
    this.probe = null;
    discard(probe, 1000, "probe done");
  }

  // --- heartbeat and page lifecycle --------------------------------------

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
      if (!this.keepAlive.running && this.current === "open") this.keepAlive.restart();
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
    this.keepAlive.visibilityChanged(this.lifecycle.isHidden());
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

  // --- messages -----------------------------------------------------------

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
    this.channels.receive(channel, raw);
  }
}

/** Closes a socket the client is done with; none of its events reach the client after. */
function discard(socket: SocketLike, code: number, reason: string): void {
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
