import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const LIBFAKETIME = '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1';

export interface FakeClock {
  /** The environment a `ferry run` (startFerry's env) needs to run on this clock. */
  readonly env: Readonly<Record<string, string>>;
  /** Sets the process's wall clock this far from the real one (libfaketime's offset: `+365d`, `-1d`, `+0`). */
  set(offset: string): void;
}

/**
 * A wall clock a child process runs on (libfaketime, from Debian's faketime), moved by rewriting
 * a file in `dir` while it runs, as NTP steps a gateway's clock; its monotonic clock is left
 * alone (Node's timers and performance.now()), and the machine's own clock is never touched.
 */
export function fakeClock(dir: string): FakeClock {
  assert.ok(existsSync(LIBFAKETIME), `${LIBFAKETIME} is missing: apt-get install faketime`);
  const file = join(dir, 'faketime');
  const set = (offset: string) => writeFileSync(file, `${offset}\n`);
  set('+0');
  return {
    env: { LD_PRELOAD: LIBFAKETIME, FAKETIME_TIMESTAMP_FILE: file, FAKETIME_CACHE_DURATION: '1', DONT_FAKE_MONOTONIC: '1' },
    set,
  };
}
