import { isPosition, type MessageFrame, type Position, type SubscribedFrame } from "./protocol.js";
import type { RecentIds } from "./recent.js";
import type { RecoveryEvent, Timers } from "./types.js";

export type RecoveryReason = NonNullable<RecoveryEvent["reason"]>;

/** What a channel's ordering asks of the client that owns it. */
export interface OrderingHooks {
  /** Hands a new message, in order, to the channel's handlers. */
  deliver(message: MessageFrame): void;
  /** A message was dropped as already delivered (by id or by offset). */
  duplicate(): void;
  recovery(recovered: boolean, reason: RecoveryReason): void;
  /** A gap stayed open for `gapTimeoutMs`: time to re-fetch from `last`. */
  gap(): void;
}

export interface OrderingOptions {
  /** Ids already delivered, shared with every other channel and the broadcasts. */
  recent: RecentIds;
  timers: Timers;
  gapTimeoutMs: number;
}

/**
 * One channel's delivery rule: each message once, in position order. Messages
 * past a gap wait in a buffer for it to fill; messages that arrive while a
 * subscribe is in flight are held until its reply says where the channel stands.
 */
export class ChannelOrder {
  private position: Position | null = null;
  /** Out-of-order messages waiting for the gap before them, by offset. */
  private readonly buffer = new Map<number, MessageFrame>();
  /** Messages that arrived while a subscribe was in flight. */
  private held: MessageFrame[] = [];
  private awaiting = false;
  private gapTimer: unknown = null;

  constructor(
    private readonly options: OrderingOptions,
    private readonly hooks: OrderingHooks,
  ) {}

  /** The last delivered position. */
  get last(): Position | null {
    return this.position;
  }

  /** Messages buffered past a gap. */
  get buffered(): number {
    return this.buffer.size;
  }

  /** Whether a subscribe is in flight (messages are held meanwhile). */
  get subscribing(): boolean {
    return this.awaiting;
  }

  /** A message as it arrives. */
  receive(message: MessageFrame): void {
    if (this.awaiting) this.held.push(message);
    else this.accept(message);
  }

  /** A subscribe is going out; returns its `since` (null: from now on). */
  subscribe(): Position | null {
    this.awaiting = true;
    return this.position;
  }

  /** The subscribe sent with `since` was confirmed by `reply`. */
  subscribed(reply: SubscribedFrame, since: Position | null, reason: RecoveryReason): void {
    this.awaiting = false;
    const position = isPosition(reply.position) ? reply.position : null;
    if (since && reply.recovered === false) {
      // Recovery impossible: hand over what we have, in order, and start again from `position`.
      this.flushBuffer();
      this.position = position;
      this.hooks.recovery(false, reason);
    } else if (since && reply.recovered === true) {
      // The reply holds every message after `since` there is, in order: an
      // offset missing between two of them was never written.
      for (const message of reply.publications ?? []) this.acceptRecovered(message);
      const last = this.position;
      if (position && last && position.epoch === last.epoch && position.offset > last.offset) {
        this.position = position;
      }
      this.drainBuffer();
      this.hooks.recovery(true, reason);
    } else if (!since) {
      this.position = position;
    }
    this.releaseHeld();
    if (this.buffer.size > 0 && this.gapTimer === null) this.startGapTimer();
  }

  /** The subscribe failed: the held messages go through as they are. */
  subscribeFailed(): void {
    this.awaiting = false;
    this.releaseHeld();
  }

  /** The socket is gone: nothing is in flight, and the resubscribe with `since` re-fetches any gap. */
  disconnected(): void {
    this.awaiting = false;
    this.clearGapTimer();
  }

  /** The channel was left. */
  dispose(): void {
    this.clearGapTimer();
  }

  /** The ordering rule: deliver the next offset, drop old ones, buffer those past a gap. */
  private accept(message: MessageFrame): void {
    if (this.options.recent.has(message.id)) {
      this.hooks.duplicate();
      return;
    }
    const position = isPosition(message.position) ? message.position : null;
    let last = this.position;
    if (position && last && last.epoch === "") {
      // Subscribed before the channel's first message: it starts in this message's epoch.
      last = { epoch: position.epoch, offset: 0 };
      this.position = last;
    }
    if (!position || !last) {
      // No positions (an older server, or none known yet): id-only dedupe, arrival order.
      this.deliver(message);
      if (position) this.position = position;
      return;
    }
    if (position.epoch !== last.epoch) {
      // The channel's history was reset: what we hold cannot be completed.
      this.flushBuffer();
      this.hooks.recovery(false, "epoch");
      this.deliver(message);
      this.position = position;
      return;
    }
    if (position.offset <= last.offset) {
      this.hooks.duplicate();
      return;
    }
    if (position.offset > last.offset + 1) {
      if (this.buffer.has(position.offset)) this.hooks.duplicate();
      else this.buffer.set(position.offset, message);
      if (this.gapTimer === null && !this.awaiting) this.startGapTimer();
      return;
    }
    this.deliver(message);
    this.position = position;
    this.drainBuffer();
  }

  /** A message of a recovery reply: delivered in the reply's order, gaps and all. */
  private acceptRecovered(message: MessageFrame): void {
    const position = isPosition(message.position) ? message.position : null;
    let last = this.position;
    if (position && last && last.epoch === "") {
      last = { epoch: position.epoch, offset: 0 };
      this.position = last;
    }
    if (!position || !last || position.epoch !== last.epoch) {
      this.accept(message);
      return;
    }
    if (position.offset <= last.offset) {
      this.hooks.duplicate();
      return;
    }
    // Already buffered from the live stream: the same message twice.
    if (this.buffer.delete(position.offset)) this.hooks.duplicate();
    this.deliverIfNew(message);
    this.position = position;
  }

  /** Drops what is buffered up to `position` and delivers what follows it without a gap. */
  private drainBuffer(): void {
    const last = this.position;
    if (!last) return;
    for (const offset of [...this.buffer.keys()]) {
      if (offset <= last.offset) {
        this.buffer.delete(offset);
        this.hooks.duplicate();
      }
    }
    let next = this.buffer.get(last.offset + 1);
    while (next && this.position) {
      this.buffer.delete(this.position.offset + 1);
      this.deliverIfNew(next);
      this.position = { epoch: this.position.epoch, offset: this.position.offset + 1 };
      next = this.buffer.get(this.position.offset + 1);
    }
    if (this.buffer.size === 0) this.clearGapTimer();
  }

  private releaseHeld(): void {
    const held = this.held;
    this.held = [];
    for (const message of held) this.accept(message);
  }

  /** Delivers every buffered message in offset order and moves `last` past them. */
  private flushBuffer(): void {
    const offsets = [...this.buffer.keys()].sort((a, b) => a - b);
    for (const offset of offsets) {
      const message = this.buffer.get(offset);
      if (!message) continue;
      this.deliverIfNew(message);
      if (isPosition(message.position)) this.position = message.position;
    }
    this.buffer.clear();
    this.clearGapTimer();
  }

  private startGapTimer(): void {
    this.gapTimer = this.options.timers.setTimeout(() => {
      this.gapTimer = null;
      if (this.buffer.size > 0) this.hooks.gap();
    }, this.options.gapTimeoutMs);
  }

  private clearGapTimer(): void {
    if (this.gapTimer === null) return;
    this.options.timers.clearTimeout(this.gapTimer);
    this.gapTimer = null;
  }

  private deliverIfNew(message: MessageFrame): void {
    if (this.options.recent.has(message.id)) this.hooks.duplicate();
    else this.deliver(message);
  }

  private deliver(message: MessageFrame): void {
    this.options.recent.add(message.id);
    this.hooks.deliver(message);
  }
}
