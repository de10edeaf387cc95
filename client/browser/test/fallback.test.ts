import { describe, expect, it } from "vitest";
import type { ChannelMessage, FetchLike, MessageFrame, Position } from "../src/index.js";
import { flush, harness, pos, type Harness } from "./fakes.js";

/** The HTTP API, played in memory: each channel's history, polls and publishes. */
class FakeHttpApi {
  history = new Map<string, MessageFrame[]>();
  calls: { path: string; body: Record<string, unknown>; authorization?: string }[] = [];
  down = false;
  maxChannels = 10;

  /** The next publish is refused with this status and code. */
  refuseNextPublish: { status: number; code: string } | null = null;

  fetch: FetchLike = async (url, init) => {
    if (this.down) throw new TypeError("Failed to fetch");
    const refusal = this.refuseNextPublish;
    if (refusal && new URL(url).pathname === "/v1/publish") {
      this.refuseNextPublish = null;
      return { status: refusal.status, json: async () => ({ error: { code: refusal.code, message: "no" } }) };
    }
    const path = new URL(url).pathname;
    const body = JSON.parse(init.body) as Record<string, unknown>;
    this.calls.push({ path, body, authorization: init.headers.authorization });
    const answer = path === "/v1/poll" ? this.poll(body) : this.publishFrom(body);
    return { status: 200, json: async () => answer };
  };

  publish(channel: string, data: unknown): string {
    const messages = this.history.get(channel) ?? [];
    const id = `${channel}-${messages.length + 1}`;
    messages.push({ id, channel, data, position: pos(messages.length + 1) });
    this.history.set(channel, messages);
    return id;
  }

  polls(): number {
    return this.calls.filter((call) => call.path === "/v1/poll").length;
  }

  private poll(body: Record<string, unknown>): unknown {
    const channels: Record<string, unknown> = {};
    for (const [channel, since] of Object.entries(body.channels as Record<string, Position | null>)) {
      const messages = this.history.get(channel) ?? [];
      const head = messages.length > 0 ? pos(messages.length) : { epoch: "", offset: 0 };
      channels[channel] =
        since === null
          ? { position: head }
          : { position: head, recovered: true, publications: messages.slice(since.offset) };
    }
    return { channels, max_channels: this.maxChannels };
  }

  private publishFrom(body: Record<string, unknown>): unknown {
    return { messages: [{ message_id: this.publish(String(body.channel), body.data) }] };
  }
}

function fallbackHarness(api: FakeHttpApi, options: Record<string, unknown> = {}): Harness {
  return harness({
    httpUrl: "https://api.example",
    fetch: api.fetch,
    getToken: () => "tok",
    pollMinMs: 100,
    pollMaxMs: 400,
    probeIntervalMs: 10_000,
    ...options,
  });
}

/** Refuses `count` handshakes in a row, waiting out each backoff. */
async function refuseHandshakes(h: Harness, count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    await flush();
    h.socket().refuse();
    await h.clock.advance(h.clock.pendingDelays()[0] ?? 0);
  }
  await flush();
}

/** A client subscribed to `prices` whose first three handshakes were refused: on HTTP now. */
async function fallenBack(api: FakeHttpApi): Promise<{ h: Harness; received: ChannelMessage[] }> {
  const h = fallbackHarness(api);
  const received: ChannelMessage[] = [];
  h.client.subscribe("prices", (_data, message) => received.push(message));
  const opened = h.client.connect();
  await refuseHandshakes(h, 3);
  await opened;
  return { h, received };
}

describe("the HTTP fallback", () => {
  it("takes over after three failed handshakes and delivers every message once, in order", async () => {
    const api = new FakeHttpApi();
    const { h, received } = await fallenBack(api);
    expect(h.sockets.length).toBe(3);
    expect(h.client.stats().transport).toBe("http");
    expect(h.client.state).toBe("open");
    expect(api.calls[0]?.authorization).toBe("Bearer tok");
    await h.clock.advance(0);
    expect(h.client.stats().channels.prices?.subscribed).toBe(true);

    const ids = [api.publish("prices", 1), api.publish("prices", 2), api.publish("prices", 3)];
    await h.clock.advance(400);
    expect(received.map((message) => message.id)).toEqual(ids);
    expect(received.map((message) => message.position?.offset)).toEqual([1, 2, 3]);
    // Quiet polls slow down to pollMaxMs; each one costs a request.
    const before = api.polls();
    await h.clock.advance(4_000);
    expect(api.polls() - before).toBeLessThanOrEqual(11);
    expect(received.length).toBe(3);
  });

  it("publishes over HTTP with the client's token", async () => {
    const api = new FakeHttpApi();
    const h = fallbackHarness(api, { transport: "http" });
    await h.client.connect();
    expect(h.sockets.length).toBe(0);
    const id = await h.client.publish("chat", { text: "hi" });
    expect(id).toBe("chat-1");
    const call = api.calls.find((c) => c.path === "/v1/publish");
    expect(call?.body).toEqual({ channel: "chat", data: { text: "hi" } });
    expect(call?.authorization).toBe("Bearer tok");
    // A refusal carries the server's code, a 429's too.
    api.refuseNextPublish = { status: 429, code: "rate_limited" };
    await expect(h.client.publish("chat", 1)).rejects.toMatchObject({ code: "rate_limited" });
    api.refuseNextPublish = { status: 403, code: "publish_forbidden" };
    await expect(h.client.publish("chat", 1)).rejects.toMatchObject({ code: "publish_forbidden" });
  });

  it("goes back to a WebSocket once a probe gets its pong, with no gap and no duplicate", async () => {
    const api = new FakeHttpApi();
    const { h, received } = await fallenBack(api);
    api.publish("prices", 1);
    api.publish("prices", 2);
    await h.clock.advance(400);
    expect(received.length).toBe(2);

    await h.clock.advance(10_000);
    const probe = h.socket();
    probe.accept();
    expect(probe.lastRequest("ping")).toEqual({ action: "ping" });
    api.publish("prices", 3); // published while the switch happens
    probe.receive({ type: "pong" });
    await h.clock.advance(0);
    expect(probe.closedWith).toBe(1000);
    const socket = h.socket();
    expect(socket).not.toBe(probe);
    socket.accept();
    await flush();
    expect(h.client.stats().transport).toBe("websocket");
    const subscribe = socket.lastRequest("subscribe");
    expect(subscribe.since).toEqual(pos(2));
    const missed = api.history.get("prices")?.slice(2) ?? [];
    socket.receive({ type: "subscribed", channel: "prices", id: subscribe.id, position: pos(3), recovered: true, publications: missed });
    await flush();
    // The same message again on the socket is dropped.
    socket.receive({ type: "message", ...missed[0] });
    await flush();
    expect(received.map((message) => message.position?.offset)).toEqual([1, 2, 3]);
    const polls = api.polls();
    await h.clock.advance(2_000);
    expect(api.polls()).toBe(polls);
  });

  it("stays on WebSockets without an HTTP API, and on HTTP when told to", async () => {
    const h = harness();
    void h.client.connect();
    await refuseHandshakes(h, 4);
    expect(h.sockets.length).toBe(5);
    expect(h.client.stats().transport).toBe("websocket");
  });

  it("refuses a subscribe past the server's channel limit, as a socket would", async () => {
    const api = new FakeHttpApi();
    api.maxChannels = 2;
    const h = fallbackHarness(api, { transport: "http" });
    const errors: string[] = [];
    h.client.on("error", (error) => errors.push(String(error.code)));
    await h.client.connect();
    const readies = ["a", "b", "c"].map((channel) => h.client.subscribe(channel, () => {}).ready);
    await h.clock.advance(0);
    await expect(readies[0]).resolves.toBeUndefined();
    await expect(readies[1]).resolves.toBeUndefined();
    await expect(readies[2]).rejects.toMatchObject({ code: "channel_limit" });
    expect(errors).toContain("channel_limit");
    // Every poll names only the channels the server took.
    await h.clock.advance(400);
    const last = api.calls.filter((call) => call.path === "/v1/poll").at(-1);
    expect(Object.keys(last?.body.channels as object).sort()).toEqual(["a", "b"]);
  });

  it("a lost HTTP API is a lost connection: the client reconnects and recovers", async () => {
    const api = new FakeHttpApi();
    const h = fallbackHarness(api, { transport: "http" });
    const received: ChannelMessage[] = [];
    h.client.subscribe("news", (_data, message) => received.push(message));
    await h.client.connect();
    await h.clock.advance(0);
    api.publish("news", 1);
    await h.clock.advance(400);
    api.down = true;
    api.publish("news", 2);
    await h.clock.advance(400);
    expect(h.client.state).toBe("reconnecting");
    api.down = false;
    await h.clock.advance(h.clock.pendingDelays()[0] ?? 0);
    await h.clock.advance(400);
    expect(h.client.state).toBe("open");
    expect(received.map((message) => message.id)).toEqual(["news-1", "news-2"]);
  });
});
