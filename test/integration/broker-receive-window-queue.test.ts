// Live QoS 1 messages to an MQTT 5 device whose Receive Maximum is reached wait for it to take
// more. For a persistent session they are in its queue in broker.db, acknowledged to their
// publishers: past the 1,000 kept waiting in memory they used to be discarded and removed from
// the session, lost. They now stay in the queue, sent when the device takes the others, or on
// its next connection. A clean session's are still discarded past that bound, and counted.
// Real embedded broker on SQLite, real mqtt.js devices on loopback.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import type { MqttClient } from 'mqtt';
import { stateBrokers, until } from '../harness/state-broker.ts';
import { tempDirs } from '../harness/temp.ts';

const dirs = tempDirs('ferry-receive-window-');
const { start, connectClient } = stateBrokers();

/** More than the 1,000 messages the broker keeps waiting for a device's Receive Maximum. */
const MESSAGES = 1200;
const RECEIVE_MAXIMUM = 2;

/**
 * A subscriber whose PUBACKs are held until `release`; `got` has the payloads it received, each
 * once. mqtt.js reads no further packet until its handler calls back: it has the first only.
 */
function holdAcks(client: MqttClient) {
  const got = new Set<string>();
  const held: (() => void)[] = [];
  let holding = true;
  client.handleMessage = (packet, callback) => {
    got.add(packet.payload.toString());
    if (holding) held.push(() => callback());
    else callback();
  };
  return {
    got,
    release() {
      holding = false;
      for (const ack of held.splice(0)) ack();
    },
  };
}

/**
 * Publishes the messages, acknowledged to the publisher once queued, and resolves when each was
 * handed to the device's connection: aedes hands a message to its subscribers one after another
 * (in the order they subscribed), each once the one before took it, so a watcher subscribed after
 * the device has it once the device's connection took it (sent, waiting, or left queued).
 */
async function publishAll(url: string): Promise<void> {
  const watcher = await connectClient(url, { clientId: 'watcher' });
  await watcher.client.subscribeAsync('feed/#', { qos: 1 });
  const publisher = await connectClient(url, { clientId: 'publisher', protocolVersion: 5 });
  await Promise.all(Array.from({ length: MESSAGES }, (_, i) => publisher.client.publishAsync('feed/x', String(i), { qos: 1 })));
  await publisher.client.endAsync();
  await until(() => watcher.seen.length === MESSAGES, 'the watcher has every message', 20_000);
  await watcher.client.endAsync();
}

const persistent = (clean: boolean) => ({
  clientId: 'slow',
  protocolVersion: 5 as const,
  clean,
  properties: { sessionExpiryInterval: 3600, receiveMaximum: RECEIVE_MAXIMUM },
});

test('a persistent session past 1,000 messages waiting for its Receive Maximum gets every one once it takes them', { timeout: 60_000 }, async () => {
  const gateway = await start(join(dirs(), 'broker.db'));
  const device = await connectClient(gateway.url, persistent(true));
  await device.client.subscribeAsync('feed/#', { qos: 1 });
  const slow = holdAcks(device.client);
  await publishAll(gateway.url);
  await until(() => slow.got.size === 1, 'the first message');
  slow.release();
  await until(() => slow.got.size === MESSAGES, `all ${MESSAGES} messages (got ${slow.got.size})`, 30_000);
  assert.equal(gateway.counters.snapshot()['mqtt.deliveries.discarded{reason=receive_queue_full}'], undefined, 'none discarded');
  await device.client.endAsync();
});

test('a persistent session past 1,000 messages waiting for its Receive Maximum gets every one on its next connection', { timeout: 60_000 }, async () => {
  const gateway = await start(join(dirs(), 'broker.db'));
  const device = await connectClient(gateway.url, persistent(true));
  await device.client.subscribeAsync('feed/#', { qos: 1 });
  const slow = holdAcks(device.client);
  await publishAll(gateway.url);
  await until(() => slow.got.size === 1, 'the first message');
  // The device drops without acknowledging anything, and comes back.
  device.client.end(true);
  await until(() => gateway.broker.connectedClients === 0, 'the device gone');
  // (mqtt.js acknowledges each message as it comes)
  const back = await connectClient(gateway.url, persistent(false));
  const got = () => new Set(back.seen).size;
  await until(() => got() === MESSAGES, `all ${MESSAGES} messages (got ${got()})`, 30_000);
  assert.equal(gateway.counters.snapshot()['mqtt.deliveries.discarded{reason=receive_queue_full}'], undefined, 'none discarded');
  await back.client.endAsync();
});

test('a clean session past 1,000 messages waiting for its Receive Maximum: the rest are discarded, and counted', { timeout: 60_000 }, async () => {
  const gateway = await start(join(dirs(), 'broker.db'));
  const device = await connectClient(gateway.url, { clientId: 'clean', protocolVersion: 5, properties: { receiveMaximum: RECEIVE_MAXIMUM } });
  await device.client.subscribeAsync('feed/#', { qos: 1 });
  const slow = holdAcks(device.client);
  await publishAll(gateway.url);
  const discarded = () => gateway.counters.snapshot()['mqtt.deliveries.discarded{reason=receive_queue_full}'] ?? 0;
  await until(() => discarded() === MESSAGES - 1000 - RECEIVE_MAXIMUM, `the ${MESSAGES - 1000 - RECEIVE_MAXIMUM} past the bound counted (${discarded()})`);
  slow.release();
  await until(() => slow.got.size === 1000 + RECEIVE_MAXIMUM, 'those kept');
  await device.client.endAsync();
});
