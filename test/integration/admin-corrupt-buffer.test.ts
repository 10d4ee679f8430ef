// A buffer that turns corrupt under a running gateway: what the admin server and the health
// check read of it fails, and each answers for itself (/readyz from what it can tell, 500 from
// /metrics and /api/status) instead of throwing out of a request listener or a timer, which
// ended the process with exit code 1 and a stack trace, without the drain and the exit code 75
// that the buffer's own reads and appends give a corrupt buffer (docs/operations.md).
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { connectAsync } from 'mqtt';
import pino from 'pino';
import { loadConfig } from '../../src/config/load.ts';
import { Gateway } from '../../src/runtime/gateway.ts';
import { componentKinds } from '../../src/runtime/registry.ts';
import { corruptBufferUnder } from '../harness/corrupt-buffer.ts';
import { capturedEntries } from '../harness/log-lines.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-admin-corrupt-');

/** A gateway of one history bridge under `root`, with 20 messages in its buffer. */
async function gatewayWithBacklog(root: string, logger: pino.Logger): Promise<Gateway> {
  writeFileSync(
    join(root, 'gateway.yaml'),
    'mqtt: {host: 127.0.0.1, port: 0, allowAnonymous: loopback}\nadmin: {host: 127.0.0.1, port: 0}\nshutdown: {drainTimeoutMs: 500}\ndevices: []\nbridges: [b.yaml]\ngateway: {dataDir: data}\n',
  );
  writeFileSync(join(root, 'b.yaml'), 'name: b\nfrom: { mqtt: { topics: ["t/#"] } }\nto: [{ history: {} }]\n');
  const gateway = new Gateway(loadConfig(join(root, 'gateway.yaml'), { kinds: componentKinds, env: {} }), logger, 'test');
  await gateway.start();
  try {
    const device = await connectAsync(`mqtt://127.0.0.1:${gateway.mqttPort}`, { clientId: 'corrupt-dev', reconnectPeriod: 0 });
    for (let i = 0; i < 20; i++) await device.publishAsync('t/x', Buffer.alloc(2000, i), { qos: 1 });
    await device.endAsync();
  } catch (error) {
    await gateway.stop();
    throw error;
  }
  return gateway;
}

async function get(url: string): Promise<number> {
  const res = await fetch(url);
  await res.arrayBuffer();
  return res.status;
}

test('a buffer found corrupt by /readyz, /metrics, /api/status or the health check: each answers (500 for what needs the buffer) and the process lives on', {
  timeout: 30_000,
}, async () => {
  const root = tempDir();
  const gateway = await gatewayWithBacklog(root, pino({ level: 'silent' }));
  try {
    const admin = `http://127.0.0.1:${gateway.adminPort}`;
    assert.equal(await get(`${admin}/readyz`), 200);

    corruptBufferUnder(join(root, 'data'));
    // Ready or not depends on whether an append met the damage yet; either way it answers.
    assert.ok([200, 503].includes(await get(`${admin}/readyz`)));
    assert.equal(await get(`${admin}/metrics`), 500);
    assert.equal(await get(`${admin}/api/status`), 500);
    assert.doesNotThrow(() => gateway.health(), 'the health check (also run by a timer) survives it');
    assert.equal(await get(`${admin}/healthz`), 200, 'the process is alive');
  } finally {
    await gateway.stop();
  }
});

// The 500s above were answered without a line in the log or a count: the admin server had no
// logger. Each is counted now, and logged once per path a minute (a scraper asking every few
// seconds must not flood the log), with a line summing up the rest.
test('the admin requests the corrupt buffer fails are counted each and logged once per path', { timeout: 30_000 }, async () => {
  const { logger, entries: lines } = capturedEntries('info');
  const root = tempDir();
  const gateway = await gatewayWithBacklog(root, logger);
  const admin = `http://127.0.0.1:${gateway.adminPort}`;
  try {
    corruptBufferUnder(join(root, 'data'));
    for (let i = 0; i < 10; i++) assert.equal(await get(`${admin}/metrics`), 500);
    for (let i = 0; i < 3; i++) assert.equal(await get(`${admin}/api/status`), 500);

    assert.equal(gateway.counters.get('admin.requests.failed{path=/metrics}'), 10);
    assert.equal(gateway.counters.get('admin.requests.failed{path=/api/status}'), 3);
    const failures = lines.filter((line) => line['msg'] === 'admin request failed, answered 500');
    assert.deepEqual(failures.map((line) => line['path']).sort(), ['/api/status', '/metrics'], 'one line per path');
    for (const line of failures) {
      assert.equal(line['component'], 'admin');
      assert.match(JSON.stringify(line['err']), /corrupt|malformed/i, 'the line says what failed');
    }
  } finally {
    await gateway.stop();
  }
  const summaries = lines.filter((line) => String(line['msg']).startsWith('admin request failed, answered 500: '));
  assert.deepEqual(summaries.map((line) => [line['path'], line['suppressed']]).sort(), [
    ['/api/status', 2],
    ['/metrics', 9],
  ]);
});
