import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, test } from 'node:test';
import { connect as connectMqtt, connectAsync } from 'mqtt';
import pino from 'pino';
import { createDelivery } from '../../src/core/delivery.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import { isFerryError } from '../../src/core/errors.ts';
import { deviceSink } from '../../src/mqtt/device-sink.ts';
import { EmbeddedBroker } from '../../src/mqtt/embedded-broker.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import type { PublishedCommand } from '../../src/mqtt/command-tracker.ts';
import { sinkConformance } from '../conformance/sink-suite.ts';
import { connectCommandDevice } from '../harness/command-device.ts';
import { devicesSinkOn } from '../harness/devices-sink.ts';
import { eventually } from '../harness/eventually.ts';
import { randomName } from '../harness/services.ts';
import { connectPacket, packet, subscribePacket } from '../harness/mqtt-wire.ts';

const counters = new CounterRegistry();
const broker = await EmbeddedBroker.start({ host: '127.0.0.1', port: 0, logger: pino({ level: 'silent' }), counters });
after(() => broker.close());
const url = `mqtt://127.0.0.1:${broker.port}`;

const sinkOf = (config: Record<string, unknown>) => devicesSinkOn(broker, counters, 'it-devices', config);

async function until(check: () => boolean, what: string): Promise<void> {
  await eventually(() => assert.ok(check(), what), { timeoutMs: 15_000 });
}

const silentCtx = { logger: pino({ level: 'silent' }), counters: new CounterRegistry(), dataDir: '/nonexistent', bridge: 'conformance' };

/**
 * A devices sink publishing to `${prefix}/${clientId}` on `on`, and an MQTT 5 device subscribed
 * to the prefix that acknowledges each command and notes its ferry-id.
 */
async function commandDestination(on: EmbeddedBroker = broker) {
  const prefix = `conformance/${randomName('cmd-')}`;
  const device = await connectAsync(url, { clientId: randomName('conformance-device-'), protocolVersion: 5, reconnectPeriod: 0 });
  const ids: string[] = [];
  device.on('message', (_topic, _payload, p) => ids.push(String(p.properties?.userProperties?.['ferry-id'])));
  await device.subscribeAsync(`${prefix}/#`, { qos: 1 });
  return {
    sink: deviceSink.create(deviceSink.schema.parse({ topic: `${prefix}/\${clientId}`, stopTimeoutMs: 500 }), silentCtx, { broker: on }),
    // A command is acked on the device's PUBACK, sent after the device has it.
    readBack: async () => [...ids],
    cleanup: async () => {
      await device.endAsync(true);
    },
  };
}

sinkConformance('devices (embedded broker)', {
  // One command per publish: the sink does not batch.
  batchSize: 1,
  working: () => commandDestination(),
  failing: async () => {
    // A broker that was shut down: publishing to it fails.
    const closed = await EmbeddedBroker.start({ host: '127.0.0.1', port: 0, logger: pino({ level: 'silent' }), counters: new CounterRegistry() });
    await closed.close();
    return { sink: deviceSink.create(deviceSink.schema.parse({ topic: 'conformance/${clientId}' }), silentCtx, { broker: closed }), cleanup: async () => {} };
  },
  unwritable: async () => {
    // Without a client id, `${clientId}` in the topic has no value: no retry can publish it.
    const poison = createEnvelope({ topic: 'devices/x/telemetry/t', payload: 'no client id', origin: { source: 'test' } });
    return { ...(await commandDestination()), poison };
  },
  flaky: async () => {
    // A controlled fault at the broker's publishCommand: aedes fails a publish only once it is
    // closed, and a closed embedded broker cannot be opened again under the same sink.
    let down = true;
    const faulty = {
      publishCommand: (command: Parameters<EmbeddedBroker['publishCommand']>[0]): PublishedCommand =>
        down ? { outcome: Promise.resolve({ status: 'failed', error: new Error('broker unavailable (test fault)') }), cancel: () => {} } : broker.publishCommand(command),
    } as unknown as EmbeddedBroker;
    return { ...(await commandDestination(faulty)), recover: () => void (down = false) };
  },
});

/** A device over a raw socket: it sees each PUBLISH's packet id and sends PUBACKs when told. */
async function rawDevice(clientId: string, filter: string) {
  const socket: Socket = connect(broker.port, '127.0.0.1');
  await once(socket, 'connect');
  const publishes: { id: number; topic: string; payload: string }[] = [];
  let subscribed = false;
  let buffered = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    for (;;) {
      let length = 0;
      let multiplier = 1;
      let i = 1;
      for (; i < buffered.length; i++) {
        length += ((buffered[i] as number) & 0x7f) * multiplier;
        multiplier *= 128;
        if (((buffered[i] as number) & 0x80) === 0) break;
      }
      if (i >= buffered.length || buffered.length < i + 1 + length) return;
      const type = (buffered[0] as number) >> 4;
      const body = buffered.subarray(i + 1, i + 1 + length);
      buffered = buffered.subarray(i + 1 + length);
      if (type === 9) subscribed = true;
      if (type !== 3) continue;
      const topicLength = body.readUInt16BE(0);
      publishes.push({ topic: body.subarray(2, 2 + topicLength).toString(), id: body.readUInt16BE(2 + topicLength), payload: body.subarray(4 + topicLength).toString() });
    }
  });
  socket.write(connectPacket(clientId));
  socket.write(subscribePacket(filter, 1));
  await until(() => subscribed, 'SUBACK received');
  return {
    publishes,
    puback: (id: number) => socket.write(packet(0x40, Buffer.from([id >> 8, id & 0xff]))),
    close: () => socket.destroy(),
  };
}

test('PUBACKs in reverse order settle the commands they belong to, not the oldest ones', async () => {
  const device = await rawDevice('ro-1', 'devices/ro-1/commands/#');
  const { send, events } = sinkOf({ topic: 'devices/${key}/commands/${header.name}' });
  try {
    const reboot = send('now', { key: 'ro-1', headers: { name: 'reboot' } });
    const blink = send('3', { key: 'ro-1', headers: { name: 'blink' } });
    await until(() => device.publishes.length === 2, 'both commands reached the device');
    const [first, second] = device.publishes;
    assert.deepEqual([first?.topic, first?.payload, second?.topic, second?.payload], ['devices/ro-1/commands/reboot', 'now', 'devices/ro-1/commands/blink', '3']);
    assert.notEqual(first?.id, second?.id);

    device.puback(second?.id as number);
    // The marker: the second command's PUBACK was handled; had it settled the first, that would show now.
    await until(() => blink.outcome() === 'acked', 'the second command is acked by its PUBACK');
    assert.equal(reboot.outcome(), 'pending', 'the first command was acked by the PUBACK of the second');
    device.puback(first?.id as number);
    await until(() => reboot.outcome() === 'acked', 'the first command is acked by its PUBACK');
    assert.deepEqual(
      events.map((e) => e.type),
      ['written', 'written'],
    );
  } finally {
    device.close();
  }
});

test('a topic that cannot be rendered or is not a valid MQTT topic is refused for good', async () => {
  const { send, events } = sinkOf({ topic: 'devices/${key}/commands' });
  const noKey = send('x');
  const wildcard = send('x', { key: 'a/+' });
  const nul = send('x', { key: 'a\u0000b' });
  for (const command of [noKey, wildcard, nul]) {
    const outcome = command.outcome();
    assert.ok(isFerryError(outcome, 'MESSAGE_REJECTED'), String(outcome));
    assert.equal(outcome.retryable, false);
  }
  assert.match(String((noKey.outcome() as Error).message), /cannot render the topic 'devices\/\$\{key\}\/commands'/);
  // A key is one topic level: its '/' and '+' may not choose another topic (issue 16, item 4).
  assert.match(String((wildcard.outcome() as Error).message), /\$\{key\} is "a\/\+", which has '\/'.*must stay within its topic level/);
  assert.equal(events.filter((e) => e.type === 'failed' && !e.retryable).length, 3);
  assert.equal(counters.get('commands.invalid{bridge=it-devices}'), 3);
});

test('a field with an empty value is refused for good, escaped or not; the same command delivered again is counted once', async () => {
  const before = counters.get('commands.invalid{bridge=it-devices}') ?? 0;
  const { send, input } = sinkOf({ topic: 'devices/${key}/commands/${header.name}' });
  const escaping = sinkOf({ topic: 'devices/${payload.device}/commands', onUnsafeTopicValue: 'escape' });
  // devices//commands/reboot, devices/e-1/commands/ and devices//commands: valid topics that name no device.
  const emptyKey = send('x', { key: '', headers: { name: 'reboot' } });
  const emptyHeader = send('x', { key: 'e-1', headers: { name: '' } });
  const emptyField = escaping.send('{"device":""}');
  for (const [command, field] of [
    [emptyKey, '${key}'],
    [emptyHeader, '${header.name}'],
    [emptyField, '${payload.device}'],
  ] as const) {
    const outcome = command.outcome();
    assert.ok(isFerryError(outcome, 'MESSAGE_REJECTED'), String(outcome));
    assert.equal(outcome.retryable, false);
    assert.ok(outcome.message.includes(`${field} is empty`), outcome.message);
  }
  assert.equal(counters.get('commands.invalid{bridge=it-devices}'), before + 3);

  // A Kafka source delivers a refused record once more by itself: refused again, not counted again.
  let again: Error | undefined;
  input.next(createDelivery(emptyKey.delivery.envelope, { onAck: () => assert.fail('acked'), onNack: (error) => (again = error) }));
  assert.ok(isFerryError(again, 'MESSAGE_REJECTED'), String(again));
  assert.equal(counters.get('commands.invalid{bridge=it-devices}'), before + 3);
});

test('QoS 0 commands are acked once handed to the broker; a device subscribed at QoS 0 only does not hold a QoS 1 command', async () => {
  const device = await connectCommandDevice(url, { clientId: 'q0-1', filter: 'devices/q0-1/commands/#' });
  await device.client.subscribeAsync('devices/q0-1/commands/#', { qos: 0 });
  try {
    const qos0 = sinkOf({ topic: 'devices/${key}/commands', qos: 0 });
    const fire = qos0.send('fire-and-forget', { key: 'q0-1' });
    await until(() => fire.outcome() === 'acked', 'acked after publish');
    const qos1 = sinkOf({ topic: 'devices/${key}/commands' });
    const took = qos1.send('at-most-once', { key: 'q0-1' });
    await until(() => took.outcome() === 'acked', 'acked: the device asked for QoS 0');
    const received = await device.waitFor(2);
    assert.deepEqual(
      received.map((c) => [c.payload.toString(), c.qos]),
      [
        ['fire-and-forget', 0],
        ['at-most-once', 0],
      ],
    );
  } finally {
    await device.end();
  }
});

test('on input completion the sink waits stopTimeoutMs for PUBACKs, then completes and leaves the rest unsettled', async () => {
  const device = await connectCommandDevice(url, { clientId: 'stop-1', filter: 'devices/stop-1/commands/#', holdAcks: true });
  try {
    const { send, input, completed } = sinkOf({ topic: 'devices/${key}/commands', stopTimeoutMs: 300 });
    const held = send('held', { key: 'stop-1' });
    await device.waitFor(1);
    input.complete();
    await until(completed, 'the sink completed after stopTimeoutMs');
    assert.equal(held.outcome(), 'pending', 'a command without PUBACK was settled on stop');
  } finally {
    device.releaseAcks();
    await device.end();
  }
});

test('an MQTT 5 device gets the command with its headers and id as user properties and its expiry; offline, from its session', async () => {
  const { send, subscription } = sinkOf({ topic: 'v5/${key}/cmd', expiryMs: 60_000 });
  const seen: { topic: string; properties: Record<string, unknown> | undefined }[] = [];
  const options = { clientId: 'v5-device', protocolVersion: 5 as const, clean: false, properties: { sessionExpiryInterval: 300 }, reconnectPeriod: 0 };
  let device = await connectAsync(url, options);
  device.on('message', (topic, _payload, p) => seen.push({ topic, properties: p.properties as Record<string, unknown> | undefined }));
  await device.subscribeAsync('v5/+/cmd', { qos: 1 });
  try {
    const live = send('open', { key: 'v5-device', headers: { 'correlation-id': 'c-1' } });
    await until(() => live.outcome() === 'acked', 'acked on the PUBACK of the MQTT 5 device');
    assert.deepEqual({ ...(seen[0]?.properties?.['userProperties'] as object) }, { 'correlation-id': 'c-1', 'ferry-id': live.delivery.envelope.id });
    const expiry = seen[0]?.properties?.['messageExpiryInterval'] as number;
    assert.ok(expiry > 55 && expiry <= 60, `message expiry ${expiry} s`);

    // Away, within its session expiry: the command waits in the session and comes on reconnect.
    await device.endAsync();
    const queued = send('close', { key: 'v5-device' });
    // Time is what is tested: the expiry the device gets must count the time the command waited.
    await sleep(1100);
    device = connectMqtt(url, options);
    device.on('message', (topic, _payload, p) => seen.push({ topic, properties: p.properties as Record<string, unknown> | undefined }));
    await until(() => queued.outcome() === 'acked', 'acked after the device came back');
    assert.equal(seen[1]?.topic, 'v5/v5-device/cmd');
    assert.deepEqual({ ...(seen[1]?.properties?.['userProperties'] as object) }, { 'ferry-id': queued.delivery.envelope.id });
    const remaining = seen[1]?.properties?.['messageExpiryInterval'] as number;
    assert.ok(remaining < 60 && remaining > 50, `remaining expiry ${remaining} s`);
  } finally {
    subscription.unsubscribe();
    await device.endAsync(true);
  }
});

test('an MQTT 5 device that answers a command with PUBACK 0x80 or more refuses it: counted, logged, acked upstream, not sent again', async () => {
  const { send, events, subscription } = sinkOf({ topic: 'v5r/${key}/cmd' });
  const seen: string[] = [];
  const device = await connectAsync(url, {
    clientId: 'v5-refuser',
    protocolVersion: 5,
    reconnectPeriod: 0,
    // The device's answer: 0x83 (implementation specific error) for "reboot", success otherwise.
    customHandleAcks: (_topic, message, _packet, done) => {
      seen.push(message.toString());
      done(message.toString() === 'reboot' ? 0x83 : 0);
    },
  });
  await device.subscribeAsync('v5r/+/cmd', { qos: 1 });
  try {
    const refused = send('reboot', { key: 'v5-refuser' });
    const taken = send('blink', { key: 'v5-refuser' });
    await until(() => refused.outcome() === 'acked' && taken.outcome() === 'acked', 'both settled upstream');
    assert.equal(counters.snapshot()['commands.refused{bridge=it-devices,reason=0x83}'], 1);
    const failed = events.filter((e) => e.type === 'failed');
    assert.equal(failed.length, 1);
    assert.match(failed[0]?.type === 'failed' ? failed[0].error.message : '', /refused by device 'v5-refuser' with PUBACK reason code 0x83/);
    // The marker: a later command on the same connection; a refused one sent again would come before it.
    const marker = send('marker', { key: 'v5-refuser' });
    await until(() => marker.outcome() === 'acked', 'the marker command settled');
    assert.deepEqual(seen, ['reboot', 'blink', 'marker']);
  } finally {
    subscription.unsubscribe();
    await device.endAsync(true);
  }
});

test("a refusal by a monitoring client does not speak for the device: the device's PUBACK settles the command", async () => {
  const { send, subscription } = sinkOf({ topic: 'v5m/${key}/cmd' });
  const monitor = await connectAsync(url, { clientId: 'v5-monitor', protocolVersion: 5, reconnectPeriod: 0, customHandleAcks: (_t, _m, _p, done) => done(0x80) });
  await monitor.subscribeAsync('v5m/#', { qos: 1 });
  const device = await connectAsync(url, { clientId: 'v5m-device', protocolVersion: 5, reconnectPeriod: 0 });
  await device.subscribeAsync('v5m/v5m-device/cmd', { qos: 1 });
  const before = counters.snapshot()['commands.refused{bridge=it-devices,reason=0x80}'] ?? 0;
  try {
    const command = send('on', { key: 'v5m-device' });
    await until(() => command.outcome() === 'acked', 'acked by the device');
    assert.equal(counters.snapshot()['commands.refused{bridge=it-devices,reason=0x80}'] ?? 0, before);
    // Alone, the monitor's refusal is the answer.
    const lonely = send('on', { key: 'nobody-but-the-monitor' });
    await until(() => lonely.outcome() === 'acked', 'settled by the refusal');
    assert.equal(counters.snapshot()['commands.refused{bridge=it-devices,reason=0x80}'], before + 1);
  } finally {
    subscription.unsubscribe();
    await Promise.all([monitor.endAsync(true), device.endAsync(true)]);
  }
});
