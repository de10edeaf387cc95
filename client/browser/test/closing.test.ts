// The server's `closing` frame: why it is about to close the connection, and
// what the client does about it.
import { describe, expect, it } from "vitest";
import type { ClosingEvent } from "../src/index.js";
import { answerSubscribe, flush, harness, opened, pos } from "./fakes.js";

const closing = (code: string) => ({ type: "closing", code, message: `closing: ${code}` });

describe("closing: token_expired", () => {
  it("reconnects at once with a fresh token and resubscribes with since", async () => {
    let issued = 0;
    const h = harness({ getToken: () => `tok${++issued}`, random: () => 0.999 });
    const socket = await opened(h);
    h.client.subscribe("c", () => {});
    await answerSubscribe(socket, "c", { position: pos(7) });
    await h.clock.advance(5000); // the socket proved healthy
    socket.receive(closing("token_expired"));
    expect(h.client.state).toBe("reconnecting");
    expect(socket.closedWith).not.toBeNull();
    expect(h.clock.pendingDelays()).toEqual([0]);
    await h.clock.advance(0);
    expect(h.sockets.length).toBe(2);
    expect(h.socket().protocols).toEqual(["airwave.v1", "tok2"]);
    h.socket().accept();
    expect(h.socket().lastRequest("subscribe")).toMatchObject({ channel: "c", since: pos(7) });
    expect(h.client.state).toBe("open");
  });

  it("retries at once only once: expiring again before a healthy socket backs off", async () => {
    const h = harness({ random: () => 0.999, backoff: { baseMs: 100 } });
    const socket = await opened(h);
    await h.clock.advance(5000);
    socket.receive(closing("token_expired"));
    await h.clock.advance(0);
    h.socket().accept();
    h.socket().receive(closing("token_expired")); // at once: the fresh token did not help
    expect(h.client.state).toBe("reconnecting");
    expect(h.clock.pendingDelays()).toEqual([99]);
    await h.clock.advance(0);
    expect(h.sockets.length).toBe(2);
  });

  it("treats an error reply token_expired the same way", async () => {
    const h = harness();
    const socket = await opened(h);
    await h.clock.advance(5000);
    const result = h.client.publish("c", 1);
    socket.receive({ type: "error", code: "token_expired", message: "expired", id: socket.lastRequest("publish").id });
    await expect(result).rejects.toMatchObject({ code: "token_expired" });
    expect(h.client.state).toBe("reconnecting");
    expect(h.clock.pendingDelays()).toEqual([0]);
  });
});

describe("closing: evicted", () => {
  it("stays down as evicted, fails what waits, and reconnects only when asked", async () => {
    const h = harness();
    const events: ClosingEvent[] = [];
    h.client.on("closing", (event) => events.push(event));
    const socket = await opened(h);
    h.client.subscribe("c", () => {});
    await answerSubscribe(socket, "c", { position: pos(3) });
    const pending = h.client.publish("c", 1);
    socket.receive(closing("evicted"));
    expect(events).toEqual([{ code: "evicted", message: "closing: evicted" }]);
    expect(h.client.state).toBe("evicted");
    expect(h.states.at(-1)).toBe("evicted");
    await expect(pending).rejects.toMatchObject({ code: "evicted" });
    await expect(h.client.publish("c", 2)).rejects.toMatchObject({ code: "not_connected" });
    // Neither time, nor the server's close, nor the network coming back reconnects it.
    socket.drop(1000);
    h.lifecycle.goOnline();
    await h.clock.advance(600_000);
    expect(h.sockets.length).toBe(1);
    expect(h.client.state).toBe("evicted");

    const again = h.client.reconnect();
    await flush();
    h.socket().accept();
    await again;
    expect(h.sockets.length).toBe(2);
    expect(h.client.state).toBe("open");
    expect(h.socket().lastRequest("subscribe")).toMatchObject({ channel: "c", since: pos(3) });
  });

  it("connect() after an eviction opens a socket too", async () => {
    const h = harness();
    const socket = await opened(h);
    socket.receive(closing("evicted"));
    const again = h.client.connect();
    await flush();
    h.socket().accept();
    await again;
    expect(h.sockets.length).toBe(2);
    expect(h.client.state).toBe("open");
  });
});

describe("closing: a code this client does not know", () => {
  it("reports it and reconnects with the backoff", async () => {
    const h = harness({ random: () => 0.999, backoff: { baseMs: 100 } });
    const events: ClosingEvent[] = [];
    h.client.on("closing", (event) => events.push(event));
    const socket = await opened(h);
    socket.receive(closing("maintenance"));
    expect(events).toEqual([{ code: "maintenance", message: "closing: maintenance" }]);
    expect(h.client.state).toBe("reconnecting");
    expect(h.clock.pendingDelays()).toEqual([99]);
    await h.clock.advance(99);
    expect(h.sockets.length).toBe(2);
  });
});
