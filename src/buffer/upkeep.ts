import type { Logger } from 'pino';
import type { Counters } from '../core/component.ts';
import type { BufferPolicy } from './config.ts';
import type { BufferStore } from './store.ts';
import { StoredAges } from './ages.ts';
import { isCorruption } from '../sqlite/open-checked.ts';
import { steadyMsSince, steadyNow } from '../core/steady-clock.ts';

/**
 * Most messages one expiry step deletes: the next step follows in the next turn of the event
 * loop, so an outage longer than maxAgeMs, whose backlog expires at once, does not stall the
 * devices' loop for the seconds deleting all of it in one transaction takes.
 */
const EXPIRE_STEP = 10_000;

/** How often usage is counted again from disk (when another process changed the buffer) and dead letters are trimmed. */
const RECOUNT_MS = 10_000;

/**
 * The buffer's own housekeeping, driven by the policies of the bridges it holds: messages
 * past a bridge's `maxAgeMs` are expired, dead letters beyond `maxDeadLetters` are trimmed,
 * and usage is counted from disk again when `ferry buffer purge` or `redrive` changed the
 * buffer from another process (so a bridge refusing for being full takes messages again).
 * Every timer is unref'd: upkeep never keeps the process alive. A step that fails (a full disk,
 * a lock held too long) is counted as `buffer.errors{reason="upkeep_failed"}` and tried at its
 * next turn; the first failure of a run is warned of and the step working again is logged, not
 * every turn between. One that finds the buffer corrupt goes to `onCorrupt` instead.
 */
export class BufferUpkeep {
  readonly #store: BufferStore;
  readonly #logger: Logger;
  readonly #counters: Counters;
  readonly #policies = new Map<string, BufferPolicy>();
  readonly #expiry = new Map<string, NodeJS.Timeout>();
  readonly #recount: NodeJS.Timeout;
  readonly #onCorrupt: (error: unknown) => void;
  /** The steps failing now, by step (and bridge), with when their run of failures began. */
  readonly #failing = new Map<string, number>();
  readonly #ages = new StoredAges();

  constructor(store: BufferStore, logger: Logger, counters: Counters, onCorrupt: (error: unknown) => void) {
    this.#store = store;
    this.#logger = logger;
    this.#counters = counters;
    this.#onCorrupt = onCorrupt;
    this.#recount = setInterval(() => {
      try {
        store.recount();
        this.#worked('recount', {}, 'counting the buffer again');
      } catch (error) {
        this.#failed('recount', error, {}, 'could not count the buffer again');
      }
      this.#trimDeadLetters();
      this.reclaim();
    }, RECOUNT_MS);
    this.#recount.unref();
  }

  /** Keeps `bridge` by `policy` from now on (replacing an earlier policy). */
  watch(bridge: string, policy: BufferPolicy): void {
    const previous = this.#policies.get(bridge);
    this.#policies.set(bridge, policy);
    this.#begin(bridge);
    if (previous?.maxAgeMs === policy.maxAgeMs && this.#expiry.has(bridge)) return;
    clearInterval(this.#expiry.get(bridge));
    this.#expiry.delete(bridge);
    const { maxAgeMs } = policy;
    if (maxAgeMs === 0) return;
    const timer = setInterval(() => this.#expire(bridge, maxAgeMs), Math.min(60_000, Math.max(100, Math.floor(maxAgeMs / 10))));
    timer.unref();
    this.#expiry.set(bridge, timer);
  }

  unwatch(bridge: string): void {
    this.#policies.delete(bridge);
    clearInterval(this.#expiry.get(bridge));
    this.#expiry.delete(bridge);
    this.#failing.delete(`expire ${bridge}`);
    this.#failing.delete(`trim ${bridge}`);
  }

  /** Gives free space back to the file system (see BufferStore.reclaimSpace); runs with the recount, public for tests. */
  reclaim(): void {
    try {
      const freed = this.#store.reclaimSpace();
      if (freed > 0) this.#logger.info({ freedBytes: freed }, `buffer file shrunk by ${(freed / 1024 / 1024).toFixed(1)} MiB of free space`);
      this.#worked('reclaim', {}, 'giving free buffer space back');
    } catch (error) {
      this.#failed('reclaim', error, {}, 'could not give free buffer space back to the file system');
    }
  }

  close(): void {
    clearInterval(this.#recount);
    for (const timer of this.#expiry.values()) clearInterval(timer);
    this.#expiry.clear();
  }

  #expire(bridge: string, maxAgeMs: number, expiredBefore = 0): void {
    try {
      this.#noteStep();
      this.#ages.begin(bridge, () => this.#store.tail(bridge));
      const removed = this.#store.expireAged(bridge, this.#ages.aged(bridge, this.#store.tail(bridge), maxAgeMs), EXPIRE_STEP);
      if (removed.messages > 0) this.#counters.count('buffer.expired', { bridge }, removed.messages);
      const expired = expiredBefore + removed.messages;
      if (removed.messages === EXPIRE_STEP && this.#policies.get(bridge)?.maxAgeMs === maxAgeMs && this.#store.isOpen) {
        setImmediate(() => this.#expire(bridge, maxAgeMs, expired)).unref();
        return;
      }
      if (expired > 0) this.#logger.warn({ bridge, expired, maxAgeMs }, 'removed messages older than maxAgeMs before they were delivered');
      this.#worked(`expire ${bridge}`, { bridge }, 'expiring old messages');
    } catch (error) {
      this.#failed(`expire ${bridge}`, error, { bridge }, 'could not expire old messages');
    }
  }

  /** Notes what the bridge's log holds when first watched: what is in it then is aged by its stamps (StoredAges). Tried again at its expiry. */
  #begin(bridge: string): void {
    try {
      this.#ages.begin(bridge, () => this.#store.tail(bridge));
    } catch {
      // Its first expiry turn reads the tail again, and reports a failure.
    }
  }

  /** Logs a step of the wall clock once: expiry measures by the monotonic clock and is not moved by it. */
  #noteStep(): void {
    const step = this.#ages.stepped();
    if (step === 0) return;
    this.#logger.warn(
      { stepMs: step },
      `the wall clock was set ${step > 0 ? 'forward' : 'back'} by ${Math.round(Math.abs(step) / 1000)} s: buffer.maxAgeMs counts the time messages spent in the buffer, which the step does not change`,
    );
  }

  #trimDeadLetters(): void {
    for (const [bridge, { maxDeadLetters }] of this.#policies) {
      try {
        const dropped = this.#store.trimDeadLetters(bridge, maxDeadLetters);
        this.#worked(`trim ${bridge}`, { bridge }, 'trimming dead letters');
        if (dropped === 0) continue;
        this.#counters.count('buffer.dead_letters.dropped', { bridge }, dropped);
        this.#logger.warn({ bridge, dropped, maxDeadLetters }, 'deleted the oldest dead letters beyond buffer.maxDeadLetters');
      } catch (error) {
        this.#failed(`trim ${bridge}`, error, { bridge }, 'could not trim dead letters');
      }
    }
  }

  #failed(step: string, error: unknown, fields: Readonly<Record<string, unknown>>, message: string): void {
    if (isCorruption(error)) {
      this.#onCorrupt(error);
      return;
    }
    this.#counters.count('buffer.errors', { reason: 'upkeep_failed' });
    if (this.#failing.has(step)) return;
    this.#failing.set(step, steadyNow());
    this.#logger.warn({ err: error, ...fields }, `${message}; trying again at each turn (logged again when it works)`);
  }

  #worked(step: string, fields: Readonly<Record<string, unknown>>, what: string): void {
    const since = this.#failing.get(step);
    if (since === undefined) return;
    this.#failing.delete(step);
    this.#logger.info({ ...fields, failedForMs: steadyMsSince(since) }, `${what} works again`);
  }
}
