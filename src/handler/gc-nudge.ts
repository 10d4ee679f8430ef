import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

let collect: (() => void) | undefined;

/**
 * V8's `gc()`: the global one when Node runs with --expose-gc, else taken once from a fresh
 * context created while the flag is on (the flag is switched off again, so no other code
 * gets a global `gc`). Only handler bridges ask for it.
 */
export function garbageCollector(): () => void {
  if (collect !== undefined) return collect;
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (typeof exposed === 'function') return (collect = exposed);
  setFlagsFromString('--expose-gc');
  try {
    collect = runInNewContext('gc') as () => void;
  } finally {
    setFlagsFromString('--no-expose-gc');
  }
  return collect;
}

export interface GcNudgeOptions {
  /** Inputs the handler may still hold; nothing is done while there are none. */
  readonly held: () => number;
  /** True while reading waits for the handler to let go of messages: collect sooner. */
  readonly starved: () => boolean;
  readonly gc?: () => void;
  /** Quiet time before a collection; 500 ms by default, 50 ms while starved. */
  readonly idleMs?: number;
}

const TICK_MS = 50;
/**
 * The tick while no input is held, when there is nothing to do: every 50 ms for good, each
 * handler bridge woke an idle gateway 20 times a second, more than the rest of it together.
 */
const IDLE_TICK_MS = 250;
const STARVED_MS = 50;
const MAX_BACKOFF = 64;
/** A collection that took t ms is followed by none for COST_RATIO * t ms: forced collections take at most ~1/COST_RATIO of the time. */
const COST_RATIO = 4;

/**
 * Acks of a handler's inputs wait for the garbage collector to find the messages the handler
 * dropped, and an idle process may not collect for a long time. This runs a full collection
 * when inputs are held and nothing was released for a while; a collection that released
 * nothing doubles the wait (a handler holding a 10 s window is left alone), and any release
 * or confirmed output brings it back. A full collection costs time in proportion to the heap,
 * so forced ones are spaced by four times what the last one took.
 */
export class GcNudge {
  readonly #options: GcNudgeOptions;
  readonly #gc: () => void;
  readonly #idleMs: number;
  #timer: NodeJS.Timeout | undefined;
  /** The period of the tick now: TICK_MS while inputs are held or things move, IDLE_TICK_MS otherwise. */
  #tickMs = TICK_MS;
  #stopped = false;
  #last = performance.now();
  #backoff = 1;
  #collections = 0;
  /** How long the last forced collection took, in ms. */
  #cost = 0;

  constructor(options: GcNudgeOptions) {
    this.#options = options;
    this.#gc = options.gc ?? garbageCollector();
    this.#idleMs = options.idleMs ?? 500;
    this.#schedule(TICK_MS);
  }

  /** Forced collections so far. */
  get collections(): number {
    return this.#collections;
  }

  /** Something was released or confirmed: wait the base time again. */
  progress(): void {
    this.#last = performance.now();
    this.#backoff = 1;
    // Inputs are moving: back to the short tick at once, not at the next idle one.
    if (this.#tickMs !== TICK_MS && !this.#stopped) {
      clearTimeout(this.#timer);
      this.#schedule(TICK_MS);
    }
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
  }

  #schedule(ms: number): void {
    this.#tickMs = ms;
    this.#timer = setTimeout(() => this.#tick(), ms);
    this.#timer.unref();
  }

  #tick(): void {
    if (this.#stopped) return;
    if (this.#options.held() === 0) {
      this.#backoff = 1;
      this.#schedule(IDLE_TICK_MS);
      return;
    }
    this.#schedule(TICK_MS);
    const now = performance.now();
    const wait = Math.max((this.#options.starved() ? STARVED_MS : this.#idleMs) * this.#backoff, this.#cost * COST_RATIO);
    if (now - this.#last < wait) return;
    // Doubled now; the releases this collection finds (reported after it) reset it.
    this.#backoff = Math.min(this.#backoff * 2, MAX_BACKOFF);
    this.#collections += 1;
    this.#gc();
    this.#last = performance.now();
    this.#cost = this.#last - now;
  }
}
