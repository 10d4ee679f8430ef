import { garbageCollector } from '../handler/gc-nudge.ts';

/** How long after the gateway is ready: the bridges have started and the first devices are in. */
const SETTLE_MS = 1000;

/**
 * Gives back what starting left behind, once: a full collection of V8's heap of the kind it
 * runs when memory is short, which also shrinks the young generation that the start's
 * allocations (the config's parse and validation, the modules' initialisation) had grown. An
 * idle gateway of the embedded default then holds about 11 MB less (85 against 96 MB measured:
 * docs/benchmarks.md, "Startup and idle memory"), for about 50 ms of the event loop a second
 * after it is ready. The heap grows again as the load needs. `ferry run` does this; a program
 * that embeds the gateway keeps its own memory policy. `afterCollect` runs once it is done.
 */
export function collectStartupGarbage(afterCollect?: () => void): void {
  setTimeout(() => {
    const gc = garbageCollector() as (options?: { type: 'major'; execution: 'sync'; flavor: 'last-resort' }) => void;
    gc({ type: 'major', execution: 'sync', flavor: 'last-resort' });
    afterCollect?.();
  }, SETTLE_MS).unref();
}
