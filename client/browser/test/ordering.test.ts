import { describe, expect, it } from "vitest";
import type { RecoveryEvent } from "../src/index.js";
import { answerSubscribe, harness, msg, opened, pos, type Harness } from "./fakes.js";
import type { FakeSocket } from "./fakes.js";

async function subscribed(h: Harness, at: number | null) {
  const socket = await opened(h);
  const got: string[] = [];
  const recoveries: RecoveryEvent[] = [];
  h.client.on("recovery", (e) => recoveries.push(e));
  const off = h.client.subscribe("p", (_data, m) => got.push(m.id));
  await answerSubscribe(socket, "p", at === null ? {} : { position: pos(at) });
  await off.ready;
  return { socket, got, recoveries };
}

function positions(socket: FakeSocket) {
  return socket.requests("subscribe").map((f) => f.since ?? null);
}

describe("per-channel ordering", () => {
  it("delivers in position order, buffering past a gap until it fills", async () => {
    const h = harness();
    const { socket, got } = await subscribed(h, 10);
    socket.receive(msg("a", "p", 11));
    socket.receive(msg("c", "p", 13));
    socket.receive(msg("d", "p", 14));
    expect(got).toEqual(["a"]);
    socket.receive(msg("b", "p", 12));
    expect(got).toEqual(["a", "b", "c", "d"]);
    expect(h.client.stats().channels.p?.position).toEqual(pos(14));
    expect(h.clock.pendingDelays().length).toBeGreaterThan(0); // ping/healthy timers only
  });

  it("drops duplicates by offset and by id", async () => {
    const h = harness();
    const { socket, got } = await subscribed(h, 10);
    socket.receive(msg("a", "p", 11));
    socket.receive(msg("a", "p", 11));
    socket.receive(msg("old", "p", 9));
    socket.receive({ type: "batch", messages: [msg("b", "p", 12), msg("b", "p", 12)] });
    expect(got).toEqual(["a", "b"]);
    expect(h.client.stats().duplicatesDropped).toBe(3);
  });

  it("handles batch frames exactly like single messages, in order", async () => {
    const h = harness();
    const { socket, got } = await subscribed(h, 0);
    const batch = [3, 1, 2].map((n) => {
      const { type: _t, ...rest } = msg(`m${n}`, "p", n);
      return rest;
    });
    socket.receive({ type: "batch", messages: batch });
    expect(got).toEqual(["m1", "m2", "m3"]);
  });

  it("re-fetches an unfilled gap with since = last position after the gap timeout", async () => {
    const h = harness({ gapTimeoutMs: 2000 });
    const { socket, got, recoveries } = await subscribed(h, 10);
    socket.receive(msg("a", "p", 11));
    socket.receive(msg("d", "p", 14));
    await h.clock.advance(1999);
    expect(socket.requests("subscribe").length).toBe(1);
    await h.clock.advance(1);
    expect(positions(socket)).toEqual([null, pos(11)]);
    // A message arriving while the re-fetch is in flight waits for its reply.
    socket.receive(msg("e", "p", 15));
    await answerSubscribe(socket, "p", {
      position: pos(14),
      recovered: true,
      // 14 is the buffered "d": the same message again, delivered once.
      publications: [12, 13, 14].map((n) => ({ id: n === 14 ? "d" : `x${n}`, channel: "p", data: n, position: pos(n) })),
    });
    expect(got).toEqual(["a", "x12", "x13", "d", "e"]);
    expect(recoveries).toEqual([{ channel: "p", recovered: true, reason: "gap" }]);
  });

  it("takes a recovery's messages as they come: an offset missing between them was never written", async () => {
    const h = harness({ gapTimeoutMs: 2000 });
    const { socket, got, recoveries } = await subscribed(h, 10);
    socket.receive(msg("a", "p", 11));
    // 12 and 13 were taken by a try stopped before it wrote them; its messages came later.
    socket.receive(msg("d", "p", 14));
    await h.clock.advance(2000);
    expect(positions(socket)).toEqual([null, pos(11)]);
    await answerSubscribe(socket, "p", {
      position: pos(15),
      recovered: true,
      publications: [14, 15].map((n) => ({ id: n === 14 ? "d" : `x${n}`, channel: "p", data: n, position: pos(n) })),
    });
    expect(got).toEqual(["a", "d", "x15"]);
    expect(recoveries).toEqual([{ channel: "p", recovered: true, reason: "gap" }]);
    socket.receive(msg("f", "p", 16));
    expect(got).toEqual(["a", "d", "x15", "f"]);
    expect(h.client.stats().channels.p?.buffered).toBe(0);
  });

  it("on recovered: false delivers the buffered messages in order, reports it, and goes on from position", async () => {
    const h = harness({ gapTimeoutMs: 2000 });
    const { socket, got, recoveries } = await subscribed(h, 10);
    socket.receive(msg("d", "p", 14));
    socket.receive(msg("c", "p", 13));
    await h.clock.advance(2000);
    await answerSubscribe(socket, "p", { position: pos(20), recovered: false });
    expect(got).toEqual(["c", "d"]);
    expect(recoveries).toEqual([{ channel: "p", recovered: false, reason: "gap" }]);
    socket.receive(msg("n", "p", 21));
    expect(got).toEqual(["c", "d", "n"]);
  });

  it("handles messages that arrive before the subscribed reply against its position", async () => {
    const h = harness();
    const socket = await opened(h);
    const got: string[] = [];
    h.client.subscribe("p", (_d, m) => got.push(m.id));
    socket.receive(msg("early-dup", "p", 5));
    socket.receive(msg("next", "p", 6));
    expect(got).toEqual([]);
    await answerSubscribe(socket, "p", { position: pos(5) });
    expect(got).toEqual(["next"]);
  });

  it("treats a new epoch as a reset: reports it and continues from the new position", async () => {
    const h = harness();
    const { socket, got, recoveries } = await subscribed(h, 10);
    socket.receive(msg("a", "p", 11));
    socket.receive(msg("z", "p", 1, null, "e2"));
    socket.receive(msg("z2", "p", 2, null, "e2"));
    expect(got).toEqual(["a", "z", "z2"]);
    expect(recoveries).toEqual([{ channel: "p", recovered: false, reason: "epoch" }]);
  });

  it("after a reconnect resubscribes with since and delivers the recovered messages once, in order", async () => {
    const h = harness();
    const { socket, got, recoveries } = await subscribed(h, 10);
    socket.receive(msg("a", "p", 11));
    socket.drop();
    await h.clock.advance(h.clock.pendingDelays()[0] ?? 0);
    const next = h.socket();
    next.accept();
    expect(next.lastRequest("subscribe")).toMatchObject({ channel: "p", since: pos(11) });
    next.receive(msg("c", "p", 13)); // live, before the reply
    await answerSubscribe(next, "p", {
      position: pos(13),
      recovered: true,
      publications: [
        { id: "a", channel: "p", data: 0, position: pos(11) },
        { id: "b", channel: "p", data: 0, position: pos(12) },
        { id: "c", channel: "p", data: 0, position: pos(13) },
      ],
    });
    expect(got).toEqual(["a", "b", "c"]);
    expect(recoveries).toEqual([{ channel: "p", recovered: true, reason: "reconnect" }]);
  });

  it("without positions (older servers) delivers in arrival order with id-only dedupe", async () => {
    const h = harness();
    const { socket, got } = await subscribed(h, null);
    socket.receive(msg("x", "p", null));
    socket.receive(msg("y", "p", null));
    socket.receive(msg("x", "p", null));
    expect(got).toEqual(["x", "y"]);
    socket.drop();
    await h.clock.advance(h.clock.pendingDelays()[0] ?? 0);
    h.socket().accept();
    expect(h.socket().lastRequest("subscribe").since).toBeUndefined();
  });
});
