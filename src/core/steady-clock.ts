import { performance } from 'node:perf_hooks';

/** The wall clock at the monotonic clock's zero, as read when this process started. */
const ORIGIN = Date.now() - performance.now();

/**
 * Milliseconds since the epoch by the wall clock as read when this process started, advanced by
 * the monotonic clock since. What every deadline and interval within the process is measured
 * with: the embedded broker's (sessions, carried-over wills, MQTT 5 Message Expiry, commands),
 * login blocks, how long resent messages are remembered, stalled sinks, once-per-interval log
 * lines. A step of the wall clock while the gateway runs (NTP setting the clock of a gateway
 * that booted without a real-time clock, a bad time source) then neither ends them all at once
 * nor keeps them on. It reads as a date (a step aside) so that a value shown as a time, or an
 * interval starting at 0, stays right; across a restart it is the wall clock again, so nothing
 * stamped with it is to be compared with another process's.
 */
export function steadyNow(): number {
  return ORIGIN + performance.now();
}

/**
 * Whole milliseconds by the steady clock since `start` (a steadyNow() value): how a duration it
 * measured is shown (status, logs), in whole milliseconds as times by the wall clock are.
 */
export function steadyMsSince(start: number): number {
  return Math.round(steadyNow() - start);
}
