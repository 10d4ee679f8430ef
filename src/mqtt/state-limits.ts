import type { Client } from 'aedes';
import type { Logger } from 'pino';
import type { Counters } from '../core/component.ts';
import { clientInternals } from './aedes-internals.ts';
import { steadyNow } from '../core/steady-clock.ts';

/** Bounds on what clients can make the broker keep (`mqtt.limits`, see config/mqtt-schema.ts). */
export interface BrokerStateLimits {
  readonly subscriptionsPerClient: number;
  readonly retainedPerClient: number;
  readonly retainedBytesPerClient: number;
  readonly retainedMessages: number;
  readonly retainedBytes: number;
  readonly queuedPerSession: number;
  readonly queuedBytesPerSession: number;
  /** MQTT 3.1.1: seconds a persistent session is kept after its client disconnected. */
  readonly sessionExpirySeconds: number;
}

/** The name of the limit that refused (the `limit` label of `mqtt.state.refused`). */
export type StateLimit = Exclude<keyof BrokerStateLimits, 'sessionExpirySeconds'>;

/** MQTT 5 reason code 0x97, Quota exceeded (SUBACK, PUBACK). */
export const QUOTA_EXCEEDED = 0x97;

/** A refusal is logged once per client and limit in this interval; the next line says how many were not logged. */
const LOG_INTERVAL_MS = 60_000;
/** Clients remembered by the log's rate limit; past it the memory starts again (a line more, not a line per refusal). */
const LOGGED_KEYS = 10_000;

/**
 * Where every refusal of a limit on broker state is counted (each time) and logged (once per
 * client and limit per minute, with the count of those not logged): one place, so that a
 * refusal logger for the whole gateway can take it over.
 */
export class StateRefusals {
  readonly #logger: Logger;
  readonly #counters: Counters;
  readonly #logged = new Map<string, { until: number; quiet: number }>();

  readonly #onRefused: ((clientId: string, limit: StateLimit) => void) | undefined;

  /** `onRefused` hears of every refusal (the broker counts a connected client's towards disconnecting it). */
  constructor(logger: Logger, counters: Counters, onRefused?: (clientId: string, limit: StateLimit) => void) {
    this.#logger = logger;
    this.#counters = counters;
    this.#onRefused = onRefused;
  }

  /** `what` says what was refused and what happened to it, for the log line. */
  refused(clientId: string, limit: StateLimit, value: number, what: string, now = steadyNow()): void {
    this.#counters.count('mqtt.state.refused', { limit });
    this.#onRefused?.(clientId, limit);
    const key = `${limit}\u0000${clientId}`;
    const seen = this.#logged.get(key);
    if (seen !== undefined && seen.until > now) {
      seen.quiet += 1;
      return;
    }
    if (this.#logged.size >= LOGGED_KEYS) this.#logged.clear();
    this.#logged.set(key, { until: now + LOG_INTERVAL_MS, quiet: 0 });
    this.#logger.warn(
      { clientId, limit, value, notLogged: seen?.quiet ?? 0 },
      `broker state limit mqtt.limits.${limit} (${value}) reached: ${what}${seen !== undefined && seen.quiet > 0 ? ` (${seen.quiet} more refusals of this client since the last line)` : ''}`,
    );
  }
}

/**
 * The per-client cap on subscriptions (aedes' authorizeSubscribe): a client holds its
 * subscriptions in aedes' `client.subscriptions`, plus those authorized in a SUBSCRIBE whose
 * storing has not finished (a persistent session's are stored before they are added).
 */
export class SubscriptionCap {
  readonly #max: number;
  readonly #pending = new WeakMap<Client, Set<string>>();

  constructor(max: number) {
    this.#max = max;
  }

  /** True when the client may hold `filter` too (one it holds already is always allowed: a re-subscribe). */
  allows(client: Client, filter: string): boolean {
    const held = clientInternals(client).subscriptions;
    if (held[filter] !== undefined) return true;
    let pending = this.#pending.get(client);
    if (pending?.has(filter)) return true;
    let count = Object.keys(held).length;
    if (pending !== undefined) for (const topic of pending) if (held[topic] === undefined) count += 1;
    if (count >= this.#max) return false;
    if (pending === undefined) this.#pending.set(client, (pending = new Set()));
    pending.add(filter);
    return true;
  }

  /** aedes' `subscribe` event (after the SUBACK): the packet's subscriptions are held now. */
  subscribed(client: Client): void {
    this.#pending.delete(client);
  }
}

/** Payload bytes of a message as aedes has it (Buffer or string). */
export function payloadLength(payload: unknown): number {
  if (typeof payload === 'string') return Buffer.byteLength(payload);
  if (payload instanceof Uint8Array) return payload.byteLength;
  return 0;
}
