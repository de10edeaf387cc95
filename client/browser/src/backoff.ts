export interface BackoffOptions {
  /** First delay's upper bound, in ms. */
  baseMs: number;
  /** No delay's upper bound exceeds this, in ms. */
  capMs: number;
  factor: number;
  /** Reconnect attempts after a loss before the client gives up. */
  maxAttempts: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 500, capMs: 30_000, factor: 2, maxAttempts: 10 };

/**
 * Full jitter: a fresh uniform draw in [0, min(cap, base * factor^attempt)) for
 * every attempt, so clients that lost the server together do not come back together.
 */
export function backoffDelay(attempt: number, options: BackoffOptions, random: () => number): number {
  const ceiling = Math.min(options.capMs, options.baseMs * Math.pow(options.factor, attempt));
  return Math.floor(random() * ceiling);
}

/** Trips after `threshold` failures within `windowMs`; a threshold of 0 turns it off. */
export class CircuitBreaker {
  private failures: number[] = [];

  constructor(
    private readonly threshold: number,
    private readonly windowMs: number,
  ) {}

  /** Records a failure at `now`; true when the breaker is now open. */
  fail(now: number): boolean {
    if (this.threshold <= 0) return false;
    this.failures.push(now);
    this.failures = this.failures.filter((at) => now - at < this.windowMs);
    return this.failures.length >= this.threshold;
  }

  reset(): void {
    this.failures = [];
  }

  get recentFailures(): number {
    return this.failures.length;
  }
}
