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

/**
 * Replaces Date.now, until the test ends, by the wall clock plus an offset that `step` moves
 * (negative: back): a step of the wall clock in this process, for code that reads it through
 * Date.now only (a real step cannot be made on a machine other services share). Install it
 * before the code under test is made, so that code that keeps the function (rather than
 * calling Date.now each time) sees the step as it would a real one.
 */
export function wallClock(t: { after(fn: () => void): void }): { step(ms: number): void } {
  const realNow = Date.now;
  let offset = 0;
  Date.now = () => realNow() + offset;
  t.after(() => {
    Date.now = realNow;
  });
  return {
    step: (ms) => {
      offset += ms;
    },
  };
}
