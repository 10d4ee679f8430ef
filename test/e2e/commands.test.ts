import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { connectCommandDevice } from '../harness/command-device.ts';
import { type RunningFerry, startFerry } from '../harness/ferry-process.ts';
import { kafkaTestClient, type KafkaTestClient } from '../harness/kafka-group.ts';
import { tempDirs } from '../harness/temp.ts';
import { randomName, requireService } from '../harness/services.ts';
import { eventually } from '../harness/eventually.ts';

const dataDir = tempDirs('ferry-e2e-commands-');
const BRIDGE = 'commands-to-devices';

interface Setup {
  readonly gw: RunningFerry;
  readonly kafka: KafkaTestClient;
  readonly topic: string;
  readonly group: string;
}

/** The default config with the example bridge on a fresh topic and consumer group (or those of `again`, on its data directory). */
async function start(extraEnv: Record<string, string> = {}, again?: Setup & { readonly dir: string }): Promise<Setup & { readonly dir: string }> {
  const brokers = await requireService('kafka');
  const kafka = await kafkaTestClient(brokers);
  const topic = again?.topic ?? randomName('ferry-e2e-commands-');
  const group = again?.group ?? randomName('ferry-e2e-commands-group-');
  if (again === undefined) await kafka.createTopic(topic);
  const dir = again?.dir ?? dataDir();
  const gw = await startFerry(['--config', 'config/gateway.yaml', '--data-dir', dir], {
    KAFKA_BROKERS: brokers.join(','),
    FERRY_KAFKA_TOPIC: randomName('ferry-e2e-telemetry-'),
    FERRY_COMMANDS_TOPIC: topic,
    FERRY_COMMANDS_GROUP: group,
    // A fresh group on a fresh topic: read from offset 0, whenever the group is joined.
    FERRY_COMMANDS_FROM_BEGINNING: 'true',
    ...extraEnv,
  });
  return { gw, kafka, topic, group, dir };
}

/** SIGTERM; the gateway must leave its consumer group on the way out, not after the session timeout. */
async function stop({ gw, kafka, group }: Setup): Promise<void> {
  gw.child.kill('SIGTERM');
  try {
    assert.equal(await gw.exited, 0);
    assert.equal(await kafka.groupState(group), 'Empty', 'the gateway exited without leaving its consumer group');
  } finally {
    await kafka.close();
  }
}

async function counter(gw: RunningFerry, name: string): Promise<number> {
  const status = (await (await fetch(`${gw.adminUrl}/api/status`)).json()) as { counters: Record<string, number> };
  return Object.entries(status.counters)
    .filter(([key]) => key === name || key.startsWith(`${name}{`))
    .reduce((sum, [, value]) => sum + value, 0);
}

async function waitForCounter(gw: RunningFerry, name: string, atLeast: number): Promise<void> {
  await eventually(async () => assert.ok((await counter(gw, name)) >= atLeast, `${name} below ${atLeast}`), { timeoutMs: 30_000, intervalMs: 100 });
}

test('a command reaches its device byte for byte, and its offset is committed only after the PUBACK of that message', async () => {
  const setup = await start();
  const { gw, kafka, topic, group } = setup;
  const holder = await connectCommandDevice(gw.mqttUrl, { clientId: 'valve-1', filter: 'devices/valve-1/commands/#', holdAcks: true });
  const other = await connectCommandDevice(gw.mqttUrl, { clientId: 'valve-2', filter: 'devices/valve-2/commands/#' });
  try {
    const bytes = Buffer.from([0x00, 0xff, 0x7b, 0x0a, 0xc3, 0x28, 0x01]);
    await kafka.produce(topic, [{ key: 'valve-1', value: bytes }]);
    const [first] = await holder.waitFor(1);
    assert.equal(first?.topic, 'devices/valve-1/commands');
    assert.equal(first?.qos, 1);
    assert.deepEqual(first?.payload, bytes);

    // The next command of the partition goes to a device that acks at once: it is delivered and
    // acked, yet the offset cannot move past the first, whose PUBACK is still held.
    await kafka.produce(topic, [{ key: 'valve-2', value: 'open' }]);
    assert.deepEqual(
      (await other.waitFor(1)).map((c) => c.payload.toString()),
      ['open'],
    );
    await waitForCounter(gw, 'commands.delivered', 1);
    await sleep(1000);
    assert.deepEqual(await kafka.committed(group, topic), { 0: '-1' }, 'committed before the held PUBACK');

    holder.releaseAcks();
    await kafka.waitForCommitted(group, topic, (o) => o[0] === '2');
    assert.equal(await counter(gw, 'commands.delivered'), 2);
    assert.equal(await counter(gw, 'commands.expired'), 0);
  } finally {
    await Promise.all([holder.end(), other.end()]);
    await stop(setup);
  }
});

test('a device with a persistent session gets the commands sent while it was offline when it comes back; then they are committed', async () => {
  const setup = await start();
  const { gw, kafka, topic, group } = setup;
  const first = await connectCommandDevice(gw.mqttUrl, { clientId: 'pump-7', filter: 'devices/pump-7/commands/#', clean: false });
  await first.end();

  await kafka.produce(topic, [
    { key: 'pump-7', value: 'start' },
    { key: 'pump-7', value: 'speed=3' },
  ]);
  // Both were taken from Kafka and handed to the broker, which keeps them in the session.
  await waitForCounter(gw, 'bridge.messages.in', 2);
  await sleep(500);
  assert.deepEqual(await kafka.committed(group, topic), { 0: '-1' }, 'committed while the device was away');

  const back = await connectCommandDevice(gw.mqttUrl, { clientId: 'pump-7', filter: 'devices/pump-7/commands/#', clean: false, subscribe: false });
  try {
    const received = await back.waitFor(2);
    assert.deepEqual(
      received.map((c) => [c.topic, c.payload.toString()]),
      [
        ['devices/pump-7/commands', 'start'],
        ['devices/pump-7/commands', 'speed=3'],
      ],
    );
    await kafka.waitForCommitted(group, topic, (o) => o[0] === '2');
    assert.equal(await counter(gw, 'commands.delivered'), 2);
  } finally {
    await back.end();
    await stop(setup);
  }
});

test('a command its device never takes expires after expiryMs: counted, and its offset moves on; a command nobody subscribes to too', async () => {
  const setup = await start({ FERRY_COMMANDS_EXPIRY_MS: '1500' });
  const { gw, kafka, topic, group } = setup;
  const gone = await connectCommandDevice(gw.mqttUrl, { clientId: 'lamp-3', filter: 'devices/lamp-3/commands/#', clean: false });
  await gone.end();
  try {
    await kafka.produce(topic, [
      { key: 'lamp-3', value: 'on' },
      { key: 'nobody-here', value: 'on' },
    ]);
    await kafka.waitForCommitted(group, topic, (o) => o[0] === '2');
    const status = (await (await fetch(`${gw.adminUrl}/api/status`)).json()) as { counters: Record<string, number> };
    assert.equal(status.counters[`commands.expired{bridge=${BRIDGE},reason=expired}`], 1);
    assert.equal(status.counters[`commands.expired{bridge=${BRIDGE},reason=no_subscriber}`], 1);
    const warnings = gw.logs.filter((l) => typeof l['msg'] === 'string' && l['msg'].includes('command dropped'));
    assert.deepEqual(warnings.map((l) => l['topic']).sort(), ['devices/lamp-3/commands', 'devices/nobody-here/commands']);

    // The expired command is not handed to the device when it comes back later.
    const back = await connectCommandDevice(gw.mqttUrl, { clientId: 'lamp-3', filter: 'devices/lamp-3/commands/#', clean: false, subscribe: false });
    await kafka.produce(topic, [{ key: 'lamp-3', value: 'off' }]);
    const received = await back.waitFor(1);
    await back.end();
    // QoS 1 is at least once: a command published while the session is being resumed may come twice.
    assert.deepEqual([...new Set(received.map((c) => c.payload.toString()))], ['off']);
  } finally {
    await stop(setup);
  }
});

test('a command whose key is empty or would leave its topic level is refused as invalid, logged with its offset, and committed past', async () => {
  const setup = await start();
  const { gw, kafka, topic, group } = setup;
  // Subscribed to every device's commands: an empty key must not reach it as `devices//commands`.
  const monitor = await connectCommandDevice(gw.mqttUrl, { clientId: 'monitor', filter: 'devices/+/commands' });
  try {
    await kafka.produce(topic, [
      { key: '', value: 'open' },
      { key: 'valve-9/commands', value: 'open' },
      { key: 'valve-9', value: 'open' },
    ]);
    await kafka.waitForCommitted(group, topic, (o) => o[0] === '3');
    assert.deepEqual(
      monitor.received.map((c) => c.topic),
      ['devices/valve-9/commands'],
    );
    const status = (await (await fetch(`${gw.adminUrl}/api/status`)).json()) as { counters: Record<string, number> };
    assert.equal(status.counters[`commands.invalid{bridge=${BRIDGE}}`], 2);
    assert.equal(await counter(gw, 'commands.expired'), 0);
    assert.equal(await counter(gw, 'commands.delivered'), 1);
    assert.equal(status.counters[`kafka.messages.invalid{bridge=${BRIDGE},topic=${topic}}`], 2);
    // The source's error names each record (partition, offset) with the reason; the sink warns once each.
    const committedPast = gw.logs.filter((l) => l['level'] === 50 && String(l['msg']).includes('refused for good; committing past it'));
    assert.deepEqual(
      committedPast.map((l) => [l['bridge'], l['partition'], l['offset']]),
      [
        [BRIDGE, 0, '0'],
        [BRIDGE, 0, '1'],
      ],
    );
    assert.match(String(committedPast[0]?.['msg']), /\$\{key\} is empty/);
    assert.match(String(committedPast[1]?.['msg']), /would add topic levels/);
    const sinkWarnings = gw.logs.filter((l) => l['sink'] === 'devices' && l['level'] === 40);
    assert.deepEqual(
      sinkWarnings.map((l) => l['key']),
      ['', 'valve-9/commands'],
    );
  } finally {
    await monitor.end();
    await stop(setup);
  }
});

test('a restart before the offset was committed sends no device a command it acked again: the command read again is known by its id', async () => {
  const setup = await start();
  const { gw, kafka, topic, group } = setup;
  // valve-1 holds its PUBACK: the partition's offset cannot move past its command.
  const holder = await connectCommandDevice(gw.mqttUrl, { clientId: 'valve-1', filter: 'devices/valve-1/commands/#', clean: false, holdAcks: true });
  const other = await connectCommandDevice(gw.mqttUrl, { clientId: 'valve-2', filter: 'devices/valve-2/commands/#' });
  await kafka.produce(topic, [
    { key: 'valve-1', value: 'open' },
    { key: 'valve-2', value: 'close' },
  ]);
  await holder.waitFor(1);
  await other.waitFor(1);
  await waitForCounter(gw, 'commands.delivered', 1);
  // Gone without a DISCONNECT, its PUBACK never sent (a graceful end waits for the held one).
  holder.client.end(true);
  await other.end();
  assert.deepEqual(await kafka.committed(group, topic), { 0: '-1' }, 'nothing committed: valve-1 never acked');
  await stop(setup);

  const restarted = await start({}, setup);
  const back = await connectCommandDevice(restarted.gw.mqttUrl, { clientId: 'valve-1', filter: 'devices/valve-1/commands/#', clean: false, subscribe: false });
  const again = await connectCommandDevice(restarted.gw.mqttUrl, { clientId: 'valve-2', filter: 'devices/valve-2/commands/#' });
  try {
    // Both commands are read again: valve-1's, never acked, comes once from its session;
    // valve-2's, acked before the restart, is not sent again.
    await restarted.kafka.waitForCommitted(group, topic, (o) => o[0] === '2');
    assert.equal(await counter(restarted.gw, 'commands.deduplicated'), 2);
    await restarted.kafka.produce(topic, [{ key: 'valve-2', value: 'open' }]);
    await again.waitFor(1);
    await restarted.kafka.waitForCommitted(group, topic, (o) => o[0] === '3');
    assert.deepEqual(
      again.received.map((c) => c.payload.toString()),
      ['open'],
    );
    assert.deepEqual(
      back.received.map((c) => c.payload.toString()),
      ['open'],
    );
  } finally {
    await Promise.all([back.end(), again.end()]);
    await stop(restarted);
  }
});
