import { performance } from 'node:perf_hooks';

/** The wall clock at the monotonic clock's zero, as read when this process started. */
const ORIGIN = Date.now() - performance.now();

/**
 * Milliseconds since the epoch by the wall clock as read when this process started, advanced by
 * the monotonic clock since: the time the embedded broker stamps and checks every deadline with
 * (sessions, carried-over wills, MQTT 5 Message Expiry of queued and retained messages and of
 * commands, how long a command's answer is remembered), so that a step of the wall clock while
 * the gateway runs (NTP setting the clock of a gateway that booted without a real-time clock, a
 * bad time source) neither ends them all at once nor keeps them on. Across a restart it is the
 * wall clock again.
 */
export function steadyNow(): number {
  return ORIGIN + performance.now();
}
