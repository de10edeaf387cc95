// The client's channels: each one's handlers, its delivery order and its
// standing with the server (subscribed, resubscribed on every new socket,
// re-fetched after a gap, left once its last handler goes).
import { AirwaveError } from "./errors.js";
import { toChannelMessage } from "./message.js";
import { ChannelOrder, type OrderingOptions, type RecoveryReason } from "./ordering.js";
import type { ClientRequest, MessageFrame, ReplyFrame, SubscribedFrame } from "./protocol.js";
import type { ClientStats, MessageHandler, RecoveryEvent, Unsubscribe } from "./types.js";

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

/** What the channels need from the connection that carries them. */
export interface ChannelHost {
  /** Whether a socket is open: a new subscription goes out at once then, else with the next socket. */
  isOpen(): boolean;
  /** Sends one of the client's own requests (subscribe, unsubscribe) on the current socket. */
  request(request: ClientRequest): Promise<ReplyFrame>;
  emitError(error: AirwaveError): void;
  recovery(event: RecoveryEvent): void;
  debug(message: string): void;
}

/** The client's counters that the channels move. */
export interface ChannelCounters {
  duplicatesDropped: number;
  gapsRefetched: number;
  recoveryFailures: number;
  subscribeRequests: number;
}

export class Channels {
  private readonly channels = new Map<string, Subscription>();

  constructor(
    private readonly host: ChannelHost,
    /** Shared by every channel's ordering. */
    private readonly options: OrderingOptions,
    private readonly counters: ChannelCounters,
  ) {}

  /** Subscribes `handler` to `channel`; returns the function that unsubscribes it. */
  subscribe<T = unknown>(channel: string, handler: MessageHandler<T>): Unsubscribe {
    let state = this.channels.get(channel);
    if (!state) {
      state = this.createSubscription(channel);
      this.channels.set(channel, state);
      if (this.host.isOpen()) this.sendSubscribe(channel, state, "reconnect");
    } else if (state.unsubscribeTimer !== null) {
      // Unsubscribed and subscribed again in one go (React StrictMode): keep the subscription.
      this.options.timers.clearTimeout(state.unsubscribeTimer);
      state.unsubscribeTimer = null;
      // A socket that opened meanwhile skipped this channel as leaving: subscribe on it now.
      if (this.host.isOpen() && !state.live && !state.order.subscribing) {
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

  /** A socket opened: every channel not on its way out subscribes on it, from its last position. */
  resubscribe(): void {
    for (const [channel, state] of this.channels) {
      if (state.unsubscribeTimer === null) this.sendSubscribe(channel, state, "reconnect");
    }
  }

  /** The socket ended: no channel is confirmed on the next one until it subscribes again. */
  disconnected(): void {
    for (const state of this.channels.values()) {
      state.live = false;
      state.order.disconnected();
    }
  }

  /** A message for `channel` as it arrives: delivered in position order, once. */
  receive(channel: string, message: MessageFrame): void {
    const state = this.channels.get(channel);
    if (!state) {
      this.host.debug(`a message for ${channel}, which has no subscriber`);
      return;
    }
    state.order.receive(message);
  }

  /** Each channel's last delivered position, buffered messages and standing. */
  stats(): ClientStats["channels"] {
    const channels: ClientStats["channels"] = {};
    for (const [name, state] of this.channels) {
      channels[name] = { position: state.order.last, buffered: state.order.buffered, subscribed: state.live };
    }
    return channels;
  }

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
      order: new ChannelOrder(this.options, {
        deliver: (message) => this.deliver(channel, handlers, message),
        duplicate: () => {
          this.counters.duplicatesDropped += 1;
        },
        recovery: (recovered, reason) => this.reportRecovery(channel, recovered, reason),
        gap: () => this.onGap(channel, subscription),
      }),
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
    state.unsubscribeTimer = this.options.timers.setTimeout(() => {
      state.unsubscribeTimer = null;
      if (this.channels.get(channel) !== state || state.handlers.size > 0) return;
      state.order.dispose();
      this.channels.delete(channel);
      state.settleReady(new AirwaveError("closed", "unsubscribed"));
      if (this.host.isOpen()) {
        this.host.request({ action: "unsubscribe", channel }).catch(() => {});
      }
    }, 0);
  }

  private sendSubscribe(channel: string, state: Subscription, reason: RecoveryReason): void {
    const since = state.order.subscribe();
    this.counters.subscribeRequests += 1;
    const request: ClientRequest = since ? { action: "subscribe", channel, since } : { action: "subscribe", channel };
    this.host.request(request).then(
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
        this.host.emitError(
          new AirwaveError(error.code, `subscribe to ${channel}: ${error.message}`, error.requestId),
        );
        if (!state.confirmed) state.settleReady(error);
      },
    );
  }

  /** A gap stayed open: re-fetch it now, unless the resubscribe after a reconnect will. */
  private onGap(channel: string, state: Subscription): void {
    if (this.channels.get(channel) !== state || !this.host.isOpen()) return;
    this.counters.gapsRefetched += 1;
    this.host.debug(`gap on ${channel} after ${state.order.last?.offset}; re-fetching`);
    this.sendSubscribe(channel, state, "gap");
  }

  private reportRecovery(channel: string, recovered: boolean, reason: RecoveryEvent["reason"]): void {
    if (!recovered) this.counters.recoveryFailures += 1;
    this.host.recovery({ channel, recovered, reason });
  }

  private deliver(channel: string, handlers: Set<MessageHandler>, message: MessageFrame): void {
    const delivered = toChannelMessage(message, channel);
    for (const handler of [...handlers]) {
      try {
        handler(delivered.data, delivered);
      } catch (error) {
        // One failing handler must not stop delivery to the others.
        this.host.emitError(new AirwaveError("handler_failed", `a handler of ${channel} threw: ${String(error)}`));
      }
    }
  }
}
