// Deterministic stand-ins for the client's environment: a manual clock and
// timers, a scripted random source, a WebSocket the test drives by hand.
import { AirwaveClient, type AirwaveOptions, type Lifecycle, type SocketLike, type Timers } from "../src/index.js";

interface Timer {
  id: number;
  at: number;
  callback: () => void;
}

export class FakeClock implements Timers {
  time = 1_000_000;
  private timers: Timer[] = [];
  private nextId = 1;

  now = (): number => this.time;

  setTimeout(callback: () => void, ms: number): unknown {
    const timer = { id: this.nextId++, at: this.time + Math.max(0, ms), callback };
    this.timers.push(timer);
    return timer.id;
  }

  clearTimeout(handle: unknown): void {
    this.timers = this.timers.filter((timer) => timer.id !== handle);
  }

  /** Delays of the timers now pending, soonest first. */
  pendingDelays(): number[] {
    return this.timers.map((timer) => timer.at - this.time).sort((a, b) => a - b);
  }

  /** Runs every timer due within `ms`, in order, letting promises settle between them. */
  async advance(ms: number): Promise<void> {
    const end = this.time + ms;
    await flush();
    for (;;) {
      const due = this.timers.filter((timer) => timer.at <= end).sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (!due) break;
      this.timers = this.timers.filter((timer) => timer !== due);
      this.time = Math.max(this.time, due.at);
      due.callback();
      await flush();
    }
    this.time = end;
  }
}

export async function flush(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}

export class FakeSocket implements SocketLike {
  static instances: FakeSocket[] = [];
  readyState = 0;
  protocol = "";
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  sent: Record<string, unknown>[] = [];
  closedWith: number | null = null;

  constructor(
    readonly url: string,
    readonly protocols?: string | string[],
  ) {
    FakeSocket.instances.push(this);
  }

  send(data: string): void {
    if (this.readyState !== 1) throw new Error("not open");
    this.sent.push(JSON.parse(data) as Record<string, unknown>);
  }

  close(code?: number): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.closedWith = code ?? 1000;
  }

  // --- the server's side ---
  accept(): void {
    this.readyState = 1;
    this.protocol = "airwave.v1";
    this.onopen?.({});
  }

  /** A refused handshake, as a browser reports it: error, then close 1006. */
  refuse(): void {
    this.readyState = 3;
    this.onerror?.({});
    this.onclose?.({ code: 1006, reason: "" });
  }

  drop(code = 1006): void {
    this.readyState = 3;
    this.onclose?.({ code, reason: "" });
  }

  receive(frame: unknown): void {
    this.onmessage?.({ data: typeof frame === "string" ? frame : JSON.stringify(frame) });
  }

  /** Frames sent with this action. */
  requests(action: string): Record<string, unknown>[] {
    return this.sent.filter((frame) => frame.action === action);
  }

  lastRequest(action: string): Record<string, unknown> {
    const found = this.requests(action).at(-1);
    if (!found) throw new Error(`no ${action} sent; sent: ${JSON.stringify(this.sent)}`);
    return found;
  }
}

export class FakeLifecycle implements Lifecycle {
  online = true;
  hidden = false;
  private handlers: { online(): void; offline(): void; visibility(): void } | null = null;
  isOnline = (): boolean => this.online;
  isHidden = (): boolean => this.hidden;
  listen(handlers: { online(): void; offline(): void; visibility(): void }): () => void {
    this.handlers = handlers;
    return () => {
      this.handlers = null;
    };
  }
  goOffline(): void {
    this.online = false;
    this.handlers?.offline();
  }
  goOnline(): void {
    this.online = true;
    this.handlers?.online();
  }
  setHidden(hidden: boolean): void {
    this.hidden = hidden;
    this.handlers?.visibility();
  }
}

export interface Harness {
  client: AirwaveClient;
  clock: FakeClock;
  lifecycle: FakeLifecycle;
  sockets: FakeSocket[];
  socket(): FakeSocket;
  states: string[];
}

/** A client on fakes; `random` defaults to 0.5 for every draw. */
export function harness(options: Partial<AirwaveOptions> = {}): Harness {
  FakeSocket.instances = [];
  const clock = new FakeClock();
  const lifecycle = new FakeLifecycle();
  const client = new AirwaveClient({
    url: "ws://server/local",
    WebSocket: FakeSocket,
    timers: clock,
    now: clock.now,
    random: () => 0.5,
    lifecycle,
    ...options,
  });
  const states: string[] = [];
  client.on("state", (state) => states.push(state));
  return {
    client,
    clock,
    lifecycle,
    sockets: FakeSocket.instances,
    socket() {
      const last = FakeSocket.instances.at(-1);
      if (!last) throw new Error("no socket yet");
      return last;
    },
    states,
  };
}

/** Opens the client's socket and answers nothing yet. */
export async function opened(h: Harness): Promise<FakeSocket> {
  const connected = h.client.connect();
  await flush();
  h.socket().accept();
  await connected;
  return h.socket();
}

/** Answers the last subscribe to `channel` on `socket`. */
export async function answerSubscribe(
  socket: FakeSocket,
  channel: string,
  extra: Record<string, unknown> = {},
): Promise<Record<string, unknown>> {
  const request = socket.sent.filter((f) => f.action === "subscribe" && f.channel === channel).at(-1);
  if (!request) throw new Error(`no subscribe to ${channel}`);
  socket.receive({ type: "subscribed", channel, id: request.id, ...extra });
  // Replies settle a promise; let its continuation run.
  await flush();
  return request;
}

export const pos = (offset: number, epoch = "e1") => ({ epoch, offset });
export const msg = (id: string, channel: string, offset: number | null, data: unknown = id, epoch = "e1") => ({
  type: "message",
  id,
  channel,
  data,
  ...(offset === null ? {} : { position: pos(offset, epoch) }),
});
