import { setTimeout as sleep } from 'node:timers/promises';

export interface EventuallyOptions {
  /** How long to keep trying; 10 s unless given. */
  readonly timeoutMs?: number;
  /** Pause between two tries; 20 ms unless given. */
  readonly intervalMs?: number;
}

/**
 * Runs `assertion` (sync or async) until it stops throwing, and returns what it returned.
 * When `timeoutMs` passes first, throws the last assertion error, its message prefixed with
 * how long it was retried, so a failure reads like the assertion that failed and not like a
 * timeout. An attempt still running at the deadline is not waited for: a hung check fails
 * too.
 *
 * Use it for anything that happens asynchronously instead of a fixed sleep. A check that
 * something did *not* happen needs a positive marker first: send something that must arrive
 * after it (same publisher, same partition), wait for that with `eventually`, then assert.
 */
export async function eventually<T>(assertion: () => T | Promise<T>, options: EventuallyOptions = {}): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const intervalMs = options.intervalMs ?? 20;
  const started = performance.now();
  const deadline = started + timeoutMs;
  let attempts = 0;
  for (;;) {
    attempts += 1;
    let timer: NodeJS.Timeout | undefined;
    try {
      const result = assertion();
      // A sync check runs with no timer of this helper alive (a check may count open handles).
      if (!isThenable(result)) return result;
      const attempt = Promise.resolve(result);
      // Swallowed when the attempt loses the race: its rejection would otherwise be unhandled.
      attempt.catch(() => {});
      return await Promise.race([
        attempt,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new StillRunning()), Math.max(deadline - performance.now(), 0));
        }),
      ]);
    } catch (error) {
      if (performance.now() + intervalMs >= deadline || error instanceof StillRunning) {
        throw giveUp(error, Math.round(performance.now() - started), attempts);
      }
    } finally {
      clearTimeout(timer);
    }
    await sleep(intervalMs);
  }
}

function isThenable<T>(value: T | Promise<T>): value is Promise<T> {
  return typeof (value as { then?: unknown } | null)?.then === 'function';
}

class StillRunning extends Error {
  constructor() {
    super('the last attempt was still running');
  }
}

function giveUp(error: unknown, waitedMs: number, attempts: number): Error {
  const prefix = `still failing after ${waitedMs} ms (${attempts} attempts)`;
  if (error instanceof Error) {
    // Keeps the assertion's class, actual/expected and stack; only the message says how long.
    // The stack is read before the message changes: V8 may format it lazily, from the new message.
    const original = error.message;
    const stack = error.stack;
    error.message = `${prefix}: ${original}`;
    if (stack !== undefined) error.stack = stack.replace(original, error.message);
    return error;
  }
  return new Error(`${prefix}: ${String(error)}`);
}

/**
 * Polls `probe` until it returns a value other than `undefined` and returns that value; after
 * the timeout, fails naming `what` (and the last error, when the probe threw).
 */
export function until<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, options: EventuallyOptions = {}): Promise<T> {
  return eventually(async () => {
    const value = await probe();
    if (value === undefined) throw new Error(`still waiting for ${what}`);
    return value;
  }, options);
}
