// The fallback transport: a socket-shaped object that speaks the HTTP API
// (`POST /v1/poll` and `POST /v1/publish`) for networks that break WebSockets.
// The client drives it exactly as it drives a WebSocket: the same requests go
// in, the same frames come out (subscribed replies with recovery, batches of
// messages with positions), so ordering, duplicates and recovery work alike.
import type { ClientFrame, MessageFrame, Position } from "./protocol.js";
import type { SocketLike, Timers } from "./types.js";

export const POLL_PATH = "/v1/poll";
export const PUBLISH_PATH = "/v1/publish";

/** The part of `fetch` the transport uses. */
export type FetchLike = (
  url: string,
  init: { method: string; headers: Record<string, string>; body: string; signal?: AbortSignal },
) => Promise<{ status: number; json(): Promise<unknown> }>;

export interface PollingOptions {
  /** The HTTP API's base URL (the stack's `HttpApiUrl`). */
  httpUrl: string;
  token: string | null | undefined;
  fetch: FetchLike;
  timers: Timers;
  /** Wait after a poll that brought messages; doubled after each empty one, up to `pollMaxMs`. */
  pollMinMs: number;
  pollMaxMs: number;
  requestTimeoutMs: number;
  debug: (message: string) => void;
}

/** A channel's answer in a poll. */
interface ChannelPoll {
  position?: Position | null;
  recovered?: boolean | null;
  publications?: MessageFrame[];
  more?: boolean;
  error?: { code: string; message: string };
}

const CONNECTING = 0;
const OPEN = 1;
const CLOSED = 3;
/** Close codes of the transport's own: the HTTP API could not be reached or refused the caller; a channel's position was lost. */
export const POLL_UNREACHABLE = 4500;
export const POLL_REFUSED = 4501;
export const POLL_POSITION_LOST = 4502;

export class PollingSocket implements SocketLike {
  readyState = CONNECTING;
  readonly protocol = "http";
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;

  /** The subscribed channels and the position each has reached. */
  private readonly positions = new Map<string, Position | null>();
  /** Channels whose subscribe is under way: they hold a place under the limit. */
  private readonly joining = new Set<string>();
  private timer: unknown = null;
  private polling = false;
  /** The most channels the server lets one poll name (its per-connection limit), from the first poll. */
  private maxChannels = Number.POSITIVE_INFINITY;
  private wait: number;

  constructor(private readonly options: PollingOptions) {
    this.wait = options.pollMinMs;
    void this.open();
  }

  send(text: string): void {
    let frame: ClientFrame;
    try {
      frame = JSON.parse(text) as ClientFrame;
    } catch {
      return;
    }
    const id = frame.id;
    switch (frame.action) {
      case "ping":
        // Each poll proves the line; a ping has nothing to add.
        this.emit({ type: "pong" });
        break;
      case "subscribe":
        void this.subscribe(frame.channel, frame.since ?? null, id);
        break;
      case "unsubscribe":
        this.positions.delete(frame.channel);
        this.emit({ type: "unsubscribed", channel: frame.channel, id });
        break;
      case "publish":
        void this.publish(frame.channel ?? null, frame.data, id);
        break;
      case "stats":
        this.emit({ type: "error", code: "stats_forbidden", message: "stats need a WebSocket", id });
        break;
    }
  }

  close(): void {
    this.readyState = CLOSED;
    this.stopTimer();
  }

  /** The handshake: a poll of no channel proves the API answers and admits the caller. */
  private async open(): Promise<void> {
    const answer = await this.post(POLL_PATH, { channels: {} });
    if (this.readyState !== CONNECTING) return;
    if (answer.kind !== "ok") {
      this.unanswered(answer);
      return;
    }
    const max = (answer.body as { max_channels?: unknown } | null)?.max_channels;
    if (typeof max === "number" && max > 0) this.maxChannels = max;
    this.readyState = OPEN;
    this.onopen?.({});
    this.schedule();
  }

  private async subscribe(channel: string, since: Position | null, id: ClientFrame["id"]): Promise<void> {
    const taken = new Set([...this.positions.keys(), ...this.joining]);
    if (!taken.has(channel) && taken.size >= this.maxChannels) {
      // As a socket's subscribe past the limit is refused: every poll names every channel.
      const message = `a connection may subscribe to at most ${this.maxChannels} channels`;
      this.emit({ type: "error", code: "channel_limit", message, id });
      return;
    }
    this.joining.add(channel);
    const answer = await this.post(POLL_PATH, { channels: { [channel]: since } });
    this.joining.delete(channel);
    if (this.readyState !== OPEN) return;
    if (answer.kind !== "ok") {
      this.unanswered(answer);
      return;
    }
    const poll = channelsOf(answer.body)[channel];
    if (!poll || poll.error) {
      const error = poll?.error ?? { code: "internal_error", message: "the poll did not answer for the channel" };
      this.emit({ type: "error", code: error.code, message: error.message, id });
      return;
    }
    this.positions.set(channel, poll.position ?? null);
    this.emit({
      type: "subscribed",
      channel,
      position: poll.position ?? null,
      recovered: poll.recovered ?? null,
      publications: poll.publications ?? [],
      id,
    });
    if (poll.more) this.soon();
  }

  private async publish(channel: string | null, data: unknown, id: ClientFrame["id"]): Promise<void> {
    const answer = await this.post(PUBLISH_PATH, channel === null ? { data } : { channel, data });
    if (this.readyState !== OPEN) return;
    if (answer.kind === "ok") {
      const messages = (answer.body as { messages?: { message_id?: string }[] }).messages;
      this.emit({ type: "published", message_id: messages?.[0]?.message_id, id });
    } else if (answer.error) {
      // The server's own refusal (`rate_limited` comes as a 429): its code, as on a socket.
      this.emit({ type: "error", code: answer.error.code, message: answer.error.message, id });
    } else {
      this.emit({ type: "error", code: "internal_error", message: answer.reason, id });
    }
  }

  /** One poll of every subscribed channel from where each stands. */
  private async poll(): Promise<void> {
    this.timer = null;
    if (this.readyState !== OPEN || this.polling) return;
    if (this.positions.size === 0) {
      this.schedule();
      return;
    }
    this.polling = true;
    const asked = Object.fromEntries(this.positions);
    const answer = await this.post(POLL_PATH, { channels: asked });
    this.polling = false;
    if (this.readyState !== OPEN) return;
    if (answer.kind !== "ok") {
      this.unanswered(answer);
      return;
    }
    let moved = false;
    for (const [channel, poll] of Object.entries(channelsOf(answer.body))) {
      // Left, or subscribed again from elsewhere, while this poll was out.
      if (!this.positions.has(channel) || this.positions.get(channel) !== asked[channel]) continue;
      if (poll.error) {
        this.options.debug(`poll of ${channel} refused: ${poll.error.code}`);
        continue;
      }
      if (poll.recovered === false) {
        // What was missed is gone: a new connection resubscribes, and its
        // subscribe reply tells the client so, as after any reconnect.
        this.fail(POLL_POSITION_LOST, `the position on ${channel} can no longer be recovered`);
        return;
      }
      const messages = poll.publications ?? [];
      if (messages.length > 0) this.emit({ type: "batch", messages });
      this.positions.set(channel, poll.position ?? null);
      moved ||= messages.length > 0 || poll.more === true;
    }
    this.wait = moved ? this.options.pollMinMs : Math.min(this.wait * 2, this.options.pollMaxMs);
    this.schedule();
  }

  private schedule(): void {
    this.stopTimer();
    if (this.readyState === OPEN) this.timer = this.options.timers.setTimeout(() => void this.poll(), this.wait);
  }

  private soon(): void {
    this.wait = this.options.pollMinMs;
    this.schedule();
  }

  private stopTimer(): void {
    if (this.timer !== null) this.options.timers.clearTimeout(this.timer);
    this.timer = null;
  }

  private emit(frame: Record<string, unknown>): void {
    if (this.readyState === CLOSED) return;
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  /** A poll the API refused or never answered ends the transport, as a lost socket. */
  private unanswered(answer: Exclude<Answer, { kind: "ok" }>): void {
    this.fail(answer.kind === "refused" ? POLL_REFUSED : POLL_UNREACHABLE, answer.reason);
  }

  private fail(code: number, reason: string): void {
    if (this.readyState === CLOSED) return;
    this.options.debug(`http transport lost: ${reason}`);
    this.readyState = CLOSED;
    this.stopTimer();
    this.onclose?.({ code, reason });
  }

  private async post(path: string, body: unknown): Promise<Answer> {
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (this.options.token) headers.authorization = `Bearer ${this.options.token}`;
    const controller = typeof AbortController === "function" ? new AbortController() : null;
    const timeout = this.options.timers.setTimeout(() => controller?.abort(), this.options.requestTimeoutMs);
    try {
      const response = await this.options.fetch(this.options.httpUrl.replace(/\/+$/, "") + path, {
        method: "POST",
        headers,
        body: JSON.stringify(body),
        ...(controller ? { signal: controller.signal } : {}),
      });
      const parsed = await response.json().catch(() => null);
      if (response.status === 200) return { kind: "ok", body: parsed };
      const error = (parsed as { error?: { code: string; message: string } } | null)?.error;
      // A 4xx is the caller's (a refused token, a refused message); a 5xx or 429 from the gateway may pass.
      const refused = response.status >= 400 && response.status < 500 && response.status !== 429;
      return {
        kind: refused ? "refused" : "unavailable",
        reason: `HTTP ${response.status}${error ? `: ${error.code}: ${error.message}` : ""}`,
        error,
      };
    } catch (error) {
      return { kind: "unavailable", reason: `the HTTP API cannot be reached: ${String(error)}` };
    } finally {
      this.options.timers.clearTimeout(timeout);
    }
  }
}

type Answer =
  | { kind: "ok"; body: unknown }
  | { kind: "refused" | "unavailable"; reason: string; error?: { code: string; message: string } };

function channelsOf(body: unknown): Record<string, ChannelPoll> {
  const channels = (body as { channels?: unknown } | null)?.channels;
  return channels !== null && typeof channels === "object" ? (channels as Record<string, ChannelPoll>) : {};
}
