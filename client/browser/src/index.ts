export { AirwaveClient } from "./client.js";
export type {
  AirwaveOptions,
  ChannelMessage,
  ClientStats,
  ClosingEvent,
  ConnectionState,
  Lifecycle,
  MessageHandler,
  RecoveryEvent,
  SocketConstructor,
  SocketLike,
  Timers,
  Transport,
  Unsubscribe,
} from "./types.js";
export { PollingSocket, type FetchLike } from "./polling.js";
export { AirwaveError } from "./errors.js";
export { backoffDelay, CircuitBreaker, DEFAULT_BACKOFF, type BackoffOptions } from "./backoff.js";
export { RecentIds } from "./recent.js";
export { SUBPROTOCOL } from "./handshake.js";
export type {
  ClientErrorCode,
  ClientFrame,
  ClientRequest,
  ClosingFrame,
  ErrorCode,
  GatewayErrorFrame,
  MessageFrame,
  Position,
  ReplyFrame,
  RequestId,
  ServerErrorCode,
  ServerFrame,
  Stats,
} from "./protocol.js";
