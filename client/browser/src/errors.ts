import type { ErrorCode, RequestId } from "./protocol.js";

/** Every failure the client reports: a server refusal (its `code`) or one of the client's own codes. */
export class AirwaveError extends Error {
  readonly code: ErrorCode;
  readonly requestId: RequestId | undefined;

  constructor(code: ErrorCode, message: string, requestId?: RequestId) {
    super(message);
    this.name = "AirwaveError";
    this.code = code;
    this.requestId = requestId;
  }
}
