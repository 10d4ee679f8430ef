// Issue 16, item 10: readiness and logs tell the truth while the gateway refuses or upstream
// is in trouble. Runs `ferry run` with a Kafka sink pointed at a server that never answers.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { connectAsync } from 'mqtt';
import { type BlackHole, blackHole } from '../harness/black-hole.ts';
import { type RunningFerry, startFerry } from '../harness/ferry-process.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-issue16-ready-');

interface Ready {
  readonly status: string;
  readonly reason?: string;
  readonly degraded: { bridge: string; sink?: string; problem: string; detail: string }[];
}

async function readyz(gw: RunningFerry): Promise<{ code: number; body: Ready }> {
  const response = await fetch(`${gw.adminUrl}/readyz`);
  return { code: response.status, body: (await response.json()) as Ready };
}

async function eventually<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    last = await probe().catch((error: unknown) => error);
    if (last !== undefined && !(last instanceof Error)) return last as T;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(last)}`);
}

function gatewayTree(hole: BlackHole, buffer: string): string {
  const root = tempDir();
  mkdirSync(join(root, 'bridges'));
  writeFileSync(join(root, 'gateway.yaml'), 'mqtt: {allowAnonymous: loopback}\nbridges: [bridges]\nhealth: {stalledAfterMs: 1000}\nshutdown: {drainTimeoutMs: 2000}\n');
  writeFileSync(
    join(root, 'bridges/up.yaml'),
    `name: up\nfrom: {mqtt: {topics: ["devices/+/telemetry"]}}\nto: [{kafka: {brokers: "${hole.address}", topic: t, requestTimeoutMs: 30000}}]\nbuffer: ${buffer}\n`,
  );
  return join(root, 'gateway.yaml');
}

const logged = (gw: RunningFerry, pattern: RegExp) => gw.logs.filter((l) => pattern.test(String(l['msg'])));

test('a hung Kafka is reported as stalled within stalledAfterMs, long before its request timeout: logged once, degraded in /readyz (still 200) and /api/status', async () => {
  const hole = await blackHole();
  const gw = await startFerry(['--config', gatewayTree(hole, '{}'), '--data-dir', tempDir()]);
  try {
    const client = await connectAsync(gw.mqttUrl, { clientId: 'dev-1', reconnectPeriod: 0 });
    await client.publishAsync('devices/dev-1/telemetry', 'x', { qos: 1 });
    await client.endAsync();
    const ready = await eventually('the sink reported stalled', async () => {
      const r = await readyz(gw);
      return r.body.degraded.some((d) => d.problem === 'stalled') ? r : undefined;
    });
    assert.equal(ready.code, 200, 'degraded is not unready: devices are still acknowledged');
    assert.equal(ready.body.status, 'degraded');
    assert.deepEqual(
      ready.body.degraded.map((d) => [d.bridge, d.sink, d.problem]),
      [['up', 'kafka', 'stalled']],
    );
    const status = (await (await fetch(`${gw.adminUrl}/api/status`)).json()) as { health: Ready & { ready: boolean } };
    assert.equal(status.health.ready, true);
    assert.equal(status.health.degraded[0]?.problem, 'stalled');
    await sleep(2500); // two more health checks: the problem is logged once, not per check
    assert.equal(logged(gw, /^degraded: sink 'kafka' of bridge 'up' is stalled/).length, 1);
    // A drain now waits its whole timeout, and says why.
    gw.child.kill('SIGTERM');
    await gw.exited;
    assert.equal(logged(gw, /^draining waits up to the drain timeout for sinks that cannot finish now: sink 'kafka' of bridge 'up' is stalled/).length, 1);
  } finally {
    gw.child.kill('SIGKILL');
    hole.close();
  }
});

test('a bridge full under refuse makes /readyz answer 503 with the reason; the start and the end of the refusal are logged once each', async () => {
  const hole = await blackHole();
  const config = gatewayTree(hole, '{maxMessages: 3, overflow: refuse}');
  const gw = await startFerry(['--config', config, '--data-dir', tempDir()]);
  try {
    const client = await connectAsync(gw.mqttUrl, { clientId: 'dev-1', reconnectPeriod: 0 });
    for (let i = 0; i < 3; i++) await client.publishAsync('devices/dev-1/telemetry', `m${i}`, { qos: 1 });
    // The fourth is not acknowledged: the bridge is full and its Kafka never answers.
    const fourth = client.publishAsync('devices/dev-1/telemetry', 'm3', { qos: 1 });
    const refused = await eventually('readiness to fail', async () => {
      const r = await readyz(gw);
      return r.code === 503 ? r : undefined;
    });
    assert.equal(refused.body.status, 'not ready');
    assert.match(refused.body.reason ?? '', /bridge\(s\) up full under overflow: refuse/);
    // The line is written when the refusal starts, but may reach this process after the answer.
    const full = await eventually('the refusal logged', async () => {
      const lines = logged(gw, /^buffer full: up \(3\/3 messages/);
      return lines.length > 0 ? lines : undefined;
    });
    assert.equal(full.length, 1);

    // Room again (a reload raises the limit): the held message is stored and acknowledged.
    writeFileSync(
      join(config, '../bridges/up.yaml'),
      (await import('node:fs')).readFileSync(join(config, '../bridges/up.yaml'), 'utf8').replace('maxMessages: 3', 'maxMessages: 100'),
    );
    assert.equal((await fetch(`${gw.adminUrl}/api/reload`, { method: 'POST', headers: { 'content-type': 'application/json' } })).status, 200);
    await fourth;
    await client.endAsync();
    const back = await eventually('readiness back', async () => {
      const r = await readyz(gw);
      return r.code === 200 ? r : undefined;
    });
    assert.notEqual(back.body.status, 'not ready');
    const again = await eventually('the end of the refusal logged', async () => {
      const lines = logged(gw, /^buffer accepts messages again/);
      return lines.length > 0 ? lines : undefined;
    });
    assert.equal(again.length, 1);
    assert.equal(logged(gw, /^buffer full: up/).length, 1, 'the refusal was logged once over the episode');
  } finally {
    gw.child.kill('SIGKILL');
    hole.close();
  }
});
