// The keep-alive: a ping once the client has sent nothing for a while, and the
// signs that a socket may have gone stale unnoticed (a long sleep, a page shown
// again after long).
import type { ResolvedOptions } from "./options.js";

type KeepAliveOptions = Pick<
  ResolvedOptions,
  "timers" | "now" | "keepAliveAfterMs" | "pongTimeoutMs" | "wakeCheckAfterMs"
>;

export class KeepAlive {
  /** Fires after `keepAliveAfterMs` without a frame sent on the open socket. */
  private timer: unknown = null;
  private dueAt = 0;
  private hiddenAt: number | null = null;

  constructor(
    private readonly options: KeepAliveOptions,
    private readonly debug: (message: string) => void,
    /** Pings now, or, while waiting to reconnect, tries at once. */
    private readonly check: () => void,
  ) {}

  /** Whether a quiet period is being timed. */
  get running(): boolean {
    return this.timer !== null;
  }

  /**
   * Restarts the quiet period after which a keep-alive ping goes: called on
   * the socket's opening and after every frame the client sends on it. API
   * Gateway closes a connection idle for 10 minutes, and any frame resets
   * that. Only frames the client sends count here, not those it receives:
   * whether server-to-client frames reset API Gateway's idle timer is not
   * documented. The 9-minute default leaves a minute for hidden tabs, whose
   * timers browsers throttle (Chrome: to once a minute), so a late keep-alive
   * still goes out within the 10 minutes.
   */
  restart(): void {
    const { timers, now, keepAliveAfterMs } = this.options;
    if (this.timer !== null) timers.clearTimeout(this.timer);
    this.dueAt = now() + keepAliveAfterMs;
    this.timer = timers.setTimeout(() => {
      this.timer = null;
      // Timers stop while a machine sleeps; a wall clock far past the due time says it did.
      if (now() - this.dueAt > keepAliveAfterMs) this.debug("woke from a long sleep");
      this.check();
    }, keepAliveAfterMs);
  }

  /** The socket ended: nothing to keep alive until the next one opens. */
  stop(): void {
    if (this.timer !== null) this.options.timers.clearTimeout(this.timer);
    this.timer = null;
  }

  /** The page was hidden, or shown again. */
  visibilityChanged(hidden: boolean): void {
    const { now, wakeCheckAfterMs, pongTimeoutMs } = this.options;
    if (hidden) {
      // The keep-alive goes on while hidden (its timer runs, if throttled):
      // pausing it would let API Gateway's 10-minute idle timeout close a
      // quiet socket.
      this.hiddenAt = now();
      return;
    }
    const hiddenFor = this.hiddenAt === null ? 0 : now() - this.hiddenAt;
    this.hiddenAt = null;
    // Hidden long, or a keep-alive overdue (the wall clock jumped: the machine slept): the socket may be stale.
    if (hiddenFor >= wakeCheckAfterMs || now() > this.dueAt + pongTimeoutMs) this.check();
  }
}
