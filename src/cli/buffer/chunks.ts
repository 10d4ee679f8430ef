import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Most rows one write transaction of a command touches. The gateway's writes wait for the
 * lock meanwhile (its event loop blocked in the busy handler), so it is kept to tens of ms.
 */
export const CHUNK_ROWS = 5000;

/** What a long run is doing, for the line it keeps up to date on a terminal. */
export interface Shown {
  /** `deleting the messages of bridge 'b'` */
  readonly what: string;
  /** How many rows there are to do. */
  readonly of: number;
}

/**
 * Runs `step` (one write transaction of at most CHUNK_ROWS rows, returning how many it did)
 * until it does fewer, and returns the sum. Between steps it pauses as long as the step
 * took, so that writers waiting in their busy handler get the lock in between.
 *
 * A run of more than one step on a terminal shows its progress on standard error (`deleting
 * the messages of bridge 'b': 15,000 of 1,200,000 (1%)...`), as `buffer export` and `buffer
 * check` show theirs, and clears the line before it returns or throws.
 */
export async function inChunks(step: () => number, shown?: Shown): Promise<number> {
  const tty = shown !== undefined && process.stderr.isTTY === true;
  let total = 0;
  try {
    for (;;) {
      const started = performance.now();
      const done = step();
      total += done;
      if (done < CHUNK_ROWS) return total;
      if (tty) process.stderr.write(`\r\u001b[K${progressLine(shown, total)}`);
      await sleep(Math.max(10, performance.now() - started));
    }
  } finally {
    if (tty && total >= CHUNK_ROWS) process.stderr.write('\r\u001b[K');
  }
}

function progressLine({ what, of }: Shown, total: number): string {
  const percent = of === 0 ? 100 : Math.min(100, Math.floor((100 * total) / of));
  return `${what}: ${total.toLocaleString('en-US')} of ${of.toLocaleString('en-US')} (${percent}%)...`;
}
