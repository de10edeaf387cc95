// The ordering rule on its own, without a client or a socket.
import { describe, expect, it } from "vitest";
import { ChannelOrder, type RecoveryReason } from "../src/ordering.js";
import type { MessageFrame, SubscribedFrame } from "../src/protocol.js";
import { RecentIds } from "../src/recent.js";
import { FakeClock, pos } from "./fakes.js";

const m = (id: string, offset: number | null, epoch = "e1"): MessageFrame =>
  offset === null ? { id, channel: "p", data: id } : { id, channel: "p", data: id, position: pos(offset, epoch) };

const reply = (extra: Partial<SubscribedFrame> = {}): SubscribedFrame => ({ type: "subscribed", channel: "p", ...extra });

function setup(options: { gapTimeoutMs?: number; recent?: RecentIds } = {}) {
  const clock = new FakeClock();
  const recent = options.recent ?? new RecentIds(100);
  const got: string[] = [];
  const recoveries: { recovered: boolean; reason: RecoveryReason }[] = [];
  const counts = { duplicates: 0, gaps: 0 };
  const order = new ChannelOrder(
    { recent, timers: clock, gapTimeoutMs: options.gapTimeoutMs ?? 2000 },
    {
      deliver: (message) => got.push(message.id),
      duplicate: () => (counts.duplicates += 1),
      recovery: (recovered, reason) => recoveries.push({ recovered, reason }),
      gap: () => (counts.gaps += 1),
    },
  );
  return { order, clock, recent, got, recoveries, counts };
}

/** An order that has confirmed a first subscription at `offset`. */
function at(offset: number, options: Parameters<typeof setup>[0] = {}) {
  const t = setup(options);
  expect(t.order.subscribe()).toBeNull();
  t.order.subscribed(reply({ position: pos(offset) }), null, "reconnect");
  expect(t.order.last).toEqual(pos(offset));
  return t;
}

describe("ChannelOrder", () => {
  it("delivers consecutive offsets at once and tracks the last position", () => {
    const { order, got, counts } = at(10);
    order.receive(m("a", 11));
    order.receive(m("b", 12));
    expect(got).toEqual(["a", "b"]);
    expect(order.last).toEqual(pos(12));
    expect(order.buffered).toBe(0);
    expect(counts.duplicates).toBe(0);
  });

  it("drops duplicates by id, by offset, and twice-buffered offsets", () => {
    const { order, got, counts } = at(10);
    order.receive(m("a", 11));
    order.receive(m("a", 11)); // same id
    order.receive(m("other", 11)); // offset already delivered
    order.receive(m("old", 3));
    order.receive(m("c", 13));
    order.receive(m("c2", 13)); // offset already buffered
    expect(got).toEqual(["a"]);
    expect(counts.duplicates).toBe(4);
    expect(order.buffered).toBe(1);
  });

  it("shares duplicate detection through the RecentIds it is given", () => {
    const recent = new RecentIds(100);
    recent.add("seen");
    const { order, got, counts } = at(10, { recent });
    order.receive(m("seen", 11));
    order.receive(m("new", 11));
    expect(got).toEqual(["new"]);
    expect(counts.duplicates).toBe(1);
    expect(recent.has("new")).toBe(true);
  });

  it("buffers past a gap and drains in order once it fills, cancelling the gap timer", async () => {
    const { order, clock, got, counts } = at(10);
    order.receive(m("c", 13));
    order.receive(m("b", 12));
    expect(got).toEqual([]);
    expect(order.buffered).toBe(2);
    expect(clock.pendingDelays()).toEqual([2000]);
    order.receive(m("a", 11));
    expect(got).toEqual(["a", "b", "c"]);
    expect(order.last).toEqual(pos(13));
    expect(order.buffered).toBe(0);
    expect(clock.pendingDelays()).toEqual([]);
    await clock.advance(5000);
    expect(counts.gaps).toBe(0);
  });

  it("asks for a re-fetch once a gap stays open for the gap timeout", async () => {
    const { order, clock, counts } = at(10, { gapTimeoutMs: 500 });
    order.receive(m("c", 13));
    order.receive(m("d", 14)); // one timer per gap, not per message
    expect(clock.pendingDelays()).toEqual([500]);
    await clock.advance(499);
    expect(counts.gaps).toBe(0);
    await clock.advance(1);
    expect(counts.gaps).toBe(1);
    expect(order.last).toEqual(pos(10));
  });

  it("recovered: true delivers the publications, then the buffer, once each, and moves to the reply's position", () => {
    const { order, got, recoveries, counts } = at(10);
    order.receive(m("a", 11));
    order.receive(m("d", 14));
    const since = order.subscribe();
    expect(since).toEqual(pos(11));
    expect(order.subscribing).toBe(true);
    order.subscribed(
      reply({ position: pos(15), recovered: true, publications: [m("b", 12), m("c", 13), m("d", 14), m("e", 15)] }),
      since,
      "gap",
    );
    expect(got).toEqual(["a", "b", "c", "d", "e"]);
    expect(counts.duplicates).toBe(1); // "d" again
    expect(order.last).toEqual(pos(15));
    expect(order.buffered).toBe(0);
    expect(recoveries).toEqual([{ recovered: true, reason: "gap" }]);
    expect(order.subscribing).toBe(false);
  });

  it("recovered: true never moves the position back", () => {
    const { order } = at(10);
    order.receive(m("a", 11));
    const since = order.subscribe();
    order.subscribed(reply({ position: pos(5), recovered: true }), since, "reconnect");
    expect(order.last).toEqual(pos(11));
  });

  it("recovered: false hands over the buffer in order, reports it, and restarts from the reply's position", () => {
    const { order, clock, got, recoveries } = at(10);
    order.receive(m("d", 14));
    order.receive(m("c", 13));
    const since = order.subscribe();
    order.subscribed(reply({ position: pos(20), recovered: false }), since, "reconnect");
    expect(got).toEqual(["c", "d"]);
    expect(order.last).toEqual(pos(20));
    expect(order.buffered).toBe(0);
    expect(clock.pendingDelays()).toEqual([]);
    expect(recoveries).toEqual([{ recovered: false, reason: "reconnect" }]);
    order.receive(m("n", 21));
    expect(got).toEqual(["c", "d", "n"]);
  });

  it("treats a new epoch as a reset: flushes the buffer, reports it, continues in the new epoch", () => {
    const { order, clock, got, recoveries } = at(10);
    order.receive(m("a", 11));
    order.receive(m("c", 13));
    order.receive(m("z", 1, "e2"));
    order.receive(m("z2", 2, "e2"));
    expect(got).toEqual(["a", "c", "z", "z2"]);
    expect(order.last).toEqual(pos(2, "e2"));
    expect(recoveries).toEqual([{ recovered: false, reason: "epoch" }]);
    expect(clock.pendingDelays()).toEqual([]);
  });

  it("takes the epoch a channel starts with after subscribing before its first message", () => {
    const { order, got, recoveries } = setup();
    expect(order.subscribe()).toBeNull();
    order.receive(m("a", 1)); // arrives before the reply
    order.subscribed(reply({ position: pos(0, "") }), null, "reconnect");
    order.receive(m("b", 2));
    expect(got).toEqual(["a", "b"]);
    expect(order.last).toEqual(pos(2));
    expect(recoveries).toEqual([]);
  });

  it("recovers from the not-started position without calling it an epoch change", () => {
    const { order, got, recoveries } = setup();
    order.subscribe();
    order.subscribed(reply({ position: pos(0, "") }), null, "reconnect");
    order.disconnected();
    expect(order.subscribe()).toEqual(pos(0, ""));
    order.subscribed(
      reply({ position: pos(2), recovered: true, publications: [m("a", 1), m("b", 2)] }),
      pos(0, ""),
      "reconnect",
    );
    expect(got).toEqual(["a", "b"]);
    expect(order.last).toEqual(pos(2));
    expect(recoveries).toEqual([{ recovered: true, reason: "reconnect" }]);
  });

  it("holds messages while a subscribe is in flight and judges them against its reply", () => {
    const { order, clock, got } = setup();
    expect(order.subscribe()).toBeNull();
    order.receive(m("dup", 5));
    order.receive(m("next", 6));
    order.receive(m("later", 8));
    expect(got).toEqual([]);
    expect(clock.pendingDelays()).toEqual([]); // no gap timer while waiting
    order.subscribed(reply({ position: pos(5) }), null, "reconnect");
    expect(got).toEqual(["next"]);
    expect(order.buffered).toBe(1);
    expect(clock.pendingDelays()).toEqual([2000]); // the gap left after the reply
  });

  it("releases the held messages as they are when the subscribe fails", () => {
    const { order, got } = at(10);
    order.subscribe();
    order.receive(m("a", 11));
    order.receive(m("b", 12));
    expect(got).toEqual([]);
    order.subscribeFailed();
    expect(order.subscribing).toBe(false);
    expect(got).toEqual(["a", "b"]);
  });

  it("without positions delivers in arrival order with id-only dedupe", () => {
    const { order, got, counts } = setup();
    order.subscribe();
    order.subscribed(reply(), null, "reconnect");
    expect(order.last).toBeNull();
    order.receive(m("x", null));
    order.receive(m("y", null));
    order.receive(m("x", null));
    expect(got).toEqual(["x", "y"]);
    expect(counts.duplicates).toBe(1);
    expect(order.last).toBeNull();
  });

  it("on disconnect stops waiting and drops the gap timer but keeps the buffer for the resubscribe", async () => {
    const { order, clock, counts } = at(10);
    order.receive(m("c", 13));
    order.subscribe();
    order.disconnected();
    expect(order.subscribing).toBe(false);
    expect(order.buffered).toBe(1);
    expect(clock.pendingDelays()).toEqual([]);
    await clock.advance(5000);
    expect(counts.gaps).toBe(0);
    expect(order.subscribe()).toEqual(pos(10));
  });
});
