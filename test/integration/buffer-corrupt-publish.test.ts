// A publish that meets a corrupt buffer while the writer counts its bridge's usage, before the
// append: that count ran outside the handling of failed appends, so SQLITE_CORRUPT was thrown out
// of the event loop and `ferry run` ended with exit code 1 and a stack trace. It is handled as a
// failed append is: nothing acknowledged (the devices keep their messages), the buffer marked,
// and a restart asked for (`ferry run` drains and exits 75, docs/operations.md).
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { connectAsync } from 'mqtt';
import pino from 'pino';
import { bufferPolicySchema, bufferSettingsSchema } from '../../src/buffer/config.ts';
import { openBuffer } from '../../src/buffer/open.ts';
import { BufferWriter } from '../../src/buffer/writer.ts';
import type { Delivery } from '../../src/core/delivery.ts';
import { loadConfig } from '../../src/config/load.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { EXIT_RESTART } from '../../src/cli/run.ts';
import { Gateway } from '../../src/runtime/gateway.ts';
import { componentKinds } from '../../src/runtime/registry.ts';
import { trackedDeliveries } from '../conformance/deliveries.ts';
import { corruptBufferUnder } from '../harness/corrupt-buffer.ts';
import { eventually } from '../harness/eventually.ts';
import { startFerry } from '../harness/ferry-process.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-corrupt-publish-');
const logger = pino({ level: 'silent' });

test('a commit whose count of the bridge meets a corrupt page holds its messages unacknowledged and asks for a restart', { timeout: 20_000 }, async () => {
  const dir = tempDir();
  const { store } = openBuffer(dir, logger);
  const counters = new CounterRegistry();
  const writer = new BufferWriter(store, bufferSettingsSchema().parse({}), logger, counters);
  const restarts: string[] = [];
  writer.onRestartNeeded = (why) => restarts.push(why);
  store.registerBridge('b', ['out']);
  writer.setPolicy('b', bufferPolicySchema().parse({}));
  try {
    // The bridge's usage is not counted yet: the first commit counts it from disk.
    corruptBufferUnder(dir);
    const sent = trackedDeliveries(3);
    for (const d of sent.deliveries) writer.enqueue('b', d);
    await eventually(() => assert.deepEqual(restarts, ['an append found the buffer corrupt']));
    assert.equal(writer.held, 3, 'held, not acknowledged');
    assert.deepEqual(sent.acked, []);
    assert.equal(writer.state, 'write-failed');
    assert.equal(counters.get('buffer.errors{reason=corrupt}'), 1);
    // Later messages are held behind them, not counted against the corrupt buffer again.
    const later = trackedDeliveries(1);
    writer.enqueue('b', later.deliveries[0] as Delivery);
    await eventually(() => assert.equal(writer.held, 4));
    assert.equal(counters.get('buffer.errors{reason=corrupt}'), 1);
    writer.close();
    await sent.settled();
    assert.equal(sent.nacked.size, 3, 'nacked at the close: the devices send them again');
    assert.deepEqual(sent.doubleSettles, []);
  } finally {
    writer.close();
    store.close();
  }
});

test('a QoS 1 publish into a gateway whose buffer turned corrupt is not acknowledged, and the gateway asks for a restart instead of throwing', { timeout: 30_000 }, async () => {
  const root = tempDir();
  writeFileSync(
    join(root, 'gateway.yaml'),
    'mqtt: {host: 127.0.0.1, port: 0, allowAnonymous: loopback}\nshutdown: {drainTimeoutMs: 500}\ndevices: []\nbridges: [b.yaml]\ngateway: {dataDir: data}\n',
  );
  writeFileSync(join(root, 'b.yaml'), 'name: b\nfrom: { mqtt: { topics: ["t/#"] } }\nto: [{ history: {} }]\n');
  const restarts: string[] = [];
  const config = loadConfig(join(root, 'gateway.yaml'), { kinds: componentKinds, env: {} });
  const gateway = new Gateway(config, logger, 'test', { onRestartNeeded: (why) => restarts.push(why) });
  await gateway.start();
  try {
    const device = await connectAsync(`mqtt://127.0.0.1:${gateway.mqttPort}`, { clientId: 'corrupt-pub', reconnectPeriod: 0 });
    device.on('error', () => {});
    let acked = false;
    corruptBufferUnder(join(root, 'data'));
    device.publishAsync('t/x', 'reading', { qos: 1 }).then(
      () => (acked = true),
      () => {},
    );
    // Whoever meets the damage first (this append, or the history sink's next read) asks for it.
    await eventually(() => assert.equal(restarts.length, 1));
    assert.match(restarts[0] ?? '', /found the buffer corrupt/);
    await sleep(300);
    assert.equal(acked, false, 'no PUBACK: the device keeps the message');
    await device.endAsync(true);
  } finally {
    await gateway.stop();
  }
});

test('ferry run: a QoS 1 publish that meets a corrupt buffer ends the process with exit code 75, not 1 and a stack trace', { timeout: 60_000 }, async () => {
  const root = tempDir();
  const config = join(root, 'gateway.yaml');
  writeFileSync(config, 'mqtt: {host: 127.0.0.1, allowAnonymous: loopback}\nshutdown: {drainTimeoutMs: 500}\ndevices: []\nbridges: [b.yaml]\ngateway: {dataDir: data}\n');
  writeFileSync(join(root, 'b.yaml'), 'name: b\nfrom: { mqtt: { topics: ["t/#"] } }\nto: [{ history: {} }]\n');
  const gw = await startFerry(['--config', config]);
  try {
    const device = await connectAsync(gw.mqttUrl, { clientId: 'corrupt-cli', reconnectPeriod: 0 });
    device.on('error', () => {});
    corruptBufferUnder(join(root, 'data'));
    let acked = false;
    device.publishAsync('t/x', 'reading', { qos: 1 }).then(
      () => (acked = true),
      () => {},
    );
    const ended = await Promise.race([gw.exited, sleep(30_000).then(() => 'still running after 30 s')]);
    assert.equal(ended, EXIT_RESTART);
    assert.equal(acked, false, 'no PUBACK: the device keeps the message');
    // This append or the history sink's next read: whichever meets the damage first.
    assert.ok(
      gw.logs.some((l) => /found the buffer corrupt: stopping/.test(String(l['msg']))),
      'the reason and the exit code are logged',
    );
    await device.endAsync(true);
  } finally {
    gw.child.kill('SIGKILL');
  }
});
