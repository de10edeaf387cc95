// The frames this client sends, and samples of what it reads, checked against
// protocol/schema.json, which is generated from the Rust protocol crate: a
// server change that the TypeScript side does not follow fails here.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import Ajv2020 from "ajv/dist/2020.js";
import { describe, expect, it } from "vitest";
import type { ClosingFrame, MessageFrame, ServerErrorCode, Stats } from "../src/index.js";
import { harness, opened } from "./fakes.js";

const schemaPath = fileURLToPath(new URL("../../../protocol/schema.json", import.meta.url));
const schema = JSON.parse(readFileSync(schemaPath, "utf8")) as {
  client: Record<string, unknown>;
  server: Record<string, unknown> & { $defs: Record<string, { properties?: Record<string, unknown> }> };
};
// The schema names formats such as uint64 that only say how Rust stores a number.
const ajv = new Ajv2020({ strict: false, validateFormats: false });
const validateClient = ajv.compile(schema.client);
const validateServer = ajv.compile(schema.server);

function expectValid(validate: typeof validateClient, frame: unknown): void {
  const ok = validate(frame);
  expect(ok, `${JSON.stringify(frame)}: ${ajv.errorsText(validate.errors)}`).toBe(true);
}

describe("protocol/schema.json", () => {
  it("accepts every frame the client sends", async () => {
    const h = harness();
    const socket = await opened(h);
    h.client.subscribe("prices", () => {});
    void h.client.publish("prices", { price: 1 }).catch(() => {});
    void h.client.publish(null, "to everyone").catch(() => {});
    void h.client.serverStats().catch(() => {});
    void h.client.ping().catch(() => {});
    h.client.unsubscribe("prices");
    await h.clock.advance(0);
    socket.drop();
    await h.clock.advance(h.clock.pendingDelays()[0] ?? 0);
    h.client.subscribe("with-since", () => {});
    const next = h.socket();
    next.accept();
    const frames = [...socket.sent, ...next.sent];
    expect(new Set(frames.map((f) => f.action))).toEqual(new Set(["subscribe", "publish", "stats", "ping", "unsubscribe"]));
    for (const frame of frames) expectValid(validateClient, frame);
    // A subscribe with `since`, as sent after a reconnect.
    expectValid(validateClient, { action: "subscribe", channel: "c", since: { epoch: "e1", offset: 41 }, id: 2 });
  });

  it("rejects a malformed client frame (the check itself works)", () => {
    expect(validateClient({ action: "subscribe", id: 1 })).toBe(false);
    expect(validateClient({ action: "subscribe", channel: "c", since: { epoch: 1 } })).toBe(false);
  });

  it("describes the server frames the client reads", () => {
    const samples: unknown[] = [
      { type: "message", id: "m", channel: "prices", data: { price: 1 }, position: { epoch: "e1", offset: 45 } },
      { type: "message", id: "m", data: "to everyone" },
      { type: "message", id: "m", data: "to one user", to_user: "alice" },
      { type: "batch", messages: [{ id: "a", channel: "c", data: 1, position: { epoch: "e", offset: 1 } }] },
      { type: "pong" }, // API Gateway's own answer (a mock integration): no id
      { type: "pong", id: 1 },
      {
        type: "subscribed",
        channel: "prices",
        id: 2,
        position: { epoch: "e1", offset: 44 },
        recovered: true,
        publications: [{ id: "x", channel: "prices", data: 1, position: { epoch: "e1", offset: 42 } }],
      },
      { type: "unsubscribed", channel: "c", id: 3 },
      { type: "published", message_id: "uuid", id: 4 },
      {
        type: "stats",
        id: 5,
        open_connections: 1,
        distinct_users: 0,
        max_connections: 0,
        max_connections_per_user: 0,
        max_connections_per_ip: 0,
        free_slots: null,
        connect_attempts_per_ip: 0,
        window_seconds: 60,
        throttled_attempts_in_window: 0,
        as_of: 1700000000,
      },
      { type: "error", code: "invalid_channel", message: "bad", id: 6 },
      { type: "error", code: "rate_limited", message: "slow down", id: 7 },
      { type: "closing", code: "token_expired", message: "the token expired" },
      { type: "closing", code: "evicted", message: "too many connections" },
      { type: "closing", code: "a_future_code", message: "new" },
      { type: "error", code: "a_future_code", message: "new" },
      { message: "Internal server error", connectionId: "abc", requestId: "def" },
    ];
    for (const sample of samples) expectValid(validateServer, sample);
    // A closing frame without its reason fits no frame (the check itself works).
    expect(validateServer({ type: "closing", code: "evicted" })).toBe(false);
  });

  it("has exactly the fields the client's types read", () => {
    // Records over every key of the types: the compiler makes these lists complete.
    const message: Record<keyof MessageFrame, true> = {
      id: true,
      channel: true,
      data: true,
      position: true,
      publisher: true,
      to_user: true,
    };
    const stats: Record<keyof Stats, true> = {
      open_connections: true,
      distinct_users: true,
      max_connections: true,
      max_connections_per_user: true,
      max_connections_per_ip: true,
      free_slots: true,
      connect_attempts_per_ip: true,
      window_seconds: true,
      throttled_attempts_in_window: true,
      as_of: true,
    };
    const closing: Record<Exclude<keyof ClosingFrame, "type">, true> = { code: true, message: true };
    const fields = (def: string) => Object.keys(schema.server.$defs[def]?.properties ?? {}).sort();
    expect(fields("MessageFrame")).toEqual(Object.keys(message).sort());
    expect(fields("message")).toEqual(Object.keys(message).sort());
    expect(fields("Stats")).toEqual(Object.keys(stats).sort());
    expect(fields("closing")).toEqual(Object.keys(closing).sort());
  });

  it("names every error code the client's types know", () => {
    const server = schema.server as { $defs: { ErrorCode: { anyOf: { const?: string }[] } } };
    const codes = server.$defs.ErrorCode.anyOf.flatMap((entry) => (entry.const ? [entry.const] : []));
    const known: string[] = [
      "invalid_json",
      "unknown_action",
      "invalid_request",
      "invalid_channel",
      "channel_limit",
      "unknown_connection",
      "publish_forbidden",
      "message_too_large",
      "stats_forbidden",
      "channel_forbidden",
      "token_expired",
      "rate_limited",
      "evicted",
    ] satisfies ServerErrorCode[];
    expect(codes.sort()).toEqual(known.sort());
  });
});
