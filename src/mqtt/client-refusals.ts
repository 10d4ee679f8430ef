import type { Client } from 'aedes';
import type { Counters } from '../core/component.ts';
import type { Refused, RefusalLog } from './refusal-log.ts';
import { steadyNow } from '../core/steady-clock.ts';

export interface RefusalLimits {
  /** Refusals within `windowMs` after which a client is disconnected. */
  readonly disconnectAfter: number;
  readonly windowMs: number;
}

export const DEFAULT_REFUSAL_LIMITS: RefusalLimits = { disconnectAfter: 50, windowMs: 10_000 };

/**
 * Refusals of what a connected client asked for (a subscription outside its ACL, a publish
 * to a forbidden topic, and the per-client caps on its state): each is logged through the
 * broker's RefusalLog (first line, then a summary per interval), and a client refused
 * `disconnectAfter` times within `windowMs` is disconnected, counted as
 * `mqtt.connections.closed_refusals` and logged once (issue 16: one client sent refused
 * subscriptions for as long as it liked). The caller counts the refusal itself in its metric.
 */
export class ClientRefusals {
  readonly #log: RefusalLog;
  readonly #counters: Counters;
  readonly #limits: RefusalLimits;
  /** Times of each client's recent refusals, oldest first, at most disconnectAfter of them. */
  readonly #recent = new WeakMap<Client, number[]>();
  readonly #disconnected = new WeakSet<Client>();

  constructor(log: RefusalLog, counters: Counters, limits: RefusalLimits = DEFAULT_REFUSAL_LIMITS) {
    this.#log = log;
    this.#counters = counters;
    this.#limits = limits;
  }

  /** The log the refusals go to (for refusals of parties that are not a connected client). */
  get log(): RefusalLog {
    return this.#log;
  }

  /** Logs a refusal of `client` and disconnects it once it had too many; `who` defaults to its client id. */
  refused(client: Client, refusal: Omit<Refused, 'who'> & { readonly who?: Refused['who'] }, now = steadyNow()): void {
    this.#log.refused({ ...refusal, who: refusal.who ?? { clientId: client.id } });
    this.counted(client, refusal.reason, now);
  }

  /** Counts a refusal logged elsewhere (the broker state's limits) towards disconnecting `client`. */
  counted(client: Client, reason: string, now = steadyNow()): void {
    if (this.#disconnected.has(client)) return;
    const { disconnectAfter, windowMs } = this.#limits;
    const times = (this.#recent.get(client) ?? []).filter((t) => t > now - windowMs);
    times.push(now);
    if (times.length < disconnectAfter) {
      this.#recent.set(client, times);
      return;
    }
    this.#recent.delete(client);
    this.#disconnected.add(client);
    this.#counters.count('mqtt.connections.closed_refusals');
    this.#log.refused({
      who: { clientId: client.id },
      reason: 'too_many_refusals',
      message: `client disconnected after ${disconnectAfter} refusals within ${windowMs} ms`,
      detail: { lastReason: reason },
    });
    // After the hook that refused has called back: aedes still holds the packet being handled.
    setImmediate(() => client.close());
  }
}
