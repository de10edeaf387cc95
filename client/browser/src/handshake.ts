// What a connection attempt asks for: the URL and the offered subprotocols,
// with the token in one or the other.
import type { AirwaveOptions } from "./types.js";

/** The subprotocol the server selects; a token offered beside it stays out of URLs and logs. */
const SUBPROTOCOL = "airwave";

export interface Handshake {
  url: string;
  protocols: string[];
}

/** The handshake for `token` (none: `airwave` alone), the token where `tokenIn` says. */
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
