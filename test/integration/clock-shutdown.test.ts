// A stop's drain deadline (shutdown.drainTimeoutMs) must not follow a step of the wall clock
// while the gateway drains (NTP setting the clock of a gateway that booted without a real-time
// clock): a step forward would leave the sinks no time to finish the windows they hold, a step
// back would keep the stop waiting far past the drain timeout. The clock is stepped by replacing
// Date.now in this process, as in clock-intervals.test.ts: a real step of the clock cannot be
// made on a machine other services share.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { connectAsync } from 'mqtt';
import { map, mergeMap, tap, timer } from 'rxjs';
import { loadConfig } from '../../src/config/load.ts';
import { Gateway } from '../../src/runtime/gateway.ts';
import { componentKinds } from '../../src/runtime/registry.ts';
import { blackHole } from '../harness/black-hole.ts';
import { handlerBridge, historyRows, waitFor } from '../harness/handler-gateway.ts';
import { capturedEntries } from '../harness/log-lines.ts';
import { wallClock } from '../harness/fake-clock.ts';
import { tempDirs } from '../harness/temp.ts';

const DAY_MS = 86_400_000;
const tempDir = tempDirs('ferry-clock-shutdown-');

/**
 * A gateway in `root` with `gateway.yaml` settings `extra`, running bridge `h` whose handler
 * holds each message `holdMs` before it goes to the history sink.
 */
async function holdingGateway(root: string, extra: string, holdMs: number, seen: { count: number }) {
  writeFileSync(
    join(root, 'gateway.yaml'),
    `mqtt: {host: 127.0.0.1, port: 0, allowAnonymous: loopback}\nadmin: {enabled: false}\ndevices: []\nbridges: []\ngateway: {dataDir: data}\n${extra}`,
  );
  const config = loadConfig(join(root, 'gateway.yaml'), { kinds: componentKinds, env: {} });
  const bridge = handlerBridge((messages, tools) =>
    messages.pipe(
      tap(() => (seen.count += 1)),
      mergeMap((m) => timer(holdMs).pipe(map(() => tools.to('out', m)))),
    ),
  );
  const { logger, entries } = capturedEntries('warn');
  const gateway = new Gateway({ ...config, bridgeConfigs: [bridge] }, logger, 'test');
  await gateway.start();
  return { gateway, entries };
}

test('a stop gives the sinks their drain time though the wall clock was set a day forward while it waited for a device', { timeout: 60_000 }, async (t) => {
  const clock = wallClock(t);
  const root = tempDir();
  const seen = { count: 0 };
  // A commit at most once a second: a message that follows another at once waits in flight for it.
  const { gateway, entries } = await holdingGateway(root, 'shutdown: {drainTimeoutMs: 5000}\nbuffer: {commitDelayMs: 1000}\n', 1500, seen);
  const client = await connectAsync(`mqtt://127.0.0.1:${gateway.mqttPort}`, { clientId: 'dev-1', reconnectPeriod: 0 });
  try {
    await client.publishAsync('devices/dev-1/telemetry/t', '{"i":0}', { qos: 1 });
    await waitFor('the handler to hold the first message', () => seen.count === 1);
    client.publishAsync('devices/dev-1/telemetry/t', '{"i":1}', { qos: 1 }).catch(() => {});
    await waitFor('the second message in flight', () => gateway.status().inFlight === 1, 5000);
    const stopping = gateway.stop();
    await sleep(100);
    assert.equal(gateway.status().state, 'draining');
    assert.equal(gateway.status().inFlight, 1, 'the drain waits for the second message');
    clock.step(DAY_MS);
    await stopping;
  } finally {
    client.end(true);
    await gateway.stop();
  }
  assert.deepEqual(
    entries.filter((e) => String(e['msg']).startsWith('sinks did not finish in time')),
    [],
    'the sinks were cut short by the step of the clock',
  );
  const payloads = historyRows(root).map((row) => row.payload);
  assert.ok(payloads.includes('{"i":0}'), `the message the handler held was not written before the stop: ${JSON.stringify(payloads)}`);
});

test('a stop waits no longer than the drain timeout and the telemetry grace though the wall clock was set a day back while the sinks finished', { timeout: 60_000 }, async (t) => {
  const clock = wallClock(t);
  const hole = await blackHole();
  t.after(() => hole.close());
  const root = tempDir();
  const seen = { count: 0 };
  const drainTimeoutMs = 1000;
  // The OTLP collector hangs: the last export waits out what is left of the drain deadline, or a 1 s grace.
  const { gateway } = await holdingGateway(
    root,
    `shutdown: {drainTimeoutMs: ${drainTimeoutMs}}\ntelemetry: {endpoint: "http://${hole.address}", traces: {sampleRatio: 1}, ebpf: off}\n`,
    500,
    seen,
  );
  let took = 0;
  try {
    const client = await connectAsync(`mqtt://127.0.0.1:${gateway.mqttPort}`, { clientId: 'dev-1', reconnectPeriod: 0 });
    await client.publishAsync('devices/dev-1/telemetry/t', '{"i":0}', { qos: 1 });
    await client.endAsync();
    await waitFor('the handler to hold the message', () => seen.count === 1);
    const since = performance.now();
    const stopping = gateway.stop();
    await sleep(100);
    clock.step(-DAY_MS);
    await stopping;
    took = performance.now() - since;
  } finally {
    await gateway.stop();
  }
  // The drain timeout, then at most the 1 s grace; the exporters' own timeout is 10 s.
  assert.ok(took < drainTimeoutMs + 1000 + 1500, `stop took ${Math.round(took)} ms`);
});
