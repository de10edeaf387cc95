import { describe, expect, it } from "vitest";
import { backoffDelay, CircuitBreaker, DEFAULT_BACKOFF, RecentIds } from "../src/index.js";
import { harness } from "./fakes.js";

const options = { baseMs: 500, capMs: 30_000, factor: 2, maxAttempts: 10 };

describe("backoffDelay", () => {
  it("grows by the factor and is capped", () => {
    const ceilings = Array.from({ length: 10 }, (_, attempt) => backoffDelay(attempt, options, () => 0.999999) + 1);
    expect(ceilings.slice(0, 7)).toEqual([500, 1000, 2000, 4000, 8000, 16000, 30000]);
    expect(Math.max(...ceilings)).toBe(30_000);
  });

  it("draws uniformly below the ceiling (full jitter)", () => {
    expect(backoffDelay(3, options, () => 0)).toBe(0);
    expect(backoffDelay(3, options, () => 0.25)).toBe(1000);
    expect(backoffDelay(3, options, () => 0.5)).toBe(2000);
  });

  it("has the documented defaults", () => {
    expect(DEFAULT_BACKOFF).toEqual({ baseMs: 500, capMs: 30_000, factor: 2, maxAttempts: 10 });
  });
});

describe("reconnect schedule", () => {
  it("draws a fresh jitter for every attempt, grows, and stops after maxAttempts", async () => {
    const draws = [0.9, 0.1, 0.7, 0.3, 0.95, 0.05];
    let draw = 0;
    const h = harness({
      random: () => draws[draw++ % draws.length] ?? 0.5,
      backoff: { baseMs: 100, capMs: 1000, factor: 2, maxAttempts: 6 },
      breakerThreshold: 0,
    });
    void h.client.connect().catch(() => {});
    const delays: number[] = [];
    for (let i = 0; i < 20 && h.client.state !== "gave_up"; i++) {
      await h.clock.advance(0);
      const socket = h.socket();
      const before = h.clock.time;
      socket.refuse();
      // A getter TypeScript narrowed above; read it afresh.
      if ((h.client.state as string) === "gave_up") break;
      const pending = h.clock.pendingDelays();
      // Only the retry timer is pending (the refused socket's timers were cleared).
      expect(pending.length).toBe(1);
      await h.clock.advance(pending[0] ?? 0);
      delays.push(h.clock.time - before);
    }
    // Ceilings 100, 200, 400, 800, 1000, 1000 with the scripted draws.
    expect(delays).toEqual([90, 20, 280, 240, 950, 50]);
    expect(h.sockets.length).toBe(7); // the first attempt plus 6 retries
    expect(h.client.state).toBe("gave_up");
    expect(h.clock.pendingDelays()).toEqual([]);
  });
});

describe("CircuitBreaker", () => {
  it("trips after N failures within the window only", () => {
    const breaker = new CircuitBreaker(3, 1000);
    expect(breaker.fail(0)).toBe(false);
    expect(breaker.fail(100)).toBe(false);
    expect(breaker.fail(1500)).toBe(false); // the first two are outside the window now
    expect(breaker.fail(1600)).toBe(false);
    expect(breaker.fail(1700)).toBe(true);
  });

  it("is off with a threshold of 0", () => {
    const breaker = new CircuitBreaker(0, 1000);
    for (let i = 0; i < 100; i++) expect(breaker.fail(i)).toBe(false);
  });

  it("makes the client give up before maxAttempts when failures come fast", async () => {
    const h = harness({ random: () => 0, breakerThreshold: 4, breakerWindowMs: 60_000 });
    void h.client.connect().catch(() => {});
    for (let i = 0; i < 10 && h.client.state !== "gave_up"; i++) {
      await h.clock.advance(0);
      h.socket().refuse();
    }
    expect(h.client.state).toBe("gave_up");
    expect(h.sockets.length).toBe(4);
  });
});

describe("RecentIds", () => {
  it("remembers a bounded number of ids, forgetting the oldest", () => {
    const recent = new RecentIds(3);
    expect(recent.add("a")).toBe(true);
    expect(recent.add("a")).toBe(false);
    recent.add("b");
    recent.add("c");
    recent.add("d");
    expect(recent.size).toBe(3);
    expect(recent.has("a")).toBe(false);
    expect(recent.has("d")).toBe(true);
  });
});
