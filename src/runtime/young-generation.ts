import { PerformanceObserver } from 'node:perf_hooks';
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';

/**
 * The largest semi-space `ferry run` lets V8's young generation grow to, MiB. V8's own limit on
 * 64-bit is 16: under load the young generation grew to two semi-spaces of 16 MiB, mostly empty,
 * which was the largest part of the peak RSS that was not live data.
 */
const SEMI_SPACE_CAP_MIB = 8;

/** V8's factor of growth of the young generation (--semi-space-growth-factor's default). */
const GROWTH_FACTOR = 2;

/** Node's command line sizing the young generation: Ferry then leaves it alone. */
const SIZED = /^--(max|min)[-_]semi[-_]space[-_]size|^--semi[-_]space[-_]growth[-_]factor/;

export interface YoungGenerationCap {
  stop(): void;
}

/**
 * Keeps V8's young generation at most `capMiB` a semi-space, as node's --max-semi-space-size
 * would, for a process that was not started with it: V8 sizes the young generation only from
 * its command line, but reads its growth factor each time it grows it. So after each collection
 * the factor is set to 1 (no growth) once a semi-space has reached the cap, and back to V8's 2
 * once it has shrunk below it (V8 shrinks it when the process idles). A collection can still
 * grow it once more before the observer runs (two in one synchronous stretch of work), which the
 * next shrink undoes. Undefined when node's command line or NODE_OPTIONS sizes it.
 */
export function capYoungGeneration(capMiB = SEMI_SPACE_CAP_MIB, execArgv = process.execArgv, env = process.env): YoungGenerationCap | undefined {
  const given = [...execArgv, ...(env.NODE_OPTIONS ?? '').split(/\s+/)];
  if (given.some((arg) => SIZED.test(arg))) return undefined;
  const cap = capMiB * 1024 * 1024;
  let holding = false;
  const observer = new PerformanceObserver(() => {
    const semiSpace = newSpaceBytes() / 2;
    if (!holding && semiSpace >= cap) {
      setFlagsFromString('--semi-space-growth-factor=1');
      holding = true;
    } else if (holding && semiSpace < cap) {
      setFlagsFromString(`--semi-space-growth-factor=${GROWTH_FACTOR}`);
      holding = false;
    }
  });
  observer.observe({ entryTypes: ['gc'] });
  return {
    stop: () => {
      observer.disconnect();
      if (holding) setFlagsFromString(`--semi-space-growth-factor=${GROWTH_FACTOR}`);
    },
  };
}

/** The young generation's capacity: both semi-spaces. */
export function newSpaceBytes(): number {
  return getHeapSpaceStatistics().find((space) => space.space_name === 'new_space')?.space_size ?? 0;
}
