import { describe, expect, it } from "vitest";
import { AirwaveError, type ChannelMessage } from "../src/index.js";
import { answerSubscribe, flush, harness, msg, opened, pos } from "./fakes.js";

describe("one logical connection", () => {
  it("shares one socket however often connect() is called", async () => {
    const h = harness();
    const calls = [h.client.connect(), h.client.connect(), h.client.connect()];
    await flush();
    expect(h.sockets.length).toBe(1);
    h.socket().accept();
    await Promise.all(calls);
    await h.client.connect();
    expect(h.sockets.length).toBe(1);
    expect(h.states).toEqual(["connecting", "open"]);
  });

  it("closes a socket it gives up on before opening the next", async () => {
    const h = harness({ connectTimeoutMs: 1000 });
    void h.client.connect();
    await flush();
    const first = h.socket();
    await h.clock.advance(1000); // the handshake never finishes
    expect(first.closedWith).not.toBeNull();
    expect(h.client.state).toBe("reconnecting");
    await h.clock.advance(h.clock.pendingDelays()[0] ?? 0);
    expect(h.sockets.length).toBe(2);
    expect(h.sockets.filter((s) => s.closedWith === null).length).toBe(1);
  });

  it("offers the airwave subprotocol and a fresh token on every attempt", async () => {
    let issued = 0;
    const h = harness({ getToken: async () => `tok${++issued}` });
    void h.client.connect();
    await flush();
    expect(h.socket().protocols).toEqual(["airwave.v1", "tok1"]);
    h.socket().refuse();
    await h.clock.advance(h.clock.pendingDelays()[0] ?? 0);
    expect(h.socket().protocols).toEqual(["airwave.v1", "tok2"]);
    expect(h.socket().url).toBe("ws://server/local");
  });

  it("can put the token in the query instead", async () => {
    const h = harness({ getToken: () => "a b", tokenIn: "query" });
    void h.client.connect();
    await flush();
    expect(h.socket().url).toBe("ws://server/local?token=a%20b");
    expect(h.socket().protocols).toEqual(["airwave.v1"]);
  });
});

describe("state machine", () => {
  it("goes connecting → open → reconnecting → open → closed", async () => {
    const h = harness();
    const socket = await opened(h);
    socket.drop();
    expect(h.client.state).toBe("reconnecting");
    await h.clock.advance(h.clock.pendingDelays()[0] ?? 0);
    h.socket().accept();
    h.client.close();
    expect(h.states).toEqual(["connecting", "open", "reconnecting", "open", "closed"]);
    expect(h.socket().closedWith).toBe(1000);
    expect(h.client.stats().reconnects).toBe(1);
  });

  it("gives up after maxAttempts and reconnect() starts again", async () => {
    const h = harness({ backoff: { maxAttempts: 2 } });
    const first = h.client.connect();
    for (let i = 0; i < 3; i++) {
      await h.clock.advance(h.clock.pendingDelays()[0] ?? 0);
      h.socket().refuse();
    }
    await expect(first).rejects.toMatchObject({ code: "gave_up" });
    expect(h.client.state).toBe("gave_up");
    expect(h.sockets.length).toBe(3);
    await expect(h.client.publish("c", 1)).rejects.toMatchObject({ code: "not_connected" });
    const again = h.client.reconnect();
    await flush();
    h.socket().accept();
    await again;
    expect(h.sockets.length).toBe(4);
    expect(h.client.state).toBe("open");
  });

  it("reconnect() while open ends the old socket exactly as a loss would", async () => {
    const h = harness();
    const errors: AirwaveError[] = [];
    h.client.on("error", (e) => errors.push(e));
    const socket = await opened(h);
    const got: unknown[] = [];
    h.client.subscribe("c", (d) => got.push(d));
    await answerSubscribe(socket, "c", { position: pos(1) });
    const d = h.client.subscribe("d", () => {}); // its subscribe is still in flight
    let failure: unknown;
    h.client.publish("c", 1).catch((e: unknown) => (failure = e));
    const again = h.client.reconnect();
    await flush();
    expect(socket.closedWith).toBe(1000);
    expect(failure).toMatchObject({ code: "disconnected" });
    expect(h.client.stats().channels.c?.subscribed).toBe(false);
    socket.receive(msg("late", "c", 2)); // the old socket is deaf now
    h.socket().accept();
    await again;
    expect(h.socket().lastRequest("subscribe")).toMatchObject({ channel: "d" });
    await answerSubscribe(h.socket(), "c", { position: pos(1) });
    await answerSubscribe(h.socket(), "d");
    await d.ready;
    await h.clock.advance(60_000); // past every timeout the old socket's requests had
    expect(errors).toEqual([]);
    expect(got).toEqual([]);
    expect(h.client.stats()).toMatchObject({ state: "open", pendingRequests: 0, channels: { c: { subscribed: true } } });
  });

  it("does not reset the schedule for a socket that opened and closed at once", async () => {
    const h = harness({ random: () => 0.999, backoff: { baseMs: 100, capMs: 100_000 } });
    void h.client.connect();
    const ceilings: number[] = [];
    for (let i = 0; i < 4; i++) {
      await h.clock.advance(h.clock.pendingDelays().at(-1) ?? 0);
      h.socket().accept();
      h.socket().drop();
      ceilings.push(h.clock.pendingDelays().find((d) => d > 10) ?? 0);
    }
    expect(ceilings).toEqual([99, 199, 399, 799]);
  });

  it("resets the schedule once a socket proved healthy", async () => {
    const h = harness({ random: () => 0.999, backoff: { baseMs: 100 }, healthyAfterMs: 5000 });
    const socket = await opened(h);
    socket.drop();
    await h.clock.advance(h.clock.pendingDelays()[0] ?? 0);
    h.socket().accept();
    h.socket().drop();
    expect(h.clock.pendingDelays()).toEqual([199]);
    await h.clock.advance(199);
    h.socket().accept();
    await h.clock.advance(5000); // stayed open long enough
    h.socket().drop();
    expect(h.clock.pendingDelays()).toEqual([99]);
  });

  it("does not spend attempts while offline and tries at once when back online", async () => {
    const h = harness({ backoff: { maxAttempts: 1 } });
    const socket = await opened(h);
    h.lifecycle.goOffline();
    socket.drop();
    await h.clock.advance(600_000);
    expect(h.sockets.length).toBe(1);
    expect(h.client.state).toBe("reconnecting");
    h.lifecycle.goOnline();
    await flush();
    expect(h.sockets.length).toBe(2);
    h.socket().accept();
    expect(h.client.state).toBe("open");
  });

  it("checks the socket at once when a page hidden for long is shown again", async () => {
    const h = harness({ keepAliveAfterMs: 540_000, wakeCheckAfterMs: 30_000 });
    const socket = await opened(h);
    h.lifecycle.setHidden(true);
    h.clock.time += 120_000; // the machine slept: wall clock jumped, no timer ran
    h.lifecycle.setHidden(false);
    expect(socket.sent).toEqual([{ action: "ping" }]);
  });

  it("checks the socket when shown again after its keep-alive was due, however briefly hidden", async () => {
    const h = harness({ keepAliveAfterMs: 60_000, wakeCheckAfterMs: 30_000 });
    const socket = await opened(h);
    h.clock.time += 50_000;
    h.lifecycle.setHidden(true);
    h.clock.time += 25_000; // slept past the keep-alive, hidden for less than wakeCheckAfterMs
    h.lifecycle.setHidden(false);
    expect(socket.requests("ping").length).toBe(1);
  });

  it("on online while waiting out a backoff, tries now", async () => {
    const h = harness({ random: () => 0.99 });
    const socket = await opened(h);
    socket.drop();
    expect(h.sockets.length).toBe(1);
    h.lifecycle.goOnline();
    await flush();
    expect(h.sockets.length).toBe(2);
  });
});

describe("keep-alive", () => {
  const pings = (socket: { sent: Record<string, unknown>[] }) => socket.sent.filter((f) => f.action === "ping");

  it("sends no ping while the client sends frames more often than keepAliveAfterMs", async () => {
    const h = harness({ keepAliveAfterMs: 60_000 });
    const socket = await opened(h);
    for (let i = 0; i < 12; i++) {
      await h.clock.advance(50_000);
      const published = h.client.publish("c", i);
      socket.receive({ type: "published", message_id: `m${i}`, id: socket.lastRequest("publish").id });
      await published;
    }
    expect(h.clock.time - 1_000_000).toBeGreaterThan(5 * 60_000);
    expect(pings(socket)).toEqual([]);
    // Any frame counts: a subscribe and an unsubscribe keep it quiet too.
    await h.clock.advance(50_000);
    const off = h.client.subscribe("d", () => {});
    await answerSubscribe(socket, "d");
    await h.clock.advance(50_000);
    off();
    await h.clock.advance(50_000);
    expect(socket.lastRequest("unsubscribe")).toMatchObject({ channel: "d" });
    expect(pings(socket)).toEqual([]);
  });

  it("sends exactly one ping, without an id, after keepAliveAfterMs of quiet; an id-less pong answers it", async () => {
    const h = harness({ keepAliveAfterMs: 60_000, pongTimeoutMs: 5000 });
    const socket = await opened(h);
    const published = h.client.publish("c", 1);
    socket.receive({ type: "published", message_id: "m1", id: socket.lastRequest("publish").id });
    await published;
    await h.clock.advance(59_999);
    expect(pings(socket)).toEqual([]);
    await h.clock.advance(1);
    expect(pings(socket)).toEqual([{ action: "ping" }]);
    socket.receive({ type: "pong" });
    await h.clock.advance(5000 + 1000); // past the pong timeout: answered, nothing happens
    expect(pings(socket).length).toBe(1);
    expect(h.client.state).toBe("open");
    expect(h.sockets.length).toBe(1);
    expect(socket.closedWith).toBeNull();
    expect(h.client.stats().pendingRequests).toBe(0);
    // The ping was a frame sent: the next one goes a full quiet period after it.
    await h.clock.advance(60_000 - 6000 - 1);
    expect(pings(socket).length).toBe(1);
    await h.clock.advance(1);
    expect(pings(socket)).toEqual([{ action: "ping" }, { action: "ping" }]);
  });

  it("replaces the socket when the pong does not come within pongTimeoutMs", async () => {
    const h = harness({ keepAliveAfterMs: 60_000, pongTimeoutMs: 5000 });
    const socket = await opened(h);
    await h.clock.advance(60_000);
    expect(pings(socket).length).toBe(1);
    await h.clock.advance(4999);
    expect(h.client.state).toBe("open");
    await h.clock.advance(1);
    expect(h.client.state).toBe("reconnecting");
    expect(socket.closedWith).not.toBeNull();
    await h.clock.advance(h.clock.pendingDelays()[0] ?? 0);
    expect(h.sockets.length).toBe(2);
  });

  it("spends one attempt on a lost socket however many checks joined its unanswered ping", async () => {
    const h = harness({ keepAliveAfterMs: 2000, pongTimeoutMs: 10_000, backoff: { maxAttempts: 3 } });
    const socket = await opened(h);
    h.lifecycle.goOffline(); // the socket is dead, and nothing says so but the missing pong
    await h.clock.advance(2000); // the keep-alive ping
    for (let i = 0; i < 4; i++) await h.clock.advance(2000); // four more checks join it
    expect(pings(socket).length).toBe(1);
    await h.clock.advance(10_000); // the pong is overdue: the socket is replaced, once
    expect(h.client.state).toBe("reconnecting");
    expect(h.client.stats().attempt).toBe(1);
    h.lifecycle.goOnline();
    await flush();
    // The rest of the budget is there: two more failures before giving up, then the third.
    for (let i = 0; i < 2; i++) {
      h.socket().refuse();
      await h.clock.advance(h.clock.pendingDelays()[0] ?? 0);
      expect(h.client.state).not.toBe("gave_up");
    }
    h.socket().refuse();
    expect(h.client.state).toBe("gave_up");
    expect(h.sockets.length).toBe(4);
  });

  it("still pings when the only traffic is messages received", async () => {
    const h = harness({ keepAliveAfterMs: 60_000 });
    const socket = await opened(h);
    const got: string[] = [];
    h.client.on("broadcast", (m) => got.push(m.id));
    for (let i = 0; i < 6; i++) {
      await h.clock.advance(10_000);
      socket.receive({ type: "message", id: `b${i}`, data: i });
    }
    expect(got.length).toBe(6);
    expect(pings(socket)).toEqual([{ action: "ping" }]);
  });

  it("keeps one ping outstanding: another ping shares it, and one pong answers both", async () => {
    const h = harness({ keepAliveAfterMs: 60_000, pongTimeoutMs: 5000 });
    const socket = await opened(h);
    await h.clock.advance(60_000); // the keep-alive ping
    const mine = h.client.ping();
    h.lifecycle.goOnline(); // a check while the ping is outstanding
    expect(pings(socket).length).toBe(1);
    socket.receive({ type: "pong" });
    await mine;
    await h.clock.advance(10_000);
    expect(h.client.state).toBe("open");
    expect(h.sockets.length).toBe(1);
  });

  it("takes a pong that carries an id (older servers) as the answer too", async () => {
    const h = harness({ keepAliveAfterMs: 60_000, pongTimeoutMs: 5000 });
    const socket = await opened(h);
    const answered = h.client.ping();
    expect(socket.lastRequest("ping")).toEqual({ action: "ping" });
    socket.receive({ type: "pong", id: 1 });
    await answered;
    await h.clock.advance(10_000);
    expect(h.client.state).toBe("open");
  });

  it("accepts pingIntervalMs as a deprecated alias of keepAliveAfterMs", async () => {
    const h = harness({ pingIntervalMs: 30_000 });
    const socket = await opened(h);
    await h.clock.advance(30_000);
    expect(pings(socket).length).toBe(1);
  });

  it("defaults to a keep-alive after 9 minutes of quiet", async () => {
    const h = harness();
    const socket = await opened(h);
    await h.clock.advance(540_000 - 1);
    expect(pings(socket)).toEqual([]);
    await h.clock.advance(1);
    expect(pings(socket)).toEqual([{ action: "ping" }]);
  });
});

describe("requests", () => {
  it("pairs replies with requests by id, whatever their order", async () => {
    const h = harness();
    const socket = await opened(h);
    const a = h.client.publish("c", { n: 1 });
    const b = h.client.publish("c", { n: 2 });
    const [ra, rb] = socket.requests("publish");
    expect(ra?.id).not.toEqual(rb?.id);
    socket.receive({ type: "published", message_id: "m2", id: rb?.id });
    socket.receive({ type: "published", message_id: "m1", id: ra?.id });
    expect(await a).toBe("m1");
    expect(await b).toBe("m2");
  });

  it("pairs id-less replies of an older server by type, oldest first", async () => {
    const h = harness();
    const socket = await opened(h);
    const stats = h.client.serverStats();
    const published = h.client.publish("c", 1);
    socket.receive({ type: "published", id: "uuid-1" }); // old servers: id = message id
    socket.receive({
      type: "stats",
      open_connections: 3,
      distinct_users: 0,
      max_connections: 0,
      max_connections_per_user: 0,
      max_connections_per_ip: 0,
      free_slots: null,
      connect_attempts_per_ip: 0,
      window_seconds: 60,
      throttled_attempts_in_window: 0,
    });
    expect(await published).toBe("uuid-1");
    expect((await stats).open_connections).toBe(3);
  });

  it("falls back to requests without ids for a server that refuses them", async () => {
    const h = harness();
    const socket = await opened(h);
    const result = h.client.publish("c", 1);
    socket.receive({ type: "error", code: "invalid_request", message: "invalid publish request: unknown field `id`, expected `channel` or `data`" });
    const resent = socket.requests("publish");
    expect(resent.length).toBe(2);
    expect(resent[1]).toEqual({ action: "publish", channel: "c", data: 1 });
    socket.receive({ type: "published", id: "uuid-9" });
    expect(await result).toBe("uuid-9");
  });

  it("sends every request refused for its id again, when several were in flight", async () => {
    const h = harness();
    const errors: AirwaveError[] = [];
    h.client.on("error", (e) => errors.push(e));
    const a = h.client.subscribe("a", () => {});
    const b = h.client.subscribe("b", () => {});
    const socket = await opened(h);
    const refusal = { type: "error", code: "invalid_request", message: "invalid subscribe request: unknown field `id`" };
    socket.receive(refusal);
    socket.receive(refusal);
    expect(socket.requests("subscribe").slice(2)).toEqual([
      { action: "subscribe", channel: "a" },
      { action: "subscribe", channel: "b" },
    ]);
    socket.receive({ type: "subscribed", channel: "a" });
    socket.receive({ type: "subscribed", channel: "b" });
    await Promise.all([a.ready, b.ready]);
    expect(errors).toEqual([]);
  });

  it("rejects with an AirwaveError carrying the server's code", async () => {
    const h = harness();
    const socket = await opened(h);
    const result = h.client.publish("c", 1);
    socket.receive({ type: "error", code: "publish_forbidden", message: "no", id: socket.lastRequest("publish").id });
    const error: unknown = await result.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AirwaveError);
    expect((error as AirwaveError).code).toBe("publish_forbidden");
  });

  it("rejects a publish refused as rate_limited and keeps the connection for a later retry", async () => {
    const h = harness();
    const socket = await opened(h);
    const result = h.client.publish("c", 1);
    socket.receive({ type: "error", code: "rate_limited", message: "slow down", id: socket.lastRequest("publish").id });
    await expect(result).rejects.toMatchObject({ code: "rate_limited" });
    expect(h.client.state).toBe("open");
    const retry = h.client.publish("c", 1);
    socket.receive({ type: "published", message_id: "m1", id: socket.lastRequest("publish").id });
    expect(await retry).toBe("m1");
    expect(h.sockets.length).toBe(1);
  });

  it("passes on when the server counted its stats (as_of)", async () => {
    const h = harness();
    const socket = await opened(h);
    const result = h.client.serverStats();
    socket.receive({
      type: "stats",
      id: socket.lastRequest("stats").id,
      open_connections: 2,
      distinct_users: 1,
      max_connections: 0,
      max_connections_per_user: 0,
      max_connections_per_ip: 0,
      connect_attempts_per_ip: 0,
      window_seconds: 60,
      throttled_attempts_in_window: 0,
      as_of: 1_700_000_000,
    });
    expect(await result).toMatchObject({ open_connections: 2, as_of: 1_700_000_000 });
  });

  it("keeps unknown error codes as strings", async () => {
    const h = harness();
    const socket = await opened(h);
    const result = h.client.serverStats();
    socket.receive({ type: "error", code: "brand_new", message: "?", id: socket.lastRequest("stats").id });
    await expect(result).rejects.toMatchObject({ code: "brand_new" });
  });

  it("fails the oldest request at once on API Gateway's error frame", async () => {
    const h = harness();
    const socket = await opened(h);
    const first = h.client.publish("c", 1);
    const second = h.client.publish("c", 2);
    socket.receive({ message: "Internal server error", connectionId: "x", requestId: "y" });
    await expect(first).rejects.toMatchObject({ code: "internal_error" });
    socket.receive({ type: "published", message_id: "m2", id: socket.requests("publish")[1]?.id });
    expect(await second).toBe("m2");
  });

  it("times out a request without a reply", async () => {
    const h = harness({ requestTimeoutMs: 3000 });
    await opened(h);
    const result = h.client.publish("c", 1);
    const settled = result.catch((e: unknown) => e);
    await h.clock.advance(3000);
    expect(await settled).toMatchObject({ code: "timeout" });
  });

  it("queues requests while reconnecting, bounded, and sends them once open", async () => {
    const h = harness({ maxQueued: 2, random: () => 0.5 });
    const socket = await opened(h);
    socket.drop();
    const a = h.client.publish("c", 1);
    const b = h.client.publish("c", 2);
    await expect(h.client.publish("c", 3)).rejects.toMatchObject({ code: "queue_full" });
    await h.clock.advance(h.clock.pendingDelays()[0] ?? 0);
    h.socket().accept();
    const sent = h.socket().requests("publish");
    expect(sent.map((f) => f.data)).toEqual([1, 2]);
    for (const [i, frame] of sent.entries()) h.socket().receive({ type: "published", message_id: `m${i}`, id: frame.id });
    expect(await Promise.all([a, b])).toEqual(["m0", "m1"]);
  });

  it("fails requests in flight when the socket is lost", async () => {
    const h = harness();
    const socket = await opened(h);
    const result = h.client.publish("c", 1);
    socket.drop();
    await expect(result).rejects.toMatchObject({ code: "disconnected" });
  });

  it("reconnects on unknown_connection", async () => {
    const h = harness();
    const socket = await opened(h);
    const result = h.client.publish("c", 1);
    socket.receive({ type: "error", code: "unknown_connection", message: "gone", id: socket.lastRequest("publish").id });
    await expect(result).rejects.toMatchObject({ code: "unknown_connection" });
    expect(h.client.state).toBe("reconnecting");
  });

  it("ignores frames of unknown type and non-JSON", async () => {
    const h = harness();
    const socket = await opened(h);
    socket.receive({ type: "from_the_future", x: 1 });
    socket.receive("not json");
    expect(h.client.state).toBe("open");
  });
});

describe("subscriptions", () => {
  it("subscribes once per channel and resubscribes after a reconnect", async () => {
    const h = harness();
    const socket = await opened(h);
    const got: unknown[] = [];
    const off1 = h.client.subscribe("c", (d) => got.push(d));
    const off2 = h.client.subscribe("c", (d) => got.push(d));
    expect(socket.requests("subscribe").length).toBe(1);
    await answerSubscribe(socket, "c", { position: { epoch: "e", offset: 4 } });
    await off1.ready;
    socket.drop();
    await h.clock.advance(h.clock.pendingDelays()[0] ?? 0);
    h.socket().accept();
    expect(h.socket().lastRequest("subscribe")).toMatchObject({ channel: "c", since: { epoch: "e", offset: 4 } });
    off1();
    off2();
    await h.clock.advance(0);
    expect(h.socket().lastRequest("unsubscribe")).toMatchObject({ channel: "c" });
  });

  it("an unsubscribe followed at once by a subscribe sends nothing (StrictMode)", async () => {
    const h = harness();
    const socket = await opened(h);
    const off = h.client.subscribe("c", () => {});
    off();
    h.client.subscribe("c", () => {});
    await h.clock.advance(10);
    expect(socket.requests("subscribe").length).toBe(1);
    expect(socket.requests("unsubscribe").length).toBe(0);
  });

  it("subscribes on a socket that opened between an unsubscribe and the subscribe that cancelled it", async () => {
    const h = harness();
    const off = h.client.subscribe("c", () => {});
    const connected = h.client.connect();
    await flush();
    off();
    h.socket().accept(); // skips "c": it is leaving
    await connected;
    expect(h.socket().requests("subscribe").length).toBe(0);
    h.client.subscribe("c", () => {});
    await h.clock.advance(10);
    expect(h.socket().requests("subscribe")).toMatchObject([{ channel: "c" }]);
    expect(h.socket().requests("unsubscribe").length).toBe(0);
  });

  it("delivers broadcasts (no channel) to broadcast listeners, deduplicated", async () => {
    const h = harness();
    const socket = await opened(h);
    const got: string[] = [];
    h.client.on("broadcast", (m) => got.push(m.id));
    socket.receive({ type: "message", id: "b1", data: 1 });
    socket.receive({ type: "message", id: "b1", data: 1 });
    expect(got).toEqual(["b1"]);
  });

  it("delivers messages addressed to the user to user listeners only, in arrival order", async () => {
    const h = harness();
    const socket = await opened(h);
    const user: ChannelMessage[] = [];
    const broadcasts: string[] = [];
    const onChannel: unknown[] = [];
    h.client.on("user", (m) => user.push(m));
    h.client.on("broadcast", (m) => broadcasts.push(m.id));
    h.client.subscribe("c", (data) => onChannel.push(data));
    // c's subscribe is in flight, which holds channel messages; a user message is not held.
    socket.receive({ type: "message", id: "u1", data: { hi: 1 }, to_user: "alice" });
    socket.receive({
      type: "batch",
      messages: [
        { id: "u2", data: 2, to_user: "alice" },
        { id: "u1", data: { hi: 1 }, to_user: "alice" }, // a duplicate delivery
      ],
    });
    socket.receive({ type: "message", id: "b1", data: 3 });
    expect(user.map((m) => m.id)).toEqual(["u1", "u2"]);
    expect(user[0]).toEqual({ id: "u1", channel: null, data: { hi: 1 }, position: null, publisher: null, toUser: "alice" });
    expect(broadcasts).toEqual(["b1"]);
    expect(onChannel).toEqual([]);
  });
});
