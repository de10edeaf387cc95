// The wire protocol, as described by protocol/schema.json (generated from the
// Rust `airwave-protocol` crate). test/schema.test.ts validates the frames this
// client builds, and sample server frames, against that schema, so these types
// cannot drift from the server unnoticed.

/** Where a message stands in its channel; offsets of different epochs do not compare. The empty epoch (offset 0) is a channel nobody has published to yet. */
export interface Position {
  epoch: string;
  offset: number;
}

/** A client's name for a request, repeated in the reply. */
export type RequestId = string | number;

/** Codes the server sends today; newer servers may send others, kept as strings. */
export type ServerErrorCode =
  | "invalid_json"
  | "unknown_action"
  | "invalid_request"
  | "invalid_channel"
  | "channel_limit"
  | "unknown_connection"
  | "publish_forbidden"
  | "message_too_large"
  | "stats_forbidden"
  | "channel_forbidden"
  /** The token expired: the server refuses the connection's requests and closes it. */
  | "token_expired"
  /** Publishing faster than the connection's allowance; the app may retry later. */
  | "rate_limited"
  /** The user's oldest connection, closed to make room under their connection cap. */
  | "evicted";

/** Codes this client raises itself, for failures that never reached a server reply. */
export type ClientErrorCode =
  | "internal_error"
  | "timeout"
  | "disconnected"
  | "not_connected"
  | "queue_full"
  | "closed"
  | "gave_up"
  | "handler_failed";

// `string & {}` keeps editor completion for the known codes while allowing any string.
export type ErrorCode = ServerErrorCode | ClientErrorCode | (string & {});

export type ClientRequest =
  /** Sent without an `id`: its pong carries none. */
  | { action: "ping" }
  | { action: "subscribe"; channel: string; since?: Position }
  | { action: "unsubscribe"; channel: string }
  | { action: "publish"; channel?: string; data: unknown }
  | { action: "stats" };

export type ClientFrame = ClientRequest & { id?: RequestId };

/** A message as pushed (`type: "message"`), inside a batch, or in `publications`. */
export interface MessageFrame {
  id: string;
  channel?: string | null;
  data?: unknown;
  position?: Position | null;
  /** The publisher's user id, when a client with one published it. */
  publisher?: string | null;
  /** Set when a producer addressed the message to one user: then no channel and no position. */
  to_user?: string | null;
}

export interface Stats {
  open_connections: number;
  distinct_users: number;
  max_connections: number;
  max_connections_per_user: number;
  max_connections_per_ip: number;
  free_slots?: number | null;
  connect_attempts_per_ip: number;
  window_seconds: number;
  throttled_attempts_in_window: number;
  /** When the server counted these (epoch seconds); it counts at most once per interval. Absent from older servers. */
  as_of?: number;
}

interface Replied {
  id?: RequestId | null;
}

/**
 * The answer to `ping`, given by API Gateway itself (the route's mock
 * integration): `{"type": "pong"}`, without the request's `id`, which a mock
 * cannot echo. So a pong answers whichever ping is outstanding; the client
 * keeps at most one per socket. Older servers echoed an `id`.
 */
export interface PongFrame extends Replied {
  type: "pong";
}
export interface SubscribedFrame extends Replied {
  type: "subscribed";
  channel: string;
  position?: Position | null;
  recovered?: boolean | null;
  publications?: MessageFrame[];
}
export interface UnsubscribedFrame extends Replied {
  type: "unsubscribed";
  channel: string;
}
export interface PublishedFrame extends Replied {
  type: "published";
  /** Absent from servers older than request ids, which put the message id in `id`. */
  message_id?: string;
}
export type StatsFrame = Replied & Stats & { type: "stats" };
export interface ErrorFrame extends Replied {
  type: "error";
  code: ErrorCode;
  message: string;
}

export type ReplyFrame = PongFrame | SubscribedFrame | UnsubscribedFrame | PublishedFrame | StatsFrame | ErrorFrame;

/** The server is about to close the connection, and says why (`token_expired`, `evicted`, or a newer code). */
export interface ClosingFrame {
  type: "closing";
  code: ErrorCode;
  message: string;
}

/** API Gateway's own answer when a route's function failed; it has no `type` and no request id. */
export interface GatewayErrorFrame {
  message: string;
  connectionId?: string | null;
  requestId?: string | null;
}

export type ServerFrame =
  | (MessageFrame & { type: "message" })
  | { type: "batch"; messages: MessageFrame[] }
  | ReplyFrame
  | ClosingFrame
  | GatewayErrorFrame;

/** The reply type each request's answer carries. */
export const REPLY_TYPE = {
  ping: "pong",
  subscribe: "subscribed",
  unsubscribe: "unsubscribed",
  publish: "published",
  stats: "stats",
} as const satisfies Record<ClientRequest["action"], ReplyFrame["type"]>;

export type ReplyFor<A extends ClientRequest["action"]> = Extract<ReplyFrame, { type: (typeof REPLY_TYPE)[A] }>;

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

export function isPosition(value: unknown): value is Position {
  return isObject(value) && typeof value.epoch === "string" && typeof value.offset === "number";
}

export function isMessageFrame(value: unknown): value is MessageFrame {
  return isObject(value) && typeof value.id === "string";
}

/** Parses one text frame; `undefined` for anything that is not a JSON object. */
export function parseFrame(text: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(text);
    return isObject(value) ? value : undefined;
  } catch {
    return undefined;
  }
}
