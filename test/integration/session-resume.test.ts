// A persistent session resumed while messages for it are being published: each message was
// queued for the session while it was away, and reaches it by the queue the resume reads or by
// the subscription the resume restored first, live. It must come by one of them, once, in the
// order published, and the connection must stay up (a second copy used to find the first one's
// PUBACK had cleared the queue and close the connection). And QoS 2 exchanges completed on a
// resumed session leave nothing to send again. Real aedes, both persistences, on loopback.
import assert from 'node:assert/strict';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, test } from 'node:test';
import { type MqttClient, connect } from 'mqtt';
import mqttPacket from 'mqtt-packet';
import pino from 'pino';
import { EmbeddedBroker } from '../../src/mqtt/embedded-broker.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { tempDirs } from '../harness/temp.ts';

const dirs = tempDirs('ferry-session-resume-');
const clients: MqttClient[] = [];
const brokers: EmbeddedBroker[] = [];
after(async () => {
  for (const c of clients) c.end(true);
  await Promise.all(brokers.map((b) => b.close().catch(() => {})));
});

async function client(url: string, clientId: string, clean: boolean, onMessage?: (payload: string) => void): Promise<MqttClient> {
  const c = connect(url, { clientId, clean, reconnectPeriod: 0, connectTimeout: 5000 });
  clients.push(c);
  if (onMessage !== undefined) c.on('message', (_topic, payload) => onMessage(payload.toString()));
  await new Promise<void>((resolve, reject) => {
    c.once('connect', () => resolve());
    c.once('error', reject);
  });
  return c;
}

async function startBroker(persistence: 'sqlite' | 'memory', counters = new CounterRegistry(), resumeHeldLimit?: number): Promise<{ broker: EmbeddedBroker; url: string }> {
  const broker = await EmbeddedBroker.start({
    ...(resumeHeldLimit === undefined ? {} : { resumeHeldLimit }),
    host: '127.0.0.1',
    port: 0,
    logger: pino({ level: 'silent' }),
    counters,
    ...(persistence === 'sqlite' ? { state: { path: join(dirs(), 'broker.db'), synchronous: 'normal' as const } } : {}),
  });
  brokers.push(broker);
  return { broker, url: `mqtt://127.0.0.1:${broker.port}` };
}

/**
 * Resumes session `clientId` on a raw MQTT 3.1.1 connection that answers each QoS 2 PUBLISH
 * with PUBREC and each PUBREL with PUBCOMP at once; returns every packet received, as
 * "cmd messageId payload", within `ms`.
 */
async function rawSession(port: number, clientId: string, ms: number): Promise<string[]> {
  const socket = createConnection({ port, host: '127.0.0.1' });
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  const seen: string[] = [];
  parser.on('packet', (p) => {
    const id = 'messageId' in p ? (p.messageId ?? 0) : undefined;
    seen.push([p.cmd, id, p.cmd === 'publish' ? p.payload.toString() : undefined].filter((x) => x !== undefined).join(' '));
    if (p.cmd === 'publish') socket.write(mqttPacket.generate({ cmd: 'pubrec', messageId: id ?? 0 }));
    if (p.cmd === 'pubrel') socket.write(mqttPacket.generate({ cmd: 'pubcomp', messageId: id ?? 0 }));
  });
  socket.on('data', (chunk) => parser.parse(chunk));
  socket.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: false, clientId, keepalive: 60 }));
  await sleep(ms);
  socket.destroy();
  await sleep(50);
  return seen;
}

for (const persistence of ['sqlite', 'memory'] as const) {
  test(`${persistence}: QoS 2 exchanges completed on a resumed session, PUBRECs in a row, leave nothing to send again`, async () => {
    const { broker, url } = await startBroker(persistence);
    const first = await client(url, 'q2-resumer', false);
    await first.subscribeAsync('cmd/q2', { qos: 2 });
    await first.endAsync();
    const publisher = await client(url, 'q2-publisher', true);
    for (const payload of ['a', 'b', 'c']) await publisher.publishAsync('cmd/q2', payload, { qos: 2 });
    const resumed = await rawSession(broker.port, 'q2-resumer', 500);
    const publishes = resumed.filter((p) => p.startsWith('publish'));
    assert.deepEqual(
      publishes.map((p) => p.split(' ')[2]),
      ['a', 'b', 'c'],
    );
    // Each PUBLISH's own PUBREL, once: a PUBREC must not move another message's exchange.
    const ids = publishes.map((p) => p.split(' ')[1]);
    assert.deepEqual(resumed.filter((p) => p.startsWith('pubrel')).sort(), ids.map((id) => `pubrel ${id}`).sort());
    assert.deepEqual(await rawSession(broker.port, 'q2-resumer', 300), ['connack'], 'sent again after its exchange completed');
    await publisher.endAsync();
  });

  test(`${persistence}: a live message with Retain As Published, acknowledged, is not sent again when the session resumes`, async () => {
    const { url } = await startBroker(persistence);
    const v5 = { protocolVersion: 5 as const, properties: { sessionExpiryInterval: 300 } };
    const seen: string[] = [];
    const first = connect(url, { clientId: 'rap-resumer', clean: false, reconnectPeriod: 0, ...v5 });
    clients.push(first);
    first.on('message', (_topic, payload) => seen.push(payload.toString()));
    await new Promise((resolve) => first.once('connect', resolve));
    await first.subscribeAsync('cmd/rap', { qos: 1, rap: true });
    const publisher = await client(url, 'rap-publisher', true);
    await publisher.publishAsync('cmd/rap', 'kept', { qos: 1, retain: true });
    for (const end = Date.now() + 5000; seen.length === 0 && Date.now() < end; ) await sleep(20);
    assert.deepEqual(seen, ['kept']);
    await sleep(100); // its PUBACK reaches the broker
    await first.endAsync();
    const again: string[] = [];
    const back = connect(url, { clientId: 'rap-resumer', clean: false, reconnectPeriod: 0, ...v5 });
    clients.push(back);
    back.on('message', (_topic, payload) => again.push(payload.toString()));
    await new Promise((resolve) => back.once('connect', resolve));
    await sleep(500);
    assert.deepEqual(again, [], 'an acknowledged message came again');
    await back.endAsync();
    await publisher.endAsync();
  });

  // held 4: more live messages come while the queue is read than the session holds back, so
  // the queue (which has them too) is read again, as often as that happens.
  for (const [qos, held] of [[1], [2], [1, 4]] as const) {
    const heldNote = held === undefined ? '' : `, holding back ${held} live messages at most`;
    test(`${persistence}, QoS ${qos}${heldNote}: a session resumed while its messages are published gets each once, in order, and stays connected`, async () => {
      const counters = new CounterRegistry();
      const { url } = await startBroker(persistence, counters, held);
      const first = await client(url, 'resumer', false);
      await first.subscribeAsync('cmd/resumer', { qos });
      await first.endAsync();

      const publisher = await client(url, 'publisher', true);
      const total = 600;
      const sent: Promise<unknown>[] = [];
      const received: string[] = [];
      let device: MqttClient | undefined;
      let closed = 0;
      // The device comes back a third of the way in: messages before are queued, those while
      // its queue is read race the live subscription, the rest go live.
      for (let i = 0; i < total; i++) {
        sent.push(publisher.publishAsync('cmd/resumer', String(i), { qos }));
        if (i === total / 3) {
          device = await client(url, 'resumer', false, (payload) => received.push(payload));
          device.on('close', () => (closed += 1));
        }
        if (i % 20 === 0) await sleep(1);
      }
      await Promise.all(sent);
      for (const end = Date.now() + 10_000; received.length < total && closed === 0 && Date.now() < end; ) await sleep(20);
      await sleep(200);
      assert.equal(closed, 0, `the resumed connection was closed (${received.length} of ${total} received)`);
      assert.equal(counters.get('mqtt.connections.errors'), 0);
      assert.deepEqual(
        received.map(Number),
        Array.from({ length: total }, (_, i) => i),
        'each message once, in the order published',
      );
      await device?.endAsync();
      await publisher.endAsync();
    });
  }
}
