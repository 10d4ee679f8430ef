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

const tempDir = tempDirs('ferry-e2e-lookup-');
const running: RunningFerry[] = [];
after(async () => {
  for (const gw of running) gw.child.kill('SIGKILL');
  await Promise.all(running.map((gw) => gw.exited));
});

/** A gateway tree declaring the Redis connection `sites`, with `bridge` as its only bridge. */
function gatewayTree(redisUrl: string, bridge: string): string {
  const root = tempDir();
  const config = writeGatewayTree(root, '{allowAnonymous: true}', {});
  writeFileSync(config, `mqtt: {allowAnonymous: true}\nredis:\n  sites: {url: "${redisUrl}", commandTimeoutMs: 2000}\nbridges: [bridges]\ndevices: [devices]\n`);
  writeFileSync(join(root, 'bridges/history.yaml'), bridge);
  return config;
}

test('ferry run: a lookup step enriches alarms with the site Redis holds for their device; a miss gets the default', { timeout: 120_000 }, async () => {
  const redisUrl = await requireService('redis');
  const prefix = randomName('ferry:test:e2e-lookup:');
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  after(async () => {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    await redis.quit();
  });
  await redis.set(`${prefix}site:pump-7`, 'plant-south/pumphouse');
  const config = gatewayTree(
    redisUrl,
    `name: alarms
from: {mqtt: {topics: ["devices/+/alarms/#"]}}
transform:
  - decode: json
  - lookup: {redis: sites, key: "${prefix}site:\${1}", field: site, default: unknown}
to: [{history: {}}]
`,
  );
  const validate = await ferry(['validate', '--config', config]);
  assert.equal(validate.code, 0, validate.stderr);
  const dataDir = tempDir();
  const gw = await startFerry(['--config', config, '--data-dir', dataDir]);
  running.push(gw);
  for (const [device, payload] of [
    ['pump-7', '{"severity":9}'],
    ['sensor-9', '{"severity":3}'],
  ] as const) {
    const pub = await mosquittoPub(gw.mqttUrl, `devices/${device}/alarms/pressure`, payload, { qos: 1, clientId: device });
    assert.equal(pub.code, 0, pub.stderr);
  }
  const rows = await until(
    'two alarms in the history',
    async () => {
      const result = await ferry(['history', '--data-dir', dataDir, '--json']);
      const lines = result.stdout.trim() === '' ? [] : result.stdout.trim().split('\n');
      return lines.length === 2 ? lines.map((line) => JSON.parse(line) as Record<string, unknown>) : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 250 },
  );
  assert.deepEqual(rows.map((r) => [r['clientId'], r['payload']]).sort(), [
    ['pump-7', '{"severity":9,"site":"plant-south/pumphouse"}'],
    ['sensor-9', '{"severity":3,"site":"unknown"}'],
  ]);
  const status = (await (await fetch(`${gw.adminUrl}/api/status`)).json()) as { counters: Record<string, number> };
  assert.equal(status.counters['lookup.hits{bridge=alarms}'], 1);
  assert.equal(status.counters['lookup.misses{bridge=alarms}'], 1);
});

test('ferry validate: a lookup or rate limit naming a Redis connection gateway.yaml does not declare is an error at its line', { timeout: 60_000 }, async () => {
  const config = gatewayTree(
    'redis://127.0.0.1:6379',
    `name: alarms
from: {mqtt: {topics: ["devices/+/alarms/#"]}}
rateLimit: {redis: limits, messagesPerSecond: 10}
transform:
  - decode: json
  - lookup: {redis: site-db, key: "site:\${1}", field: site}
to: [{history: {}}]
`,
  );
  const validate = await ferry(['validate', '--config', config]);
  assert.equal(validate.code, 1, validate.stdout);
  const out = validate.stdout + validate.stderr;
  assert.match(out, /history\.yaml:3:\d+.*rateLimit\.redis.*no Redis connection named 'limits' under `redis:` in gateway\.yaml \(declared: sites\)/);
  assert.match(out, /history\.yaml:6:\d+.*transform\[1\]\.lookup\.redis.*no Redis connection named 'site-db'/);

  // A key template is checked against the topic filter like a sink's.
  const badKey = gatewayTree(
    'redis://127.0.0.1:6379',
    'name: alarms\nfrom: {mqtt: {topics: ["devices/+/alarms/#"]}}\ntransform:\n  - lookup: {redis: sites, key: "site:${2}", field: site}\nto: [{history: {}}]\n',
  );
  const checked = await ferry(['validate', '--config', badKey]);
  assert.equal(checked.code, 1);
  assert.match(checked.stdout + checked.stderr, /history\.yaml:4:\d+: transform\[0\]\.lookup\.key: template 'site:\$\{2\}': \$\{2\} needs a 2nd '\+' wildcard/);
});

test('ferry run: the rate limit and the lookup naming one connection share one client, which a reload dropping them closes', { timeout: 120_000 }, async () => {
  const redisUrl = await requireService('redis');
  const prefix = randomName('ferry:test:e2e-conn:');
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  after(async () => {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    await redis.quit();
  });
  const bridge = (enriched: boolean) =>
    [
      'name: alarms',
      'from: {mqtt: {topics: ["devices/+/alarms/#"]}}',
      ...(enriched
        ? [
            `rateLimit: {redis: sites, keyPrefix: "${prefix}rl:", messagesPerSecond: 1000}`,
            'transform:',
            `  - lookup: {redis: sites, key: "${prefix}site:\${1}", field: site, default: unknown}`,
          ]
        : []),
      'to: [{history: {}}]',
      '',
    ].join('\n');
  const config = gatewayTree(redisUrl, bridge(true));
  const dataDir = tempDir();
  const gw = await startFerry(['--config', config, '--data-dir', dataDir]);
  running.push(gw);
  const clients = async () =>
    String(await redis.call('CLIENT', 'LIST'))
      .split('\n')
      .filter((line: string) => line.includes(` name=ferry-${gw.child.pid} `)).length;
  assert.equal(await clients(), 0, 'opened on first use only');
  const pub = await mosquittoPub(gw.mqttUrl, 'devices/pump-7/alarms/pressure', '{"severity":9}', { qos: 1, clientId: 'pump-7' });
  assert.equal(pub.code, 0, pub.stderr);
  // In the history, the message has been through both: each used Redis by then.
  await until('the enriched alarm in the history', async () => ((await ferry(['history', '--data-dir', dataDir, '--json'])).stdout.includes('site') ? true : undefined), {
    timeoutMs: 60_000,
    intervalMs: 250,
  });
  assert.equal(await clients(), 1);

  writeFileSync(join(config, '../bridges/history.yaml'), bridge(false));
  const reload = await fetch(`${gw.adminUrl}/api/reload`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
  assert.equal(reload.status, 200, await reload.text());
  await until('the client closed', async () => ((await clients()) === 0 ? true : undefined), { timeoutMs: 60_000, intervalMs: 250 });
  gw.child.kill('SIGTERM');
  assert.equal(await gw.exited, 0);
});
