// The client's settings with every default filled in.
import { DEFAULT_BACKOFF, type BackoffOptions } from "./backoff.js";
import type { AirwaveOptions } from "./types.js";

/** Every option that has a default, resolved; the rest are read from `AirwaveOptions` as given. */
export type ResolvedOptions = Required<
  Omit<
    AirwaveOptions,
    "getToken" | "backoff" | "WebSocket" | "lifecycle" | "debug" | "pingIntervalMs" | "httpUrl" | "fetch"
  >
> & { backoff: BackoffOptions };

export function resolveOptions(options: AirwaveOptions): ResolvedOptions {
  return {
    url: options.url,
    tokenIn: options.tokenIn ?? "subprotocol",
    backoff: { ...DEFAULT_BACKOFF, ...options.backoff },
    breakerThreshold: options.breakerThreshold ?? 20,
    breakerWindowMs: options.breakerWindowMs ?? 60_000,
    healthyAfterMs: options.healthyAfterMs ?? 5_000,
    connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
    keepAliveAfterMs: options.keepAliveAfterMs ?? options.pingIntervalMs ?? 540_000,
    pongTimeoutMs: options.pongTimeoutMs ?? 10_000,
    requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
    maxQueued: options.maxQueued ?? 100,
    gapTimeoutMs: options.gapTimeoutMs ?? 2_000,
    dedupeCapacity: options.dedupeCapacity ?? 1_000,
    wakeCheckAfterMs: options.wakeCheckAfterMs ?? 30_000,
    transport: options.transport ?? "auto",
    fallbackAfterFailures: options.fallbackAfterFailures ?? 3,
    pollMinMs: options.pollMinMs ?? 1_000,
    pollMaxMs: options.pollMaxMs ?? 4_000,
    probeIntervalMs: options.probeIntervalMs ?? 300_000,
    timers: options.timers ?? {
      setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
      clearTimeout: (handle) => globalThis.clearTimeout(handle as Parameters<typeof globalThis.clearTimeout>[0]),
    },
    now: options.now ?? (() => Date.now()),
    random: options.random ?? Math.random,
  };
}
