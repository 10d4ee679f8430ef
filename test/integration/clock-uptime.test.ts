// The uptime the gateway shows (/api/status `uptimeSeconds`, the status page, the
// `ferry_uptime_seconds` gauge) is an interval it measures while it runs: a step of the wall
// clock (NTP setting the clock of a gateway that booted without a real-time clock, a bad time
// source setting it back) must not move it. The clock is stepped by replacing Date.now in this
// process, as in clock-intervals.test.ts: a real step cannot be made on a machine other
// services share.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { wallClock } from '../harness/fake-clock.ts';
import { handlerGateway } from '../harness/handler-gateway.ts';
import { tempDirs } from '../harness/temp.ts';

const DAY_MS = 86_400_000;
const tempDir = tempDirs('ferry-clock-uptime-');

for (const [step, what] of [
  [-DAY_MS, 'back'],
  [DAY_MS, 'forward'],
] as const) {
  test(`the uptime does not follow the wall clock set a day ${what}`, async (t) => {
    const clock = wallClock(t);
    const gateway = await handlerGateway(tempDir(), []);
    t.after(() => gateway.stop());
    await sleep(1100);
    clock.step(step);
    const { uptimeSeconds } = gateway.status();
    assert.ok(uptimeSeconds >= 1 && uptimeSeconds < 60, `uptime ${uptimeSeconds} s`);
    const gauge = Number(/^ferry_uptime_seconds (\S+)$/m.exec(gateway.metrics())?.[1]);
    assert.ok(gauge >= 1 && gauge < 60, `ferry_uptime_seconds ${gauge}`);
  });
}
