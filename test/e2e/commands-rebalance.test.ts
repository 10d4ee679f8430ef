// A Kafka rebalance while commands wait for an offline device: another member of the consumer
// group takes one of the gateway's partitions and leaves again without committing, so the
// partition comes back and its commands are read again while their first delivery still waits.
// The device's PUBACK settles both, and the offset is committed then, not at expiryMs.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Kafka, logLevel } from 'kafkajs';
import { connectCommandDevice } from '../harness/command-device.ts';
import { eventually } from '../harness/eventually.ts';
import { startFerry } from '../harness/ferry-process.ts';
import { kafkaTestClient } from '../harness/kafka-group.ts';
import { randomName, requireService } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';

const dataDir = tempDirs('ferry-e2e-commands-rebalance-');

test('commands read again after their partition came back from another member reach the device once and are committed on its PUBACK', { timeout: 120_000 }, async () => {
  const brokers = await requireService('kafka');
  const kafka = await kafkaTestClient(brokers);
  const topic = randomName('ferry-e2e-rebalance-');
  const group = randomName('ferry-e2e-rebalance-group-');
  await kafka.createTopic(topic, 2);
  const gw = await startFerry(['--config', 'config/gateway.yaml', '--data-dir', dataDir()], {
    KAFKA_BROKERS: brokers.join(','),
    FERRY_KAFKA_TOPIC: randomName('ferry-e2e-telemetry-'),
    FERRY_COMMANDS_TOPIC: topic,
    FERRY_COMMANDS_GROUP: group,
    FERRY_COMMANDS_FROM_BEGINNING: 'true',
  });
  const joins = () => gw.logs.filter((l) => typeof l['msg'] === 'string' && l['msg'].endsWith('joined the group')).length;
  const other = new Kafka({ clientId: randomName('ferry-e2e-other-'), brokers, logLevel: logLevel.NOTHING }).consumer({ groupId: group });
  try {
    const device = { clientId: 'pump-9', filter: 'devices/pump-9/commands', clean: false };
    await (await connectCommandDevice(gw.mqttUrl, device)).end();
    await eventually(() => assert.ok(joins() >= 1), { timeoutMs: 30_000 });
    // One command on each partition, both queued in the device's session.
    await kafka.produce(topic, [
      { key: 'pump-9', value: 'start', partition: 0 },
      { key: 'pump-9', value: 'speed=3', partition: 1 },
    ]);
    await eventually(async () => {
      const status = (await (await fetch(`${gw.adminUrl}/api/status`)).json()) as { counters: Record<string, number> };
      assert.equal(status.counters['bridge.messages.in{bridge=commands-to-devices}'], 2);
    });

    // Another member joins (it takes one partition and commits nothing), then leaves.
    let taken: unknown;
    other.on(other.events.GROUP_JOIN, (event) => {
      taken = event.payload.memberAssignment;
    });
    await other.connect();
    await other.subscribe({ topics: [topic], fromBeginning: true });
    await other.run({ autoCommit: false, eachMessage: async () => {} });
    await eventually(() => assert.ok(taken !== undefined && joins() >= 2, 'the other member took a partition'), { timeoutMs: 60_000 });
    const before = joins();
    await other.disconnect();
    await eventually(() => assert.ok(joins() > before, 'the gateway has both partitions again'), { timeoutMs: 60_000 });

    const back = await connectCommandDevice(gw.mqttUrl, { ...device, subscribe: false });
    try {
      await back.waitFor(2);
      await kafka.waitForCommitted(group, topic, (o) => o[0] === '1' && o[1] === '1', 20_000);
      assert.deepEqual(back.received.map((c) => c.payload.toString()).sort(), ['speed=3', 'start'], 'each command once');
    } finally {
      await back.end();
    }
  } finally {
    await other.disconnect().catch(() => {});
    gw.child.kill('SIGTERM');
    await gw.exited;
    await kafka.close();
  }
});
