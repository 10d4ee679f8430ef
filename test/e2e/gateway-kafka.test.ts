import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { blackHole } from '../harness/black-hole.ts';
import { startFerry } from '../harness/ferry-process.ts';
import { kcatConsume } from '../harness/kcat.ts';
import { mosquittoPub } from '../harness/mosquitto.ts';
import { tempDirs } from '../harness/temp.ts';
import { randomName, requireService } from '../harness/services.ts';
import { eventually } from '../harness/eventually.ts';

const dataDir = tempDirs('ferry-e2e-kafka-');

test('with KAFKA_BROKERS set, device telemetry reaches Kafka keyed by device, with its id and MQTT topic as headers', async () => {
  const brokers = await requireService('kafka');
  const topic = randomName('ferry-e2e-telemetry-');
  const gw = await startFerry(['--config', 'config/gateway.yaml', '--data-dir', dataDir()], { KAFKA_BROKERS: brokers.join(','), FERRY_KAFKA_TOPIC: topic });
  try {
    const sent = ['{"celsius":20}', '{"celsius":21}', '{"celsius":22}'];
    for (const [i, payload] of sent.entries()) {
      const pub = await mosquittoPub(gw.mqttUrl, `devices/sensor-${i % 2}/telemetry/climate`, payload, { clientId: `sensor-${i % 2}` });
      assert.equal(pub.code, 0, pub.stderr);
    }
    // The PUBACK came after Kafka's ack, so the messages are there now.
    const messages = await kcatConsume(brokers, topic);
    assert.deepEqual(
      messages.map((m) => [m.key, m.payload, m.headers['mqtt-topic']]),
      sent.map((payload, i) => [`sensor-${i % 2}`, payload, `devices/sensor-${i % 2}/telemetry/climate`]),
    );
    for (const m of messages) assert.match(m.headers['ferry-id'] ?? '', /^[0-9a-f-]{36}$/);
  } finally {
    gw.child.kill('SIGTERM');
  }
  assert.equal(await gw.exited, 0);
});

test('a message acknowledged while Kafka hangs survives a forced shutdown and is delivered after restart', async () => {
  const brokers = await requireService('kafka');
  const topic = randomName('ferry-e2e-restart-');
  const dir = dataDir();
  const hole = await blackHole();
  const first = await startFerry(['--config', 'config/gateway.yaml', '--data-dir', dir], { KAFKA_BROKERS: hole.address, FERRY_KAFKA_TOPIC: topic });
  try {
    // The PUBACK comes from the buffer's commit, not from Kafka, which never answers.
    const pub = await mosquittoPub(first.mqttUrl, 'devices/sensor-1/telemetry/climate', '{"celsius":1}', { clientId: 'sensor-1' });
    assert.equal(pub.code, 0, pub.stderr);
    first.child.kill('SIGTERM');
    await sleep(500);
    assert.equal(first.child.exitCode, null, 'exited while the Kafka sink still held a window, before the drain timeout');
    assert.equal((await fetch(`${first.adminUrl}/readyz`)).status, 503);
    first.child.kill('SIGTERM');
    assert.equal(await first.exited, 130);
  } finally {
    first.child.kill('SIGKILL');
    hole.close();
  }

  const second = await startFerry(['--config', 'config/gateway.yaml', '--data-dir', dir], { KAFKA_BROKERS: brokers.join(','), FERRY_KAFKA_TOPIC: topic });
  try {
    await eventually(async () => {
      const status = (await (await fetch(`${second.adminUrl}/api/status`)).json()) as { buffer: { bridges: { bridge: string; sinks: { pending: number }[] }[] } };
      assert.equal(status.buffer.bridges.find((b) => b.bridge === 'telemetry-to-kafka')?.sinks[0]?.pending, 0);
    });
    const messages = await kcatConsume(brokers, topic);
    assert.deepEqual(
      messages.map((m) => [m.key, m.payload]),
      [['sensor-1', '{"celsius":1}']],
    );
  } finally {
    second.child.kill('SIGTERM');
  }
  assert.equal(await second.exited, 0);
});
