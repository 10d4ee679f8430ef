import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { connectAsync } from 'mqtt';
import { makeCertificates } from '../harness/certs.ts';
import { eventually } from '../harness/eventually.ts';
import { startFerry } from '../harness/ferry-process.ts';
import { credential, writeGatewayTree } from '../harness/gateway-tree.ts';
import { startOtlpReceiver } from '../harness/otlp-receiver.ts';
import { testSchema } from '../harness/pg-schema.ts';
import { requireService } from '../harness/services.ts';

const secret = (what: string) => `${what}-${randomBytes(12).toString('hex')}`;

test('the logs, spans, metrics and exported log records of a run with a device password, a TLS key, a Redis and a Postgres password hold none of them', async (t) => {
  const schema = await testSchema(t);
  const redisUrl = new URL(await requireService('redis'));
  const receiver = await startOtlpReceiver();
  const root = mkdtempSync(join(tmpdir(), 'ferry-secrets-'));
  t.after(async () => {
    await receiver.close();
    rmSync(root, { recursive: true, force: true });
  });
  makeCertificates(root, []);
  const secrets = {
    device: secret('device-pass'),
    redis: secret('redis-pass'),
    postgres: secret('pg-pass'),
    // The key's body, one base64 line of it at a time: none may show anywhere.
    tls: readFileSync(join(root, 'server.key'), 'utf8')
      .split('\n')
      .filter((line) => line !== '' && !line.startsWith('-----')),
  };
  await schema.query(`CREATE TABLE ${schema.name}.readings (id uuid PRIMARY KEY, body jsonb, trace text)`);
  const pgUrl = new URL(schema.url);
  pgUrl.username = pgUrl.username || 'postgres';
  // The test server trusts loopback: the password is sent and ignored, as it would be used.
  pgUrl.password = secrets.postgres;
  // The default user of the test Redis has no password: AUTH default <anything> succeeds.
  redisUrl.username = 'default';
  redisUrl.password = secrets.redis;
  const config = writeGatewayTree(root, `{allowAnonymous: false, tls: {port: 0, cert: ${join(root, 'server.crt')}, key: ${join(root, 'server.key')}}}`, {
    'sensor.yaml': `name: sensor\nclientId: sensor-*\ncredentials:\n${await credential('sensor-1', secrets.device)}`,
  });
  writeFileSync(
    join(root, 'bridges/readings.yaml'),
    [
      'name: readings',
      'from: {mqtt: {topics: ["devices/+/telemetry/#"]}}',
      `rateLimit: {redis: "${redisUrl.href}", messagesPerSecond: 1000, burst: 1000}`,
      'to:',
      `  - postgres: {url: "${pgUrl.href}", table: ${schema.name}.readings, columns: {id: "\${id}", body: "\${payload}", trace: "\${header.traceparent}"}, ssl: {mode: disable}}`,
      '',
    ].join('\n'),
  );
  writeFileSync(
    config,
    `${readFileSync(config, 'utf8')}telemetry:\n  endpoint: ${receiver.url}\n  traces: {sampleRatio: 1}\n  metrics: {intervalMs: 1000}\n  logs: {enabled: true}\n  ebpf: 'off'\n`,
  );

  const gw = await startFerry(['--config', config, '--data-dir', join(root, 'data'), '--log-level', 'trace']);
  t.after(() => gw.child.kill('SIGKILL'));
  let stdout = '';
  gw.child.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  const status = (await (await fetch(`${gw.adminUrl}/api/status`)).json()) as { listeners: { protocol: string; port: number }[] };
  const port = status.listeners.find((l) => l.protocol === 'mqtts')?.port;
  const device = await connectAsync(`mqtts://127.0.0.1:${port}`, {
    clientId: 'sensor-1',
    username: 'sensor-1',
    password: secrets.device,
    ca: readFileSync(join(root, 'ca.crt')),
    reconnectPeriod: 0,
  });
  for (let i = 0; i < 5; i++) await device.publishAsync('devices/sensor-1/telemetry/t', JSON.stringify({ i }), { qos: 1 });
  // A wrong password too: refusals are logged, the password is not.
  await assert.rejects(
    connectAsync(`mqtts://127.0.0.1:${port}`, {
      clientId: 'sensor-2',
      username: 'sensor-1',
      password: `${secrets.device}-wrong`,
      ca: readFileSync(join(root, 'ca.crt')),
      reconnectPeriod: 0,
    }),
  );
  await device.endAsync();

  // Written with the message's span in the mapped column.
  const rows = await eventually(async () => {
    const found = await schema.query<{ trace: string | null }>(`SELECT trace FROM ${schema.name}.readings`);
    assert.equal(found.length, 5);
    return found;
  });
  for (const row of rows) assert.match(String(row.trace), /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
  const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  const api = await (await fetch(`${gw.adminUrl}/api/status`)).text();
  gw.child.kill('SIGTERM');
  assert.equal(await gw.exited, 0);

  assert.ok(receiver.spans.length >= 10, 'spans exported');
  assert.ok(receiver.points.length > 0, 'metrics exported');
  assert.ok(receiver.logs.length > 0, 'log records exported');
  assert.ok(
    receiver.logs.some((l) => l.body.startsWith('accepting MQTT connections')),
    'the log records are the gateway lines',
  );
  const everything = [stdout, JSON.stringify(gw.logs), metrics, api, ...receiver.raw].join('\n');
  for (const [what, values] of Object.entries(secrets)) {
    for (const value of [values].flat()) assert.ok(!everything.includes(value), `the ${what} secret shows in the logs, spans or metrics`);
  }
});
