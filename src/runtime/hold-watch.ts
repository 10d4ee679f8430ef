import type { Logger } from 'pino';
import type { Counters } from '../core/component.ts';
import { FerryError } from '../core/errors.ts';
import { type InputTracker, heldByHandler } from '../handler/input-tracker.ts';
import { steadyMsSince, steadyNow } from '../core/steady-clock.ts';

export interface HeldStatus {
  /** Inputs the handler holds or whose outputs are not confirmed yet. */
  readonly count: number;
  /** Age of the oldest of them, in ms (0 when none). */
  readonly oldestAgeMs: number;
  /** How many are held longer than maxHoldMs. */
  readonly overdue: number;
}

/**
 * Watches how long a handler bridge holds its inputs (issue 18: a message kept in a cache
 * used to stall a bridge silently). Inputs held longer than `maxHoldMs` make the bridge
 * `degraded` and get the bridge's `onHoldTimeout`: `warn` logs them (one line per check,
 * however many) and keeps them; `ack` settles them as handled; `deadLetter` moves them to the
 * dead letters. Every one is counted as `handler.held_too_long{action}`.
 */
export class HoldWatch {
  readonly #config: { readonly name: string; readonly maxHoldMs: number; readonly onHoldTimeout: 'warn' | 'ack' | 'deadLetter' };
  readonly #tracker: InputTracker;
  readonly #logger: Logger;
  readonly #counters: Counters;
  readonly #timer: NodeJS.Timeout;
  #overdue = 0;

  constructor(
    config: { readonly name: string; readonly maxHoldMs: number; readonly onHoldTimeout: 'warn' | 'ack' | 'deadLetter' },
    tracker: InputTracker,
    logger: Logger,
    counters: Counters,
  ) {
    this.#config = config;
    this.#tracker = tracker;
    this.#logger = logger;
    this.#counters = counters;
    this.#timer = setInterval(() => this.check(), Math.max(50, Math.min(1000, Math.floor(config.maxHoldMs / 4))));
    this.#timer.unref();
  }

  status(): HeldStatus {
    const oldest = this.#tracker.oldest();
    return { count: this.#tracker.open, oldestAgeMs: oldest === undefined ? 0 : steadyMsSince(oldest.since), overdue: this.#overdue };
  }

  /** Applies the policy to every input held too long (runs on a timer; public for tests). */
  check(): void {
    const { name: bridge, maxHoldMs, onHoldTimeout } = this.#config;
    const limit = steadyNow() - maxHoldMs;
    const overdue = [];
    for (const ticket of this.#tracker.tickets()) {
      if (ticket.since > limit) break;
      // One waiting on a sink is the sink's to settle (its stall is the sink's problem); one
      // a failed run left waits for the next run.
      if (heldByHandler(ticket)) overdue.push(ticket);
    }
    this.#overdue = onHoldTimeout === 'warn' ? overdue.length : 0;
    const fresh = onHoldTimeout === 'warn' ? overdue.filter((t) => !t.warned) : overdue;
    if (fresh.length === 0) return;
    this.#counters.count('handler.held_too_long', { bridge, action: onHoldTimeout }, fresh.length);
    const oldest = overdue[0];
    this.#logger.warn(
      {
        held: fresh.length,
        overdue: overdue.length,
        maxHoldMs,
        action: onHoldTimeout,
        oldestId: oldest?.delivery.envelope.id,
        oldestAgeMs: oldest === undefined ? 0 : steadyMsSince(oldest.since),
      },
      onHoldTimeout === 'warn'
        ? 'the handler holds messages longer than maxHoldMs (a cache or a window that never lets go?): they are kept; see the custom handlers guide'
        : onHoldTimeout === 'ack'
          ? 'the handler held messages longer than maxHoldMs: acknowledged them as handled (onHoldTimeout: ack)'
          : 'the handler held messages longer than maxHoldMs: moved them to the dead letters (onHoldTimeout: deadLetter)',
    );
    for (const ticket of fresh) {
      if (onHoldTimeout === 'warn') ticket.warned = true;
      else if (onHoldTimeout === 'ack') this.#tracker.ack(ticket);
      else
        this.#tracker.reject(
          ticket,
          new FerryError('MESSAGE_REJECTED', `held by the handler of bridge '${bridge}' longer than maxHoldMs (${maxHoldMs} ms)`, {
            bridge,
            topic: ticket.delivery.envelope.topic,
            retryable: false,
          }),
        );
    }
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}
