// A command every MQTT 5 device refused (a PUBACK reason code of 0x80 or more, or larger than
// the Maximum Packet Size it announced) is remembered in broker.db with its refusal: read again
// after a restart (Kafka delivers what it had not committed again), it is not sent again and
// counts as refused, with the same reason, as it did the first time; not as delivered. Real
// embedded brokers on one state file, stopped and started as a gateway's restart does, and real
// MQTT 5 devices.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { connectAsync, type MqttClient } from 'mqtt';
import pino from 'pino';
import { Subject } from 'rxjs';
import { createDelivery, type Delivery } from '../../src/core/delivery.ts';
import { createEnvelope, newId } from '../../src/core/envelope.ts';
import { deviceSink } from '../../src/mqtt/device-sink.ts';
import { BROKER_STATE_VERSION } from '../../src/mqtt/persistence/schema.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { startLoopbackBroker } from '../harness/embedded-broker.ts';
import { eventually } from '../harness/eventually.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-command-dedup-refused-');
const logger = pino({ level: 'silent' });

/** An embedded broker on the state file of `dir` with a devices sink sending to devices/<key>/commands. */
async function gatewayOn(dir: string) {
  const counters = new CounterRegistry();
  const broker = await startLoopbackBroker('sqlite', dir, logger, counters);
  const input = new Subject<Delivery>();
  const sink = deviceSink.create(
    deviceSink.schema.parse({ topic: 'devices/${key}/commands', expiryMs: 3_600_000 }),
    { logger, counters, dataDir: dir, bridge: 'commands' },
    { broker },
  );
  const subscription = sink(input).subscribe();
  /** A command to `device` with the message id `id`; `settled()` once the sink acked it upstream (committed past). */
  const send = (device: string, id: string, payload: string) => {
    let settled = false;
    input.next(
      createDelivery(createEnvelope({ id, topic: 'ferry.commands', key: device, payload, origin: { source: 'kafka' } }), { onAck: () => (settled = true), onNack: () => {} }),
    );
    return { settled: () => settled };
  };
  return {
    url: `mqtt://127.0.0.1:${broker.port}`,
    count: (metric: string) => counters.get(metric) ?? 0,
    send,
    stop: async () => {
      subscription.unsubscribe();
      await broker.close();
    },
  };
}
type Gateway = Awaited<ReturnType<typeof gatewayOn>>;

/** An MQTT 5 device subscribed to its commands at QoS 1 that refuses those starting with 'forbidden' with PUBACK 0x87 (Not authorized). */
async function refusingDevice(url: string, clientId: string, options: { clean?: boolean; maximumPacketSize?: number } = {}) {
  const seen: string[] = [];
  const client: MqttClient = await connectAsync(url, {
    clientId,
    protocolVersion: 5,
    reconnectPeriod: 0,
    clean: options.clean ?? true,
    // MQTT 5: a session outlives its connection only with a Session Expiry Interval.
    properties: {
      ...(options.clean === false ? { sessionExpiryInterval: 300 } : {}),
      ...(options.maximumPacketSize === undefined ? {} : { maximumPacketSize: options.maximumPacketSize }),
    },
    customHandleAcks: (_topic, message, _packet, done) => {
      seen.push(message.toString());
      done(message.toString().startsWith('forbidden') ? 0x87 : 0);
    },
  });
  await client.subscribeAsync(`devices/${clientId}/commands`, { qos: 1 });
  return { seen, end: () => client.endAsync(true) };
}

/** A new command after the others is the first `device` gets on its connection: none was sent again. */
async function nextIsFirst(gateway: Gateway, device: { seen: string[] }, clientId: string): Promise<void> {
  const before = gateway.count('commands.delivered{bridge=commands,qos=1}');
  const next = gateway.send(clientId, newId(), 'next');
  await eventually(() => assert.ok(next.settled()));
  assert.deepEqual(device.seen, ['next']);
  assert.equal(gateway.count('commands.delivered{bridge=commands,qos=1}'), before + 1);
}

/**
 * The command `x` (`payload`) refused by `clientId` on a first run, counted as refused for
 * `reason`; then a restart on the same broker.db, and `x` read again there: it is not sent
 * again, and counts as refused for `reason` again, not as delivered.
 */
async function refusedThenReadAgain(clientId: string, payload: string, reason: string, options: { clean?: boolean; maximumPacketSize?: number } = {}) {
  const dir = tempDir();
  const x = newId();
  let gateway: Gateway = await gatewayOn(dir);
  let device = await refusingDevice(gateway.url, clientId, options);
  try {
    const first = gateway.send(clientId, x, payload);
    await eventually(() => assert.ok(first.settled(), 'the refusal commits past it'));
    assert.equal(gateway.count(`commands.refused{bridge=commands,reason=${reason}}`), 1);
  } finally {
    await device.end();
    await gateway.stop();
  }

  gateway = await gatewayOn(dir);
  device = await refusingDevice(gateway.url, clientId, options);
  try {
    const again = gateway.send(clientId, x, payload);
    assert.equal(gateway.count('commands.deduplicated{bridge=commands,how=answered}'), 1, 'known from what broker.db keeps');
    await eventually(() => assert.ok(again.settled(), 'committed past it, as the first time'));
    assert.equal(gateway.count(`commands.refused{bridge=commands,reason=${reason}}`), 1, 'counted as the first read counted it');
    assert.equal(gateway.count('commands.delivered{bridge=commands,qos=1}'), 0, 'not claimed delivered');
    await nextIsFirst(gateway, device, clientId);
  } finally {
    await device.end();
    await gateway.stop();
  }
}

test('a command an MQTT 5 device refused with 0x87, read again after a restart, is not sent again and counts as refused (0x87) again, not as delivered', async () => {
  await refusedThenReadAgain('lock-3', 'forbidden: open', '0x87');
});

// A persistent session's copy leaves an answer when its PUBACK takes it from the session's queue,
// before the command's outcome is known (every client refused it): the refusal replaces it.
test('refused by a device with a persistent session (its PUBACK takes the copy from the session on disk), read again, it counts as refused again', async () => {
  await refusedThenReadAgain('gate-6', 'forbidden: raise', '0x87', { clean: false });
});

test('a command larger than the Maximum Packet Size of its device, read again after a restart, counts as refused (packet_too_large) again', async () => {
  await refusedThenReadAgain('tag-2', 'x'.repeat(500), 'packet_too_large', { maximumPacketSize: 200 });
});

test('broker.db of version 5 (answers without their refusal) is brought up to date: its answers still read, as delivered', async () => {
  const dir = tempDir();
  const x = newId();
  let gateway: Gateway = await gatewayOn(dir);
  let device = await refusingDevice(gateway.url, 'vent-8');
  const first = gateway.send('vent-8', x, 'forbidden: close');
  await eventually(() => assert.ok(first.settled()));
  await device.end();
  await gateway.stop();
  const db = new Database(join(dir, 'broker.db'));
  try {
    db.exec('ALTER TABLE commands_answered DROP COLUMN refusal; PRAGMA user_version = 5;');
  } finally {
    db.close();
  }

  gateway = await gatewayOn(dir);
  device = await refusingDevice(gateway.url, 'vent-8');
  try {
    const again = gateway.send('vent-8', x, 'forbidden: close');
    assert.equal(gateway.count('commands.deduplicated{bridge=commands,how=answered}'), 1, 'the old answer is read');
    await eventually(() => assert.ok(again.settled()));
    // Version 5 did not keep the refusal: the answer reads as that version read it.
    assert.equal(gateway.count('commands.delivered{bridge=commands,qos=1}'), 1);
    await nextIsFirst(gateway, device, 'vent-8');
  } finally {
    await device.end();
    await gateway.stop();
  }
  const migrated = new Database(join(dir, 'broker.db'), { readonly: true });
  try {
    assert.equal(migrated.pragma('user_version', { simple: true }), BROKER_STATE_VERSION);
    assert.ok((migrated.prepare('PRAGMA table_info(commands_answered)').all() as { name: string }[]).some((c) => c.name === 'refusal'));
  } finally {
    migrated.close();
  }
});
