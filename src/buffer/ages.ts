import { performance } from 'node:perf_hooks';
import { steadyNow } from '../core/steady-clock.ts';

/** What of a bridge's log is older than its maxAgeMs now (see BufferLog.expireAged). */
export interface AgedBounds {
  /** Every message through this seq has been in the buffer that long, by the monotonic clock. */
  readonly heldThrough: number;
  /** The messages through this seq came from an earlier run: aged by their stamp... */
  readonly earlierThrough: number;
  /** ...when created before this (ms since the epoch, on the clock as read at the start)... */
  readonly createdBefore: number;
  /** ...and not before this (CLOCK_SET_SINCE): an older stamp was made by a clock not set yet. */
  readonly createdSince: number;
}

/** The log's tail seq when the monotonic clock read `at`. */
interface Mark {
  readonly at: number;
  readonly through: number;
}

interface BridgeAges {
  /** The log's tail when the bridge was first watched: what is at or below it was stored by an earlier run. */
  readonly earlierThrough: number;
  /** Marks not yet maxAgeMs old, oldest first. */
  readonly marks: Mark[];
  /** The marks found maxAgeMs old, as one: through the highest seq they cover, at the latest of them. */
  held: Mark | undefined;
}

/**
 * A stamp before this (2020-01-01) was made by a clock not set yet (a gateway that booted in 1970
 * or 2000): a message from an earlier run so stamped is aged from this run's start, by the
 * monotonic clock, rather than expired at once.
 */
export const CLOCK_SET_SINCE = Date.UTC(2020, 0, 1);

/** A change of the wall clock against the monotonic one larger than this is a step (NTP slews far less). */
export const CLOCK_STEP_MS = 10_000;

/**
 * How long the messages of each bridge have been in the buffer, measured so that a step of the
 * wall clock (NTP setting the clock of a gateway that booted without a real-time clock, or a bad
 * time source setting it back) expires nothing by itself. A message stored by this process is
 * as old as the monotonic clock says since it was stored: at each turn of the expiry the log's
 * tail is marked, and what a mark covers is expired maxAgeMs after the mark (so up to a turn
 * late, never early). A message from an earlier run is aged by its stamp against the wall clock
 * as read when this process started, advanced by the monotonic clock since (or, stamped before
 * CLOCK_SET_SINCE, as one stored at the start).
 */
export class StoredAges {
  readonly #bridges = new Map<string, BridgeAges>();
  /** The wall clock's offset from the monotonic one at the last look (see stepped). */
  #offset = Date.now() - performance.now();

  /** Notes `bridge`'s log as it is when first watched (`tail`, read only then); later calls do nothing. */
  begin(bridge: string, tail: () => number): void {
    if (!this.#bridges.has(bridge)) this.#bridges.set(bridge, { earlierThrough: tail(), marks: [], held: undefined });
  }

  /** Marks the log's `tail` now, and says what of it is older than `maxAgeMs`. Call `begin` first. */
  aged(bridge: string, tail: number, maxAgeMs: number): AgedBounds {
    const ages = this.#bridges.get(bridge);
    if (ages === undefined) throw new Error(`buffer: the ages of bridge '${bridge}' are asked before it was watched`);
    const now = steadyNow();
    const { marks } = ages;
    if (marks.at(-1)?.through !== tail) marks.push({ at: now, through: tail });
    // Found that old under a shorter maxAgeMs (the bridge reloaded with a longer one, while a
    // step of the expiry was still to come): not that old under this one yet.
    if (ages.held !== undefined && ages.held.at > now - maxAgeMs) {
      marks.unshift(ages.held);
      ages.held = undefined;
    }
    while (marks.length > 0 && (marks[0] as Mark).at <= now - maxAgeMs) {
      const mark = marks.shift() as Mark;
      ages.held = { at: mark.at, through: Math.max(ages.held?.through ?? 0, mark.through) };
    }
    return { heldThrough: ages.held?.through ?? 0, earlierThrough: ages.earlierThrough, createdBefore: now - maxAgeMs, createdSince: CLOCK_SET_SINCE };
  }

  /** How far the wall clock stepped since the last call (ms, negative: set back), when by more than CLOCK_STEP_MS; else 0. */
  stepped(): number {
    const offset = Date.now() - performance.now();
    const step = offset - this.#offset;
    this.#offset = offset;
    return Math.abs(step) > CLOCK_STEP_MS ? step : 0;
  }
}
