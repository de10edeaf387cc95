// Messages as handlers and listeners get them, whichever frame carried them.
import { isPosition, type MessageFrame } from "./protocol.js";
import type { ChannelMessage } from "./types.js";

/** The application's view of a message frame; only a channel message has a position. */
export function toChannelMessage(frame: MessageFrame, channel: string | null): ChannelMessage {
  return {
    id: frame.id,
    channel,
    data: frame.data ?? null,
    position: channel !== null && isPosition(frame.position) ? frame.position : null,
    publisher: typeof frame.publisher === "string" ? frame.publisher : null,
    toUser: typeof frame.to_user === "string" ? frame.to_user : null,
  };
}
