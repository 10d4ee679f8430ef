import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Redis } from 'ioredis';
import { type RunningFerry, ferry, startFerry } from '../harness/ferry-process.ts';
import { writeGatewayTree } from '../harness/gateway-tree.ts';
import { mosquittoPub } from '../harness/mosquitto.ts';
import { randomName, requireService } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';
import { until } from '../harness/eventually.ts';

const tempDir = tempDirs('ferry-e2e-transform-');
const running: RunningFerry[] = [];
after(async () => {
  for (const gw of running) gw.child.kill('SIGKILL');
  await Promise.all(running.map((gw) => gw.exited));
});

const PROFILE = `name: temperature-sensor
clientId: sensor-*
payloadSchema:
  type: object
  required: [celsius, humidity]
  properties:
    celsius: {type: number}
    humidity: {type: number}
`;

/** A gateway tree whose only bridge is `bridge` (YAML), with the temperature-sensor profile; returns the config path. */
function gatewayTree(bridge: string): string {
  const root = tempDir();
  const config = writeGatewayTree(root, '{allowAnonymous: true}', { 'temperature-sensor.yaml': PROFILE });
  writeFileSync(join(root, 'bridges/history.yaml'), bridge);
  return config;
}

async function start(config: string): Promise<{ gw: RunningFerry; dataDir: string }> {
  const dataDir = tempDir();
  const gw = await startFerry(['--config', config, '--data-dir', dataDir]);
  running.push(gw);
  return { gw, dataDir };
}

async function jsonLines(args: string[]): Promise<Record<string, unknown>[]> {
  const result = await ferry(args);
  assert.equal(result.code, 0, result.stderr);
  return result.stdout.trim() === ''
    ? []
    : result.stdout
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as Record<string, unknown>);
}

async function waitFor<T>(what: string, read: () => Promise<T>, done: (value: T) => boolean): Promise<T> {
  return until(what, async () => {
    const value = await read();
    return done(value) ? value : undefined;
  });
}

const counters = async (gw: RunningFerry) => ((await (await fetch(`${gw.adminUrl}/api/status`)).json()) as { counters: Record<string, number> }).counters;

test('mqtt → transform [decode json, validate profile, drop field] → history: valid messages arrive transformed, invalid ones are dead letters with reasons, every publish is acknowledged', {
  timeout: 120_000,
}, async () => {
  const config = gatewayTree(`name: clean-telemetry
from: {mqtt: {topics: ["devices/+/telemetry/#"]}}
transform:
  - decode: json
  - validate: {profile: temperature-sensor}
  - drop: [debug]
to: [{history: {}}]
`);
  const validate = await ferry(['validate', '--config', config]);
  assert.equal(validate.code, 0, validate.stderr);
  const { gw, dataDir } = await start(config);

  const published = [
    ['sensor-1', '{"celsius":21.5,"humidity":40,"debug":"x"}'],
    ['sensor-2', 'hello'],
    ['sensor-1', '{"celsius":"warm","humidity":40}'],
    ['sensor-2', '{"celsius":22,"humidity":41,"debug":{"trace":[1,2]}}'],
  ] as const;
  for (const [clientId, payload] of published) {
    const pub = await mosquittoPub(gw.mqttUrl, `devices/${clientId}/telemetry/climate`, payload, { qos: 1, clientId });
    assert.equal(pub.code, 0, `mosquitto_pub ${payload} was not acknowledged: ${pub.stderr}`);
  }

  const history = await waitFor(
    'two messages in history',
    () => jsonLines(['history', '--data-dir', dataDir, '--json']),
    (rows) => rows.length === 2,
  );
  assert.deepEqual(history.map((r) => [r['clientId'], r['payload']]).sort(), [
    ['sensor-1', '{"celsius":21.5,"humidity":40}'],
    ['sensor-2', '{"celsius":22,"humidity":41}'],
  ]);

  const dead = await jsonLines(['buffer', 'peek', '--dead', '--data-dir', dataDir, '--json']);
  assert.deepEqual(
    dead.map((d) => [d['bridge'], d['sink'], d['clientId'], d['payload']]),
    [
      ['clean-telemetry', 'transform', 'sensor-2', 'hello'],
      ['clean-telemetry', 'transform', 'sensor-1', '{"celsius":"warm","humidity":40}'],
    ],
  );
  assert.match(String(dead[0]?.['reason']), /^payload is not JSON: Unexpected token/);
  assert.equal(dead[1]?.['reason'], 'payload fails schema of profile temperature-sensor: /celsius must be number');

  const text = await ferry(['buffer', 'peek', '--dead', '--data-dir', dataDir]);
  assert.match(
    text.stdout,
    /transform {2}sensor-1 {2}devices\/sensor-1\/telemetry\/climate {2}payload fails schema of profile temperature-sensor: \/celsius must be number {2}\{"celsius":"warm","humidity":40\}/,
  );

  const stats = await ferry(['buffer', 'stats', '--data-dir', dataDir, '--json']);
  assert.equal((JSON.parse(stats.stdout) as { totals: { deadLetters: number } }).totals.deadLetters, 2);

  const c = await counters(gw);
  assert.equal(c['bridge.messages.rejected{bridge=clean-telemetry,reason=not_json}'], 1);
  assert.equal(c['bridge.messages.rejected{bridge=clean-telemetry,reason=schema}'], 1);
  assert.equal(c['bridge.messages.in{bridge=clean-telemetry}'], 2);
  assert.equal(c['mqtt.publish.nacked'], undefined);
  assert.ok(gw.logs.some((l) => l['msg'] === 'transform: message rejected and dead-lettered'));
});

test('two gateways whose bridges share a Redis rate limit pass its burst between them; the rest are acknowledged and dead-lettered', { timeout: 120_000 }, async () => {
  const redisUrl = await requireService('redis');
  const keyPrefix = randomName('ferry:test:e2e-rl:');
  after(async () => {
    const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
    await redis.del(`${keyPrefix}site`);
    await redis.quit();
  });
  const config = gatewayTree(`name: limited
from: {mqtt: {topics: ["devices/+/telemetry/#"]}}
rateLimit:
  redis: ${redisUrl}
  keyPrefix: "${keyPrefix}"
  key: site
  messagesPerSecond: 0.001
  burst: 3
to: [{history: {}}]
`);
  const [one, two] = await Promise.all([start(config), start(config)]);
  for (let i = 0; i < 3; i++) {
    for (const [side, { gw }] of [
      ['one', one],
      ['two', two],
    ] as const) {
      const pub = await mosquittoPub(gw.mqttUrl, `devices/sensor-${side}/telemetry/climate`, `{"n":${i}}`, { qos: 1, clientId: `sensor-${side}` });
      assert.equal(pub.code, 0, pub.stderr);
    }
  }
  const rejected = async () => {
    const [a, b] = await Promise.all([counters(one.gw), counters(two.gw)]);
    return (a['bridge.messages.rejected{bridge=limited,reason=rate_limited}'] ?? 0) + (b['bridge.messages.rejected{bridge=limited,reason=rate_limited}'] ?? 0);
  };
  await waitFor('three rejections', rejected, (n) => n === 3);
  const kept = async () => (await jsonLines(['history', '--data-dir', one.dataDir, '--json'])).length + (await jsonLines(['history', '--data-dir', two.dataDir, '--json'])).length;
  assert.equal(await waitFor('three kept messages', kept, (n) => n === 3), 3);
  const dead = [
    ...(await jsonLines(['buffer', 'peek', '--dead', '--data-dir', one.dataDir, '--json'])),
    ...(await jsonLines(['buffer', 'peek', '--dead', '--data-dir', two.dataDir, '--json'])),
  ];
  assert.equal(dead.length, 3);
  for (const d of dead) {
    assert.equal(d['sink'], 'rateLimit');
    assert.equal(d['reason'], "rate limited: over 0.001 messages/s for key 'site'");
  }
});
