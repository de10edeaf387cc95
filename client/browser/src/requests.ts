import { AirwaveError } from "./errors.js";
import { REPLY_TYPE, type ClientRequest, type ReplyFrame } from "./protocol.js";
import type { SocketLike, Timers } from "./types.js";

type Sender = Pick<SocketLike, "send">;

interface PendingRequest {
  id: number;
  request: ClientRequest;
  /** What `send` returned: a ping made while this one is pending gets the same. */
  reply: Promise<ReplyFrame>;
  resolve: (reply: ReplyFrame) => void;
  reject: (error: AirwaveError) => void;
  timeoutMs: number;
  timer: unknown;
  /** Sent on the current socket (vs. queued waiting for one). */
  sent: boolean;
  /** Last sent with an `id` field, which an older server refuses. */
  withId: boolean;
  /** Internal requests (pings, resubscribes) are not queued: they belong to one socket. */
  internal: boolean;
}

/**
 * Requests waiting for their reply: numbered, paired with replies by id (or
 * by kind, for servers without request ids), each under its own timeout, and
 * queued (bounded) while there is no open socket.
 *
 * Pings are the exception to ids: API Gateway answers them itself with an
 * id-less `{"type": "pong"}`, so a ping goes without an id, at most one is
 * pending at a time (a second joins it), and any pong answers it.
 */
export class PendingRequests {
  private nextId = 1;
  /** Servers from before request ids refuse an `id` field; then requests go without one. */
  private sendIds = true;
  private readonly pending = new Map<number, PendingRequest>();

  constructor(
    private readonly timers: Timers,
    private readonly maxQueued: number,
    private readonly debug: (message: string) => void,
    /** Called after each frame that went out on a socket. */
    private readonly onSent: () => void = () => {},
  ) {}

  /** Requests waiting for a socket. */
  get queued(): number {
    let queued = 0;
    for (const pending of this.pending.values()) if (!pending.sent) queued += 1;
    return queued;
  }

  /** Requests sent and waiting for their reply. */
  get inFlight(): number {
    return this.pending.size - this.queued;
  }

  /**
   * Sends `request` on `socket`, or without one queues it (an internal request
   * fails instead); settles with the reply, a timeout, or a `fail…` call. A
   * ping while another is pending (sent or queued) shares that one's outcome
   * and timeout: its pong could not tell two apart.
   */
  send(request: ClientRequest, timeoutMs: number, internal: boolean, socket: Sender | null): Promise<ReplyFrame> {
    if (request.action === "ping") {
      const outstanding = this.pendingPing();
      if (outstanding) return outstanding.reply;
    }
    if (!socket && !internal) {
      const queued = this.queued;
      if (queued >= this.maxQueued) {
        return Promise.reject(new AirwaveError("queue_full", `${queued} requests already wait for a connection`));
      }
    }
    let resolve: PendingRequest["resolve"] = () => {};
    let reject: PendingRequest["reject"] = () => {};
    const reply = new Promise<ReplyFrame>((onReply, onError) => {
      resolve = onReply;
      reject = onError;
    });
    const pending: PendingRequest = {
      id: this.nextId++,
      request,
      reply,
      resolve,
      reject,
      timeoutMs,
      timer: null,
      internal,
      sent: false,
      withId: false,
    };
    this.startTimer(pending);
    this.pending.set(pending.id, pending);
    if (socket) this.transmit(pending, socket);
    else if (internal) this.settle(pending, new AirwaveError("disconnected", "no open socket"));
    return reply;
  }

  /** Sends the queued requests on a socket that just opened. */
  sendQueued(socket: Sender): void {
    for (const pending of this.pending.values()) {
      if (pending.sent) continue;
      // A ping measures the socket, not the wait for one: its timeout starts now.
      if (pending.request.action === "ping") this.startTimer(pending);
      this.transmit(pending, socket);
    }
  }

  /**
   * Settles the request `reply` answers; false when none waits for it. A
   * refused request id means an older server: the request goes again on
   * `socket`, and every later one, without an id.
   */
  answer(reply: ReplyFrame, socket: Sender | null): boolean {
    if (reply.type === "error" && reply.code === "invalid_request" && /unknown field `id`/.test(reply.message)) {
      // Each refusal answers one request sent with an id (the server cannot name which): the oldest.
      const refused =
        [...this.pending.values()].find((pending) => pending.id === reply.id && pending.sent && pending.withId) ??
        [...this.pending.values()].find((pending) => pending.sent && pending.withId);
      if (refused) {
        if (this.sendIds) this.debug("the server does not know request ids; sending without them");
        this.sendIds = false;
        if (socket) this.transmit(refused, socket);
        return true;
      }
    }
    const pending = this.find(reply);
    if (!pending) return false;
    this.settle(pending, reply);
    return true;
  }

  /** Fails the oldest sent request (for a reply that names none); returns the error when none was sent. */
  failOldest(error: (requestId: number | undefined) => AirwaveError): AirwaveError | null {
    const oldest = [...this.pending.values()].find((pending) => pending.sent);
    const failure = error(oldest?.id);
    if (!oldest) return failure;
    this.settle(oldest, failure);
    return null;
  }

  /** Fails what went out on a lost socket, and the internal requests; the queue waits for the next socket. */
  failSent(error: AirwaveError): void {
    this.fail(error, (pending) => pending.sent || pending.internal);
  }

  failAll(error: AirwaveError): void {
    this.fail(error, () => true);
  }

  private fail(error: AirwaveError, which: (pending: PendingRequest) => boolean): void {
    for (const pending of [...this.pending.values()]) {
      if (which(pending)) this.settle(pending, new AirwaveError(error.code, error.message, pending.id));
    }
  }

  /** The ping sent or queued and not yet answered, if any. */
  private pendingPing(): PendingRequest | undefined {
    for (const pending of this.pending.values()) if (pending.request.action === "ping") return pending;
    return undefined;
  }

  private startTimer(pending: PendingRequest): void {
    if (pending.timer !== null) this.timers.clearTimeout(pending.timer);
    const { id, request, timeoutMs } = pending;
    pending.timer = this.timers.setTimeout(() => {
      if (this.pending.get(id) !== pending) return;
      this.pending.delete(id);
      pending.reject(new AirwaveError("timeout", `no reply to ${request.action} within ${timeoutMs} ms`, id));
    }, timeoutMs);
  }

  private transmit(pending: PendingRequest, socket: Sender): void {
    pending.sent = true;
    // A ping never carries an id: API Gateway's pong could not echo it.
    pending.withId = this.sendIds && pending.request.action !== "ping";
    try {
      socket.send(JSON.stringify(pending.withId ? { ...pending.request, id: pending.id } : pending.request));
    } catch (error) {
      this.settle(pending, new AirwaveError("disconnected", `send failed: ${String(error)}`));
      return;
    }
    this.onSent();
  }

  private settle(pending: PendingRequest, outcome: ReplyFrame | AirwaveError): void {
    if (!this.pending.delete(pending.id)) return;
    this.timers.clearTimeout(pending.timer);
    if (outcome instanceof AirwaveError) pending.reject(outcome);
    else if (outcome.type === "error") {
      pending.reject(new AirwaveError(outcome.code, outcome.message, pending.id));
    } else pending.resolve(outcome);
  }

  /**
   * The request a reply answers: by id, or (servers without request ids, and
   * every pong) the oldest of the matching kind, which for a pong is the one
   * pending ping, whatever id the pong carries.
   */
  private find(reply: ReplyFrame): PendingRequest | undefined {
    if (typeof reply.id === "number") {
      const byId = this.pending.get(reply.id);
      if (byId?.sent && (reply.type === "error" || REPLY_TYPE[byId.request.action] === reply.type)) return byId;
    }
    for (const pending of this.pending.values()) {
      if (!pending.sent) continue;
      if (reply.type === "error") return pending;
      if (REPLY_TYPE[pending.request.action] !== reply.type) continue;
      if ("channel" in reply && "channel" in pending.request && reply.channel !== pending.request.channel) continue;
      return pending;
    }
    return undefined;
  }
}
