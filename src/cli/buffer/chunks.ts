import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Most rows one write transaction of a command touches. The gateway's writes wait for the
 * lock meanwhile (its event loop blocked in the busy handler), so it is kept to tens of ms.
 */
export const CHUNK_ROWS = 5000;

/**
 * Runs `step` (one write transaction of at most CHUNK_ROWS rows, returning how many it did)
 * until it does fewer, and returns the sum. Between steps it pauses as long as the step
 * took, so that writers waiting in their busy handler get the lock in between.
 */
export async function inChunks(step: () => number): Promise<number> {
  let total = 0;
  for (;;) {
    const started = performance.now();
    const done = step();
    total += done;
    if (done < CHUNK_ROWS) return total;
    await sleep(Math.max(10, performance.now() - started));
  }
}
