import type { ErrorCode } from "./protocol.js";

/**
 * What the client does when the server ends a connection on purpose (a
 * `closing` frame, or an error reply with the same code):
 * - `stop`: stay down until the application reconnects. An evicted tab that
 *   came back by itself would evict the user's newer one, and so on forever.
 * - `renew`: reconnect at once with a fresh token; an expiring token is
 *   routine, not a sign of a failing server.
 * - `reconnect`: a server-side close like any other, with the backoff.
 */
export type ClosingAction = "stop" | "renew" | "reconnect";

export function closingAction(code: ErrorCode): ClosingAction {
  if (code === "evicted") return "stop";
  if (code === "token_expired") return "renew";
  return "reconnect";
}

/** Error reply codes that end the connection (others fail only their request). */
export function endsConnection(code: ErrorCode): boolean {
  return code === "evicted" || code === "token_expired";
}
