// Issue 12: MQTT 5 the way devices expect it, against `ferry run` with mqtt.js v5 clients.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, test } from 'node:test';
import mqtt, { type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import { type RunningFerry, startFerry } from '../harness/ferry-process.ts';
import { writeGatewayTree } from '../harness/gateway-tree.ts';
import { randomName } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-issue12-');
let gw: RunningFerry;
const clients: MqttClient[] = [];

before(async () => {
  const root = tempDir();
  gw = await startFerry(['--config', writeGatewayTree(root, '{allowAnonymous: true}', {}), '--data-dir', join(root, 'data')]);
});

after(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true)));
  gw.child.kill('SIGTERM');
  await gw.exited;
});

/** An MQTT 5 client, with a packet log attached before CONNECT (queued messages come with the CONNACK). */
async function connect(clientId: string, options: IClientOptions = {}): Promise<{ client: MqttClient; packets: IPublishPacket[]; sessionPresent: boolean }> {
  const client = mqtt.connect(gw.mqttUrl, { clientId, protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 5000, ...options });
  clients.push(client);
  const packets: IPublishPacket[] = [];
  client.on('message', (_topic, _payload, packet) => packets.push(packet));
  const connack = await new Promise<{ sessionPresent: boolean }>((resolve, reject) => {
    client.once('connect', (packet) => resolve(packet));
    client.once('error', reject);
  });
  return { client, packets, sessionPresent: connack.sessionPresent };
}

async function until(what: string, check: () => boolean): Promise<void> {
  for (const end = Date.now() + 10_000; !check(); await sleep(20)) if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
}

test('a will reaches MQTT 5 subscribers without the Will Delay Interval, which is valid only in CONNECT', async () => {
  const topic = `wills/${randomName('w-')}`;
  const watcher = await connect(randomName('watcher-'));
  await watcher.client.subscribeAsync(topic, { qos: 1 });
  const dying = await connect(randomName('dying-'), {
    will: { topic, payload: Buffer.from('gone'), qos: 1, retain: false, properties: { willDelayInterval: 1, contentType: 'text/plain' } },
  });
  dying.client.stream.destroy();
  await until('the will', () => watcher.packets.length > 0);
  const will = watcher.packets[0] as IPublishPacket;
  assert.equal(will.payload.toString(), 'gone');
  assert.equal((will.properties as Record<string, unknown> | undefined)?.['willDelayInterval'], undefined);
  assert.equal(will.properties?.contentType, 'text/plain', 'the PUBLISH properties of the will stay');
});

for (const [label, reconnect] of [
  ['no Session Expiry Interval', {}],
  ['a Session Expiry Interval of 0', { properties: { sessionExpiryInterval: 0 } }],
  ['a Session Expiry Interval', { properties: { sessionExpiryInterval: 300 } }],
] as const) {
  test(`a device back for its session with Clean Start 0 and ${label} gets the QoS 1 messages queued for it, once`, async () => {
    const id = randomName('dev-');
    const topic = `cmd/${id}`;
    const first = await connect(id, { clean: false, properties: { sessionExpiryInterval: 99_999 } });
    await first.client.subscribeAsync(topic, { qos: 1 });
    await first.client.endAsync();
    const sender = await connect(randomName('sender-'));
    for (const n of [1, 2, 3]) await sender.client.publishAsync(topic, `m${n}`, { qos: 1, properties: { messageExpiryInterval: 600 } });
    const back = await connect(id, { clean: false, ...reconnect });
    assert.equal(back.sessionPresent, true);
    await until('the queued messages', () => back.packets.length >= 3);
    // A marker after them: nothing more (no second copy) may arrive before it.
    await sender.client.publishAsync(topic, 'marker', { qos: 1 });
    await until('the marker', () => back.packets.some((p) => p.payload.toString() === 'marker'));
    assert.deepEqual(
      back.packets.map((p) => p.payload.toString()),
      ['m1', 'm2', 'm3', 'marker'],
    );
  });
}
