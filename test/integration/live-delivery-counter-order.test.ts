// A live message reaches every connected subscriber even when a message published after it is
// delivered first. aedes numbers a message (broker counter) when its publish starts, and sends
// it to the subscribers once it is stored: a retained message, or a QoS 1/2 message queued for
// persistent sessions, waits for the broker state's commit at the end of the turn, while a
// later QoS 0 message goes out at once. aedes took a copy whose counter was below the last one
// it had sent the client for a duplicate and dropped it: lost for a clean session, left in a
// persistent session's queue until its next connection (aedes issue 994). Real embedded
// brokers, both persistences, real mqtt.js subscribers on loopback; the devices that publish
// write their packets on a raw socket, so that several arrive in one read.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { type Socket, createConnection } from 'node:net';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { type IClientOptions, type MqttClient, connect } from 'mqtt';
import pino from 'pino';
import type { Delivery } from '../../src/core/delivery.ts';
import { EmbeddedBroker } from '../../src/mqtt/embedded-broker.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { eventually } from '../harness/eventually.ts';
import { connectPacket, packet, publishPacket } from '../harness/mqtt-wire.ts';
import { tempDirs } from '../harness/temp.ts';

const dirs = tempDirs('ferry-live-order-');
const clients: MqttClient[] = [];
const sockets: Socket[] = [];
const brokers: EmbeddedBroker[] = [];
after(async () => {
  for (const c of clients) c.end(true);
  for (const s of sockets) s.destroy();
  await Promise.all(brokers.map((b) => b.close().catch(() => {})));
});

type Persistence = 'sqlite' | 'memory';

async function startGateway(persistence: Persistence, beforeListen?: (broker: EmbeddedBroker) => void): Promise<string> {
  const broker = await EmbeddedBroker.start({
    host: '127.0.0.1',
    port: 0,
    logger: pino({ level: 'silent' }),
    counters: new CounterRegistry(),
    ...(persistence === 'sqlite' ? { state: { path: join(dirs(), 'broker.db'), synchronous: 'normal' as const } } : {}),
    ...(beforeListen === undefined ? {} : { beforeListen }),
  });
  brokers.push(broker);
  return `mqtt://127.0.0.1:${broker.port}`;
}

function connected(client: MqttClient): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
  });
}

interface Subscriber {
  /** Payloads received, in order. */
  readonly seen: string[];
}

/** An MQTT 5 subscriber of `filter` at QoS 1: a clean session, or a persistent one. */
async function subscriber(url: string, clientId: string, filter: string, persistent: boolean): Promise<Subscriber> {
  const options: IClientOptions = persistent
    ? { clientId, protocolVersion: 5, reconnectPeriod: 0, clean: false, properties: { sessionExpiryInterval: 600 } }
    : { clientId, protocolVersion: 5, reconnectPeriod: 0, clean: true };
  const client = connect(url, options);
  clients.push(client);
  await connected(client);
  const seen: string[] = [];
  client.on('message', (_topic, payload) => seen.push(payload.toString()));
  await client.subscribeAsync(filter, { qos: 1 });
  return { seen };
}

/** A device on a raw MQTT 3.1.1 socket, connected (CONNACK read). */
async function rawDevice(url: string, clientId: string): Promise<Socket> {
  const { port } = new URL(url);
  const socket = createConnection({ host: '127.0.0.1', port: Number(port) });
  sockets.push(socket);
  await once(socket, 'connect');
  socket.write(connectPacket(clientId));
  const [connack] = (await once(socket, 'data')) as [Buffer];
  assert.equal(connack[0], 0x20, 'CONNACK');
  return socket;
}

/** A retained QoS 0 PUBLISH (publishPacket has no retain flag). */
function retainedPublish(topic: string, payload: string): Buffer {
  const plain = publishPacket(topic, Buffer.from(payload));
  return packet(0x31, plain.subarray(2));
}

async function receivedAll(who: string, sub: Subscriber, payloads: readonly string[]): Promise<void> {
  await eventually(
    () => {
      const seen = new Set(sub.seen);
      const missing = payloads.filter((p) => !seen.has(p));
      assert.equal(missing.length, 0, `${who} is missing ${missing.length} of ${payloads.length}: ${missing.slice(0, 10).join(', ')}`);
    },
    { timeoutMs: 5_000 },
  );
}

for (const persistence of ['sqlite', 'memory'] as const) {
  test(`[${persistence}] a retained message is delivered live though a later message, not retained, went out before it was stored`, async () => {
    const url = await startGateway(persistence);
    const clean = await subscriber(url, 'clean-sub', 'live/#', false);
    const kept = await subscriber(url, 'kept-sub', 'live/#', true);
    const device = await rawDevice(url, 'device-retained');
    // One read: the retained message is numbered first and waits for its store, the next one
    // does not wait.
    device.write(Buffer.concat([retainedPublish('live/state', 'retained-1'), publishPacket('live/reading', Buffer.from('plain-2'))]));
    await receivedAll('the clean session', clean, ['retained-1', 'plain-2']);
    await receivedAll('the persistent session', kept, ['retained-1', 'plain-2']);
  });

  test(`[${persistence}] a QoS 1 message queued for a persistent session is delivered live though a QoS 0 message published after it went out first`, async () => {
    const url = await startGateway(persistence);
    const clean = await subscriber(url, 'clean-sub', 'cmd/#', false);
    // Its session makes the QoS 1 message wait for its queued copy's commit.
    const kept = await subscriber(url, 'kept-sub', 'cmd/#', true);
    const device = await rawDevice(url, 'device-mixed');
    device.write(Buffer.concat([publishPacket('cmd/a', Buffer.from('qos1-1'), { qos: 1, id: 1 }), publishPacket('cmd/b', Buffer.from('qos0-2'))]));
    await receivedAll('the clean session', clean, ['qos1-1', 'qos0-2']);
    await receivedAll('the persistent session', kept, ['qos1-1', 'qos0-2']);
  });
}

test('[sqlite] 20 devices publishing QoS 1 and QoS 0 mixed through a bridge tap: each subscriber gets every message of each device, live', async () => {
  const DEVICES = 20;
  const MESSAGES = 100;
  // Stands in for the buffer: takes every device message and acknowledges it later, a batch
  // at a time, as its group commit does.
  let pending: Delivery[] = [];
  const url = await startGateway('sqlite', (broker) => {
    broker.tap('buffer', ['#']).subscribe((delivery) => {
      pending.push(delivery);
      if (pending.length > 1) return;
      setTimeout(() => {
        const batch = pending;
        pending = [];
        for (const d of batch) d.ack();
      }, 1);
    });
  });
  const clean = await subscriber(url, 'clean-sub', 'fleet/#', false);
  const kept = await subscriber(url, 'kept-sub', 'fleet/#', true);
  const devices = await Promise.all(
    Array.from({ length: DEVICES }, async (_, d) => {
      const client = connect(url, { clientId: `device-${d}`, protocolVersion: 5, reconnectPeriod: 0 });
      clients.push(client);
      await connected(client);
      return client;
    }),
  );
  const expected: string[] = [];
  await Promise.all(
    devices.map(async (client, d) => {
      for (let n = 0; n < MESSAGES; n++) {
        // QoS 1 and 0 in a fixed pattern (every third one QoS 0), retained now and then.
        const qos = n % 3 === 2 ? 0 : 1;
        const payload = `device-${d}:${n}`;
        expected.push(payload);
        const sent = client.publishAsync(`fleet/device-${d}/${n % 4}`, payload, { qos, retain: n % 10 === 0 });
        // a few PUBACKs waited for, so that the devices' messages interleave over many turns
        if (n % 25 === 24) await sent;
      }
    }),
  );
  await receivedAll('the clean session', clean, expected);
  await receivedAll('the persistent session', kept, expected);
  // and each once: no reconnect, so nothing is sent again
  assert.equal(clean.seen.length, expected.length);
  assert.equal(kept.seen.length, expected.length);
});

test("[sqlite] a message matching several of a subscriber's filters still reaches it once, between messages matching one", async () => {
  const url = await startGateway('sqlite');
  const client = connect(url, { clientId: 'overlapping', protocolVersion: 5, reconnectPeriod: 0 });
  clients.push(client);
  await connected(client);
  const seen: string[] = [];
  client.on('message', (_topic, payload) => seen.push(payload.toString()));
  await client.subscribeAsync(['site/#', 'site/+/alarm'], { qos: 1 });
  const device = await rawDevice(url, 'device-overlap');
  device.write(
    Buffer.concat([
      publishPacket('site/a/alarm', Buffer.from('both-1'), { qos: 1, id: 1 }),
      publishPacket('site/a/level', Buffer.from('one-2')),
      publishPacket('site/b/alarm', Buffer.from('both-3')),
      retainedPublish('site/c/alarm', 'both-4'),
      publishPacket('site/c/level', Buffer.from('one-5'), { qos: 1, id: 2 }),
    ]),
  );
  await receivedAll('the subscriber', { seen }, ['both-1', 'one-2', 'both-3', 'both-4', 'one-5']);
  // A second copy would have gone out with the first: once a message published after all of
  // them is there, any second copy is too.
  device.write(publishPacket('site/z/level', Buffer.from('marker'), { qos: 1, id: 3 }));
  await receivedAll('the subscriber', { seen }, ['marker']);
  assert.deepEqual([...seen].sort(), ['both-1', 'both-3', 'both-4', 'marker', 'one-2', 'one-5']);
});
