import { performance } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';

/** The mark bin/tiering.js leaves on globalThis while it holds TurboFan back. */
const TURBOFAN_DEFERRED = Symbol.for('ferry.turbofan-deferred');

/** How often the event loop's use is looked at while TurboFan is held back, ms. */
const CHECK_MS = 100;

/**
 * The share of a check's period the event loop must have been busy for the gateway to count as
 * under load: 10 ms of 100. An idle gateway of the embedded default is busy about 0.5 ms of
 * each 100 (5-7 ms every 2 s as it samples its status); a steady 100 QoS 1 messages a second to
 * Kafka kept it busy 20-30 ms of each 100 while TurboFan was held back.
 */
const BUSY_SHARE = 0.1;

/**
 * Busy periods in a row that make load. A one-off piece of work is not (the eBPF collector's
 * start right after the gateway is ready, a scrape of /metrics), even when a busy machine
 * stretches it across several periods: with three, a start of the gateway on a CI machine
 * running many tests at once turned TurboFan on while idle.
 */
const BUSY_PERIODS = 5;

const marks = globalThis as unknown as Record<symbol, unknown>;

/** True while bin/ferry.js holds TurboFan back for the start (see bin/tiering.js). */
export function optimizingCompilerDeferred(): boolean {
  return marks[TURBOFAN_DEFERRED] === true;
}

/**
 * Turns V8's optimizing compiler (TurboFan) on again where bin/ferry.js held it back. Nothing
 * to do when the process was not started that way (a program embedding the gateway, a flag of
 * its own on node's command line). True when it did.
 */
function resumeOptimizingCompiler(): boolean {
  if (!optimizingCompilerDeferred()) return false;
  marks[TURBOFAN_DEFERRED] = false;
  setFlagsFromString('--turbofan');
  return true;
}

export interface TieringWatch {
  /** Starts the next period afresh: for work of the gateway's own that is not load (the start's garbage collection). */
  rebase(): void;
  stop(): void;
}

export interface TieringWatchOptions {
  readonly checkMs?: number;
  /** How often the loop is looked at while it idles (a period of less than a tenth of the busy mark), ms. */
  readonly idleCheckMs?: number;
}

/**
 * Turns TurboFan on again once the gateway has work that pays for it: the event loop busy for a
 * tenth of five periods of 100 ms in a row, so TurboFan is back within about 0.5 s of a load's
 * start (1 s from an idle spell). Until then an idle or lightly loaded gateway runs on V8's
 * interpreter and baseline compiler, and does not hold the optimizing compiler's memory (about
 * 10 MB: its code in node's binary and its working memory). Left to V8 alone, the few calls an
 * idle gateway makes (its status sampling every 2 s) made one of Node's functions hot enough
 * within a minute. While the loop idles (busy less than 1 ms of a period) it is looked at every
 * 500 ms instead of every 100: ten wake-ups a second of an idle gateway were this watch's.
 * Undefined when TurboFan is not held back.
 */
export function resumeOptimizingCompilerUnderLoad(options: TieringWatchOptions = {}): TieringWatch | undefined {
  if (!optimizingCompilerDeferred()) return undefined;
  const checkMs = options.checkMs ?? CHECK_MS;
  const idleCheckMs = options.idleCheckMs ?? checkMs * 5;
  // Busy milliseconds, not a share of the time since the last look: a period cut short by a
  // rebase is not load for being short.
  const busyMs = BUSY_SHARE * checkMs;
  let last = performance.eventLoopUtilization();
  let busyPeriods = 0;
  let timer: NodeJS.Timeout | undefined;
  /** Whether the period that just ended was an idle one (idleCheckMs long). */
  let long = false;
  const look = () => {
    const now = performance.eventLoopUtilization();
    const { active } = performance.eventLoopUtilization(now, last);
    last = now;
    // A long period's work is no busy period of its own: the short periods that follow tell.
    busyPeriods = active < busyMs || long ? 0 : busyPeriods + 1;
    if (busyPeriods >= BUSY_PERIODS) {
      timer = undefined;
      resumeOptimizingCompiler();
      return;
    }
    long = active < busyMs / 10;
    timer = setTimeout(look, long ? idleCheckMs : checkMs).unref();
  };
  timer = setTimeout(look, checkMs).unref();
  return {
    rebase: () => {
      last = performance.eventLoopUtilization();
      busyPeriods = 0;
    },
    stop: () => {
      clearTimeout(timer);
      timer = undefined;
    },
  };
}
