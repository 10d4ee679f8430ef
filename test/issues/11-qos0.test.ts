// Issue 11, item 2: QoS 0 does not wait for the buffer's commit.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { connectAsync } from 'mqtt';
import { blackHole } from '../harness/black-hole.ts';
import { startFerry } from '../harness/ferry-process.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-issue11-qos0-');

test('a QoS 0 message reaches subscribers at once even while its bridge refuses (full), which keeps QoS 1 messages unacknowledged', async () => {
  const hole = await blackHole();
  const root = tempDir();
  mkdirSync(join(root, 'bridges'));
  writeFileSync(join(root, 'gateway.yaml'), 'mqtt: {allowAnonymous: loopback}\nbridges: [bridges]\n');
  writeFileSync(
    join(root, 'bridges/up.yaml'),
    `name: up\nfrom: {mqtt: {topics: ["devices/+/telemetry"]}}\nto: [{kafka: {brokers: "${hole.address}", topic: t}}]\nbuffer: {maxMessages: 1, overflow: refuse}\n`,
  );
  const gw = await startFerry(['--config', join(root, 'gateway.yaml'), '--data-dir', join(root, 'data')]);
  try {
    const watcher = await connectAsync(gw.mqttUrl, { clientId: 'watcher', reconnectPeriod: 0 });
    await watcher.subscribeAsync('devices/+/telemetry', { qos: 0 });
    const seen: string[] = [];
    const arrived = new Promise<void>((resolve) => watcher.on('message', (_t, p) => (seen.push(p.toString()), p.toString() === 'q0' && resolve())));
    const device = await connectAsync(gw.mqttUrl, { clientId: 'dev-1', reconnectPeriod: 0 });
    await device.publishAsync('devices/dev-1/telemetry', 'first', { qos: 1 }); // fills the bridge
    const held = device.publishAsync('devices/dev-1/telemetry', 'held', { qos: 1 }).catch(() => 'never acknowledged'); // held: the bridge refuses
    const other = await connectAsync(gw.mqttUrl, { clientId: 'dev-2', reconnectPeriod: 0 });
    await other.publishAsync('devices/dev-2/telemetry', 'q0', { qos: 0 });
    // Before, a QoS 0 message waited for the commit like a QoS 1 one, and went nowhere while the bridge refused.
    await Promise.race([arrived, new Promise((_, reject) => setTimeout(() => reject(new Error(`q0 not forwarded; seen ${JSON.stringify(seen)}`)), 5000))]);
    assert.deepEqual(
      seen.filter((s) => s !== 'held'),
      ['first', 'q0'],
    );
    await Promise.all([watcher.endAsync(true), device.endAsync(true), other.endAsync(true)]);
    assert.equal(await held, 'never acknowledged', 'the QoS 1 message stayed unacknowledged: the bridge was full');
  } finally {
    gw.child.kill('SIGKILL');
    hole.close();
  }
});
