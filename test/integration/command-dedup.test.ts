// A command its source delivers again (Kafka reads what it had not committed again after a
// restart: the same record, the same message id) reaches its device once. The broker keeps, in
// broker.db, which commands sessions still hold and which a device answered. Real embedded
// brokers on one state file, stopped and started as a gateway's restart does, and real MQTT
// devices.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import pino from 'pino';
import { Subject } from 'rxjs';
import { createDelivery, type Delivery } from '../../src/core/delivery.ts';
import { createEnvelope, newId } from '../../src/core/envelope.ts';
import { deviceSink } from '../../src/mqtt/device-sink.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { type CommandDevice, connectCommandDevice } from '../harness/command-device.ts';
import { type BrokerPersistence, startLoopbackBroker } from '../harness/embedded-broker.ts';
import { eventually } from '../harness/eventually.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-command-dedup-');
const logger = pino({ level: 'silent' });

/** An embedded broker on the state file of `dir` with a devices sink sending to devices/<key>/commands. */
async function gatewayOn(dir: string, persistence: BrokerPersistence = 'sqlite', expiryMs = 3_600_000) {
  const counters = new CounterRegistry();
  const broker = await startLoopbackBroker(persistence, dir, logger, counters);
  const input = new Subject<Delivery>();
  const sink = deviceSink.create(deviceSink.schema.parse({ topic: 'devices/${key}/commands', expiryMs }), { logger, counters, dataDir: dir, bridge: 'commands' }, { broker });
  const subscription = sink(input).subscribe();
  /** A command to `device` with the message id `id`; its outcome: 'pending' until the sink acks it. */
  const send = (device: string, id: string, payload: string) => {
    let acked = false;
    input.next(
      createDelivery(createEnvelope({ id, topic: 'ferry.commands', key: device, payload, origin: { source: 'kafka' } }), { onAck: () => (acked = true), onNack: () => {} }),
    );
    return { acked: () => acked };
  };
  return {
    url: `mqtt://127.0.0.1:${broker.port}`,
    counters,
    send,
    stop: async () => {
      subscription.unsubscribe();
      await broker.close();
    },
  };
}

/** The copies the session of `clientId` holds in broker.db, as another process reads it. */
function queued(dir: string, clientId: string): number {
  const db = new Database(join(dir, 'broker.db'), { readonly: true });
  try {
    return db.prepare('SELECT count(*) FROM queue WHERE client_id = ?').pluck().get(clientId) as number;
  } finally {
    db.close();
  }
}

/**
 * A gateway that queued `commands` (id, payload) for the offline persistent session of `device`
 * (their expiry `expiryMs` away) and was stopped, and the one started after it on the same broker.db.
 */
async function queuedThenRestarted(device: string, commands: readonly (readonly [string, string])[], expiryMs?: number) {
  const dir = tempDir();
  const before = await gatewayOn(dir, 'sqlite', expiryMs);
  const away = await connectCommandDevice(before.url, { clientId: device, filter: `devices/${device}/commands`, clean: false });
  await away.end();
  for (const [id, payload] of commands) before.send(device, id, payload);
  // Queued in the session, and not acked: nobody took them.
  await eventually(() => assert.equal(queued(dir, device), commands.length));
  await before.stop();
  return { dir, gateway: await gatewayOn(dir) };
}

/** A new command after the others: once `device` has it (the `total`th), it has all it gets. */
async function oneMore(gateway: Awaited<ReturnType<typeof gatewayOn>>, device: CommandDevice, clientId: string, payload: string, total: number): Promise<void> {
  const next = gateway.send(clientId, newId(), payload);
  await device.waitFor(total);
  await eventually(() => assert.ok(next.acked()));
}

const payloads = (device: { received: { payload: Buffer }[] }) => device.received.map((c) => c.payload.toString());

/**
 * `x` delivered again to the gateway started after `queuedThenRestarted`, then `device` back:
 * it gets `x` once, whose PUBACK settles the delivery. `held`: the first run's copy is taken for it.
 */
async function deliveredAgainThenBack(gateway: Awaited<ReturnType<typeof gatewayOn>>, device: string, [x, payload]: readonly [string, string], held: boolean): Promise<void> {
  try {
    const again = gateway.send(device, x, payload);
    assert.equal(gateway.counters.get('commands.deduplicated{bridge=commands,how=held}') ?? 0, held ? 1 : 0);
    const back = await connectCommandDevice(gateway.url, { clientId: device, filter: `devices/${device}/commands`, clean: false, subscribe: false });
    try {
      await back.waitFor(1);
      await eventually(() => assert.ok(again.acked(), "the copy's PUBACK settles it"));
      await oneMore(gateway, back, device, 'next', 2);
      assert.deepEqual(payloads(back), [payload, 'next']);
    } finally {
      await back.end();
    }
  } finally {
    await gateway.stop();
  }
}

test('a command a device acked is not sent again when its source delivers it again after a restart: it counts as delivered at once', async () => {
  const dir = tempDir();
  const x = newId();
  let gateway = await gatewayOn(dir);
  let device = await connectCommandDevice(gateway.url, { clientId: 'valve-1', filter: 'devices/valve-1/commands' });
  const first = gateway.send('valve-1', x, 'open');
  await device.waitFor(1);
  await eventually(() => assert.ok(first.acked()));
  await device.end();
  await gateway.stop();

  gateway = await gatewayOn(dir);
  device = await connectCommandDevice(gateway.url, { clientId: 'valve-1', filter: 'devices/valve-1/commands' });
  try {
    const again = gateway.send('valve-1', x, 'open');
    assert.equal(gateway.counters.get('commands.deduplicated{bridge=commands,how=answered}'), 1, 'known from what broker.db keeps');
    await eventually(() => assert.ok(again.acked()));
    // A new command after it is the first the device gets on this connection.
    await oneMore(gateway, device, 'valve-1', 'close', 1);
    assert.deepEqual(payloads(device), ['close']);
  } finally {
    await device.end();
    await gateway.stop();
  }
});

// Its device subscribed at QoS 0 only: the command went out at QoS 0 and counted as delivered
// (`sent`), at most once. Sent again, the device got it twice.
test('a command sent at QoS 0 only (its device subscribed at QoS 0) is not sent again when its source delivers it again after a restart', async () => {
  const dir = tempDir();
  const x = newId();
  const filter = 'devices/siren-1/commands';
  let gateway = await gatewayOn(dir);
  let device = await connectCommandDevice(gateway.url, { clientId: 'siren-1', filter, subscribe: false });
  await device.client.subscribeAsync(filter, { qos: 0 });
  const first = gateway.send('siren-1', x, 'sound');
  await device.waitFor(1);
  await eventually(() => assert.ok(first.acked()));
  assert.equal(gateway.counters.get('commands.delivered{bridge=commands,qos=0}'), 1);
  await device.end();
  await gateway.stop();

  gateway = await gatewayOn(dir);
  device = await connectCommandDevice(gateway.url, { clientId: 'siren-1', filter, subscribe: false });
  await device.client.subscribeAsync(filter, { qos: 0 });
  try {
    const again = gateway.send('siren-1', x, 'sound');
    assert.equal(gateway.counters.get('commands.deduplicated{bridge=commands,how=answered}'), 1, 'known from what broker.db keeps');
    await eventually(() => assert.ok(again.acked()));
    // Counted as it was delivered: at QoS 0, not as a PUBACK.
    assert.equal(gateway.counters.get('commands.delivered{bridge=commands,qos=0}'), 1);
    assert.equal(gateway.counters.get('commands.delivered{bridge=commands,qos=1}') ?? 0, 0);
    // A new command after it is the first the device gets on this connection.
    await oneMore(gateway, device, 'siren-1', 'silence', 1);
    assert.deepEqual(payloads(device), ['silence']);
  } finally {
    await device.end();
    await gateway.stop();
  }
});

/** Makes broker.db in `dir` as version 4 left it: its answers keep no QoS. */
function asVersion4(dir: string): void {
  const db = new Database(join(dir, 'broker.db'));
  try {
    db.exec(`
      CREATE TABLE answered_v4 (command_key TEXT PRIMARY KEY, client_id TEXT NOT NULL, expires_at INTEGER NOT NULL) WITHOUT ROWID;
      INSERT INTO answered_v4 SELECT command_key, client_id, expires_at FROM commands_answered;
      DROP TABLE commands_answered;
      ALTER TABLE answered_v4 RENAME TO commands_answered;
      CREATE INDEX commands_answered_expiry ON commands_answered (expires_at);
      PRAGMA user_version = 4;
    `);
  } finally {
    db.close();
  }
}

test('an answer kept by an earlier version (without its QoS) still reads: the command is not sent again, and counts as delivered at qos unknown', async () => {
  const dir = tempDir();
  const x = newId();
  let gateway = await gatewayOn(dir);
  let device = await connectCommandDevice(gateway.url, { clientId: 'horn-2', filter: 'devices/horn-2/commands' });
  const first = gateway.send('horn-2', x, 'honk');
  await device.waitFor(1);
  await eventually(() => assert.ok(first.acked()));
  await device.end();
  await gateway.stop();
  asVersion4(dir);

  gateway = await gatewayOn(dir);
  device = await connectCommandDevice(gateway.url, { clientId: 'horn-2', filter: 'devices/horn-2/commands' });
  try {
    const again = gateway.send('horn-2', x, 'honk');
    assert.equal(gateway.counters.get('commands.deduplicated{bridge=commands,how=answered}'), 1, 'the old answer is read');
    await eventually(() => assert.ok(again.acked()));
    assert.equal(gateway.counters.get('commands.delivered{bridge=commands,qos=unknown}'), 1);
    assert.equal(gateway.counters.get('commands.delivered{bridge=commands,qos=1}') ?? 0, 0, 'not claimed as a PUBACK it may not have been');
    await oneMore(gateway, device, 'horn-2', 'quiet', 1);
    assert.deepEqual(payloads(device), ['quiet']);
  } finally {
    await device.end();
    await gateway.stop();
  }
});

test('a command queued for an offline device and delivered again after a restart reaches the device once; its PUBACK settles the new delivery', async () => {
  const x = newId();
  const { gateway } = await queuedThenRestarted('pump-7', [[x, 'start']]);
  await deliveredAgainThenBack(gateway, 'pump-7', [x, 'start'], true);
});

test('a device that came back before its commands are delivered again gets each once: the PUBACKs of the copies it was sent settle them', async () => {
  const [x, y] = [newId(), newId()];
  const { gateway } = await queuedThenRestarted('fan-2', [
    [x, 'on'],
    [y, 'fast'],
  ]);
  // Back first: the first copy is sent from the session, its PUBACK held (and so the second,
  // which mqtt.js reads only after it).
  const back = await connectCommandDevice(gateway.url, { clientId: 'fan-2', filter: 'devices/fan-2/commands', clean: false, subscribe: false, holdAcks: true });
  try {
    await back.waitFor(1);
    const againX = gateway.send('fan-2', x, 'on');
    const againY = gateway.send('fan-2', y, 'fast');
    assert.equal(gateway.counters.get('commands.deduplicated{bridge=commands,how=held}'), 2);
    back.releaseAcks();
    await back.waitFor(2);
    await eventually(() => assert.ok(againX.acked() && againY.acked(), 'the PUBACKs of the copies sent before settle them'));
    await oneMore(gateway, back, 'fan-2', 'off', 3);
    assert.deepEqual(payloads(back), ['on', 'fast', 'off']);
  } finally {
    await back.end();
    await gateway.stop();
  }
});

test("a copy the device acked before its command is delivered again is the command's answer: it is not sent again", async () => {
  const x = newId();
  const { dir, gateway } = await queuedThenRestarted('door-4', [[x, 'lock']]);
  const back = await connectCommandDevice(gateway.url, { clientId: 'door-4', filter: 'devices/door-4/commands', clean: false, subscribe: false });
  try {
    await back.waitFor(1);
    // Acked and taken from the session before the source delivers it again.
    await eventually(() => assert.equal(queued(dir, 'door-4'), 0));
    const again = gateway.send('door-4', x, 'lock');
    assert.equal(gateway.counters.get('commands.deduplicated{bridge=commands,how=answered}'), 1);
    await eventually(() => assert.ok(again.acked()));
    await oneMore(gateway, back, 'door-4', 'unlock', 2);
    assert.deepEqual(payloads(back), ['lock', 'unlock']);
  } finally {
    await back.end();
    await gateway.stop();
  }
});

test('a copy whose expiry passed while the gateway was down is not taken for the command: the command read again is sent, once', async () => {
  const x = newId();
  const { gateway } = await queuedThenRestarted('bulb-9', [[x, 'dim']], 300);
  // The copy queued by the first run expires (the broker does not send it).
  await sleep(400);
  await deliveredAgainThenBack(gateway, 'bulb-9', [x, 'dim'], false);
});

// The copy the first run queued expires when that run's expiry says: the command read again and
// adopting it waits no longer than that, not for an expiry counted again from the second read.
test('a command delivered again after a restart that adopts a queued copy expires with that copy, not a full expiry later', async () => {
  const x = newId();
  const { gateway } = await queuedThenRestarted('boiler-5', [[x, 'heat']], 4000);
  try {
    // The second run's expiry is an hour away; the copy's, a few seconds.
    const again = gateway.send('boiler-5', x, 'heat');
    assert.equal(gateway.counters.get('commands.deduplicated{bridge=commands,how=held}'), 1, 'the copy is adopted');
    await eventually(() => assert.ok(again.acked(), 'dropped with its copy and committed past'), { timeoutMs: 20_000 });
    assert.equal(gateway.counters.get('commands.expired{bridge=commands,reason=expired}'), 1);
  } finally {
    await gateway.stop();
  }
});

// A shared subscription's member (clean session) that left without its PUBACK answered nothing:
// the command is dropped (no_share_member) but not remembered, so read again it is sent again
// (at least once), to a member back by then.
test('a command dropped as no_share_member is sent again when its source delivers it again: a member may be back', async () => {
  const dir = tempDir();
  const x = newId();
  const filter = '$share/workers/devices/crane-1/commands';
  const gateway = await gatewayOn(dir);
  const member = await connectCommandDevice(gateway.url, { clientId: 'worker-a', filter, holdAcks: true });
  let back: CommandDevice | undefined;
  try {
    const first = gateway.send('crane-1', x, 'lift');
    await member.waitFor(1);
    // Gone without its PUBACK (no DISCONNECT): no other member is left to take it.
    member.client.stream.destroy();
    await eventually(() => assert.ok(first.acked()));
    assert.equal(gateway.counters.get('commands.expired{bridge=commands,reason=no_share_member}'), 1);
    back = await connectCommandDevice(gateway.url, { clientId: 'worker-b', filter });
    const again = gateway.send('crane-1', x, 'lift');
    await back.waitFor(1);
    await eventually(() => assert.ok(again.acked(), "the new member's PUBACK settles it"));
    assert.equal(gateway.counters.get('commands.deduplicated{bridge=commands,how=answered}') ?? 0, 0);
    assert.equal(gateway.counters.get('commands.delivered{bridge=commands,qos=1}'), 1);
  } finally {
    await member.end();
    await back?.end();
    await gateway.stop();
  }
});

test('with mqtt.persistence: memory nothing is kept: a command delivered again is sent again (at least once)', async () => {
  const dir = tempDir();
  const x = newId();
  const gateway = await gatewayOn(dir, 'memory');
  const device = await connectCommandDevice(gateway.url, { clientId: 'lamp-1', filter: 'devices/lamp-1/commands' });
  try {
    const first = gateway.send('lamp-1', x, 'on');
    await device.waitFor(1);
    await eventually(() => assert.ok(first.acked()));
    const again = gateway.send('lamp-1', x, 'on');
    await device.waitFor(2);
    await eventually(() => assert.ok(again.acked()));
    assert.equal(gateway.counters.get('commands.deduplicated{bridge=commands,how=answered}') ?? 0, 0);
  } finally {
    await device.end();
    await gateway.stop();
  }
});
