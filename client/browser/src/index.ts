export {
  AirwaveClient,
  type AirwaveOptions,
  type ChannelMessage,
  type ClientStats,
  type ConnectionState,
  type Lifecycle,
  type MessageHandler,
  type RecoveryEvent,
  type SocketConstructor,
  type SocketLike,
  type Timers,
  type Unsubscribe,
} from "./client.js";
export { AirwaveError } from "./errors.js";
export { backoffDelay, CircuitBreaker, DEFAULT_BACKOFF, type BackoffOptions } from "./backoff.js";
export { RecentIds } from "./recent.js";
export type {
  ClientErrorCode,
  ClientFrame,
  ClientRequest,
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
