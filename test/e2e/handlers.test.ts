import assert from 'node:assert/strict';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { Redis } from 'ioredis';
import { REPO_ROOT, ferry, startFerry } from '../harness/ferry-process.ts';
import { type KcatMessage, kcatConsume } from '../harness/kcat.ts';
import { mosquittoPub } from '../harness/mosquitto.ts';
import { randomName, requireService } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';
import { until } from '../harness/eventually.ts';

const tempDir = tempDirs('ferry-e2e-handlers-');

interface Rollup {
  readonly device: string;
  readonly count: number;
  readonly avg: number;
  readonly min: number;
  readonly max: number;
}

interface Status {
  readonly bridges: { name: string; state: string }[];
  readonly buffer: { bridges: { bridge: string; sinks: { sink: string; pending: number }[] }[] };
}

async function status(adminUrl: string): Promise<Status> {
  return (await (await fetch(`${adminUrl}/api/status`)).json()) as Status;
}

const waitFor = <T>(what: string, probe: () => Promise<T | undefined>): Promise<T> => until(what, probe, { timeoutMs: 60_000, intervalMs: 250 });

/** Every buffered message of every bridge is past every cursor. */
async function drained(adminUrl: string): Promise<true | undefined> {
  const { buffer } = await status(adminUrl);
  return buffer.bridges.every((b) => b.sinks.every((s) => s.pending === 0)) ? true : undefined;
}

async function pub(url: string, topic: string, payload: string, clientId: string): Promise<void> {
  const result = await mosquittoPub(url, topic, payload, { clientId });
  assert.equal(result.code, 0, result.stderr);
}

async function historyRows(dataDir: string, bridge: string): Promise<{ topic: string; payload: string; clientId: string }[]> {
  const out = await ferry(['history', '--data-dir', dataDir, '--bridge', bridge, '--json', '-n', '100']);
  assert.equal(out.code, 0, out.stderr);
  return out.stdout
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as { topic: string; payload: string; clientId: string });
}

test('the example TypeScript bridges with Kafka: per-device rollups reach Kafka, severe alarms go enriched to the alerts topic, the rest to the history; every buffer drains', async () => {
  const brokers = await requireService('kafka');
  const redisUrl = await requireService('redis');
  // The alarm example reads each device's site from Redis.
  const siteKeys = randomName('ferry:test:e2e-sites:');
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  await redis.set(`${siteKeys}sensor-1`, 'plant-north/line-1');
  const rollups = randomName('ferry-e2e-rollups-');
  const alerts = randomName('ferry-e2e-alerts-');
  const dataDir = tempDir();
  const gw = await startFerry(['--config', 'config/gateway.yaml', '--data-dir', dataDir], {
    KAFKA_BROKERS: brokers.join(','),
    FERRY_KAFKA_TOPIC: randomName('ferry-e2e-telemetry-'),
    FERRY_ROLLUPS_TOPIC: rollups,
    FERRY_ALERTS_TOPIC: alerts,
    FERRY_ROLLUP_WINDOW_MS: '1000',
    REDIS_URL: redisUrl,
    FERRY_SITE_KEY_PREFIX: siteKeys,
  });
  try {
    assert.deepEqual((await status(gw.adminUrl)).bridges.map((b) => [b.name, b.state]).sort(), [
      ['alarm-alerts', 'running'],
      ['commands-to-devices', 'running'],
      ['telemetry-history', 'running'],
      ['telemetry-to-kafka', 'running'],
      ['temperature-rollups', 'running'],
    ]);
    for (const celsius of [20, 22, 24]) await pub(gw.mqttUrl, 'devices/sensor-1/telemetry/climate', JSON.stringify({ celsius }), 'sensor-1');
    for (const celsius of [30.5, 31.5]) await pub(gw.mqttUrl, 'devices/pump-7/telemetry/climate', JSON.stringify({ celsius }), 'pump-7');
    // Not part of a rollup: no temperature, not JSON.
    await pub(gw.mqttUrl, 'devices/pump-7/telemetry/climate', '{"humidity":40}', 'pump-7');
    await pub(gw.mqttUrl, 'devices/pump-7/telemetry/raw', 'ok', 'pump-7');
    await pub(gw.mqttUrl, 'devices/sensor-1/alarms/overheat', '{"severity":9,"message":"overheat"}', 'sensor-1');
    await pub(gw.mqttUrl, 'devices/pump-7/alarms/pressure', '{"severity":3,"message":"low pressure"}', 'pump-7');
    await pub(gw.mqttUrl, 'devices/pump-7/alarms/raw', 'E42', 'pump-7');

    // Readings of a device may fall in more than one window: sum them up.
    const windows = await waitFor('every reading in a rollup', async () => {
      const records = await kcatConsume(brokers, rollups);
      const count = (device: string) => records.filter((r) => r.key === device).reduce((n, r) => n + (JSON.parse(r.payload ?? '{}') as Rollup).count, 0);
      return count('sensor-1') === 3 && count('pump-7') === 2 ? records : undefined;
    });
    const of = (device: string) => windows.filter((r) => r.key === device).map((r) => JSON.parse(r.payload ?? '{}') as Rollup);
    for (const [device, min, max] of [
      ['sensor-1', 20, 24],
      ['pump-7', 30.5, 31.5],
    ] as const) {
      const rows = of(device);
      assert.ok(rows.every((r) => r.device === device));
      assert.equal(Math.min(...rows.map((r) => r.min)), min);
      assert.equal(Math.max(...rows.map((r) => r.max)), max);
      const total = rows.reduce((sum, r) => sum + r.avg * r.count, 0);
      assert.ok(Math.abs(total - (device === 'sensor-1' ? 66 : 62)) < 0.05, `${device}: averages weighted by count sum to ${total}`);
    }

    const [alert, ...more] = await waitFor<KcatMessage[]>('the alert', async () => {
      const records = await kcatConsume(brokers, alerts);
      return records.length > 0 ? records : undefined;
    });
    assert.equal(more.length, 0);
    assert.equal(alert?.key, 'sensor-1');
    assert.equal(alert?.headers['mqtt-topic'], 'devices/sensor-1/alarms/overheat');
    assert.match(alert?.headers['ferry-id'] ?? '', /^[0-9a-f-]{36}$/);
    const body = JSON.parse(alert?.payload ?? '{}') as Record<string, unknown>;
    assert.deepEqual({ ...body, raisedAt: typeof body['raisedAt'] }, { severity: 9, message: 'overheat', device: 'sensor-1', site: 'plant-north/line-1', raisedAt: 'string' });

    await waitFor('every buffer to drain', () => drained(gw.adminUrl));
    // The other alarms, as they came, in the history.
    assert.deepEqual(
      (await historyRows(dataDir, 'alarm-alerts')).map((r) => [r.topic, r.payload, r.clientId]),
      [
        ['devices/pump-7/alarms/pressure', '{"severity":3,"message":"low pressure"}', 'pump-7'],
        ['devices/pump-7/alarms/raw', 'E42', 'pump-7'],
      ],
    );
    assert.equal((await historyRows(dataDir, 'telemetry-history')).length, 7);
  } finally {
    gw.child.kill('SIGTERM');
    await redis.del(`${siteKeys}sensor-1`);
    await redis.quit();
  }
  assert.equal(await gw.exited, 0);
});

test('the default gateway without Kafka starts with the TypeScript bridges present and off', async () => {
  const dataDir = tempDir();
  const gw = await startFerry(['--config', 'config/gateway.yaml', '--data-dir', dataDir], { KAFKA_BROKERS: '' });
  try {
    assert.deepEqual(
      (await status(gw.adminUrl)).bridges.map((b) => b.name),
      ['telemetry-history'],
    );
    for (const bridge of ['alarm-alerts', 'temperature-rollups'])
      assert.ok(
        gw.logs.some((l) => l['msg'] === 'bridge disabled' && l['bridge'] === bridge),
        bridge,
      );
    await pub(gw.mqttUrl, 'devices/pump-7/telemetry/climate', '{"celsius":8}', 'pump-7');
    await waitFor('every buffer to drain', () => drained(gw.adminUrl));
    assert.equal((await historyRows(dataDir, 'telemetry-history')).length, 1);
  } finally {
    gw.child.kill('SIGTERM');
  }
  assert.equal(await gw.exited, 0);
});

test('ferry validate checks TypeScript bridges: the examples with and without KAFKA_BROKERS, and a broken one by file, line and key path', async () => {
  const off = await ferry(['validate'], { KAFKA_BROKERS: '', POSTGRES_URL: '' });
  assert.equal(off.code, 0, off.stderr);
  assert.match(off.stdout, /ok \(8 bridges, 1 enabled;/);
  const on = await ferry(['validate'], { KAFKA_BROKERS: 'k1:9092', POSTGRES_URL: '' });
  assert.equal(on.code, 0, on.stderr);
  assert.match(on.stdout, /ok \(8 bridges, 5 enabled;/);
  const postgres = await ferry(['validate'], { KAFKA_BROKERS: '', POSTGRES_URL: 'postgres://ferry@db:5432/telemetry' });
  assert.equal(postgres.code, 0, postgres.stderr);
  assert.match(postgres.stdout, /ok \(8 bridges, 4 enabled;/);

  const root = tempDir();
  mkdirSync(join(root, 'bridges'));
  // Outside the Ferry checkout, a bridge finds rxjs through a node_modules of its own.
  symlinkSync(join(REPO_ROOT, 'node_modules'), join(root, 'node_modules'));
  const api = join(REPO_ROOT, 'src/index.ts');
  writeFileSync(join(root, 'gateway.yaml'), 'bridges: [bridges]\ndevices: []\n');
  writeFileSync(
    join(root, 'bridges/bad-config.ts'),
    `import { map } from 'rxjs';\nimport { defineBridge } from '${api}';\n\nexport default defineBridge({\n  name: 'bad-config',\n  from: { mqtt: { topics: ['a/#'] } },\n  to: {\n    out: { kafka: { brokers: 'k:9092', topic: 'bad topic!' } },\n  },\n  handle: (messages, tools) => messages.pipe(map((m) => tools.to('out', m))),\n});\n`,
  );
  writeFileSync(join(root, 'bridges/does-not-load.ts'), `import { defineBridge } from '${api}';\nthrow new Error('sites file missing');\n`);
  writeFileSync(join(root, 'bridges/no-default.ts'), 'export const bridge = {};\n');
  const out = await ferry(['validate', '--config', join(root, 'gateway.yaml')]);
  assert.equal(out.code, 1);
  const lines = out.stderr.trim().split('\n');
  assert.match(lines[0] ?? '', /bridges\/bad-config\.ts:8:40: to\.out\.kafka\.topic: topic 'bad topic!': a Kafka topic is 1 to 249 letters/);
  // At the line of the bridge that threw (issue 18), not a line of Ferry's loader.
  assert.match(lines[1] ?? '', /bridges\/does-not-load\.ts:2:7: cannot load this TypeScript bridge: Error: sites file missing$/);
  assert.match(lines[2] ?? '', /bridges\/no-default\.ts: the default export is not a bridge/);
  assert.equal(lines[3], 'ferry: 3 problems in the config');
});
