// What a connection attempt asks for: the URL and the offered subprotocols,
// with the token in one or the other.
import type { AirwaveOptions } from "./types.js";

/**
 * The protocol version this client speaks, offered as a subprotocol, which the
 * server selects; a token offered beside it stays out of URLs and logs. A server
 * that does not speak it refuses the handshake (HTTP 426), which a browser
 * reports as close code 1006, like every refused handshake.
 */
export const SUBPROTOCOL = "airwave.v1";

export interface Handshake {
  url: string;
  protocols: string[];
}

/** The handshake for `token` (none: the version alone), the token where `tokenIn` says. */
export function handshake(
  url: string,
  token: string | null | undefined,
  tokenIn: NonNullable<AirwaveOptions["tokenIn"]>,
): Handshake {
  const protocols = [SUBPROTOCOL];
  if (!token) return { url, protocols };
  if (tokenIn === "query") {
    return { url: url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token), protocols };
  }
  protocols.push(token);
  return { url, protocols };
}
