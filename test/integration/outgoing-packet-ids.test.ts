// A QoS 1 or 2 message the gateway sends a device never gets the packet id of one still in
// flight to that device [MQTT-2.2.1-4]: with two QoS 2 messages in flight under one id the
// device takes the second for the first (mqtt.js keeps the later one, and the first is lost);
// at QoS 1 the PUBACK of one settles the other (a command reported acknowledged by another
// message's PUBACK). aedes numbers a connection's messages from a counter that starts at random
// and wraps after 65,535. It used to hand out the next number whatever was in flight: a resumed
// session's messages sent before (before a reconnect, or a restart) go again under their own
// ids, and a new message could get one of them; on a long connection, the counter could come
// round to a message still unacknowledged. Real embedded brokers, both persistences, real
// mqtt.js devices on loopback.
//
// Where the counter stands is chance (a random start, and how many messages went before): the
// tests set it to the id of the message in flight (when aedes registers the client, or on the
// live connection), as chance has it once in 65,535 for each message in flight and each new one;
// a session resuming with many of each hits it often.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { type Socket, createConnection } from 'node:net';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { Aedes } from 'aedes';
import Database from 'better-sqlite3';
import { type IClientOptions, type MqttClient, connect } from 'mqtt';
import mqttPacket from 'mqtt-packet';
import pino from 'pino';
import { aedesInternals, clientInternals } from '../../src/mqtt/aedes-internals.ts';
import { EmbeddedBroker } from '../../src/mqtt/embedded-broker.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { recordAedesInstances } from '../harness/aedes-instances.ts';
import { eventually } from '../harness/eventually.ts';
import { connectPacket, subscribePacket } from '../harness/mqtt-wire.ts';
import { tempDirs } from '../harness/temp.ts';

// The aedes instance of each broker started, to set where a connection's counter starts.
const aedesInstances = await recordAedesInstances();
const created = aedesInstances.created;

const dirs = tempDirs('ferry-packet-ids-');
const devices: MqttClient[] = [];
const sockets: Socket[] = [];
const brokers: EmbeddedBroker[] = [];
after(async () => {
  aedesInstances.restore();
  for (const d of devices) d.end(true);
  for (const s of sockets) s.destroy();
  await Promise.all(brokers.map((b) => b.close().catch(() => {})));
});

interface Gateway {
  readonly broker: EmbeddedBroker;
  readonly aedes: Aedes;
  readonly url: string;
}

async function startGateway(persistence: 'sqlite' | 'memory', path = join(dirs(), 'broker.db')): Promise<Gateway> {
  const broker = await EmbeddedBroker.start({
    host: '127.0.0.1',
    port: 0,
    logger: pino({ level: 'silent' }),
    counters: new CounterRegistry(),
    ...(persistence === 'sqlite' ? { state: { path, synchronous: 'normal' as const } } : {}),
  });
  brokers.push(broker);
  return { broker, aedes: created.at(-1) as Aedes, url: `mqtt://127.0.0.1:${broker.port}` };
}

async function stopGateway(gateway: Gateway): Promise<void> {
  brokers.splice(brokers.indexOf(gateway.broker), 1);
  await gateway.broker.close();
}

/** The next connection of `clientId` numbers its messages from `id` on. */
function counterStartsAt(gateway: Gateway, clientId: string, id: number): void {
  gateway.aedes.on('client', (client) => {
    if (client.id === clientId) clientInternals(client)._nextId = id;
  });
}

/** The aedes client of a connected device. */
function aedesClient(gateway: Gateway, clientId: string) {
  const client = aedesInternals(gateway.aedes).clients[clientId];
  assert.ok(client !== undefined, `${clientId} is connected`);
  return client;
}

interface Device {
  readonly client: MqttClient;
  /** Payloads of the messages the device took, in order. */
  readonly seen: string[];
  /** Packet ids of the PUBLISH packets it received, in order. */
  readonly ids: number[];
  /** The packet id of the first message, which the device holds unanswered until `release`. */
  held(): Promise<number>;
  release(): void;
  /** Resolves once `payload` reached the device's socket (it may wait behind a held message). */
  arrived(payload: string): Promise<void>;
}

/**
 * An MQTT 5 device (mqtt.js). `hold`: it answers its first message (PUBREC or PUBACK) only when
 * released; mqtt.js handles its packets one at a time, so the next ones wait behind it. `answer`
 * is the reason code of its other answers.
 */
async function device(url: string, clientId: string, options: IClientOptions & { hold?: boolean; answer?: (topic: string) => number } = {}): Promise<Device> {
  const { hold = false, answer = () => 0, ...connectOptions } = options;
  let holding: ((id: number) => void) | undefined;
  const heldId = new Promise<number>((resolve) => (holding = resolve));
  let release = () => {};
  const bytes: Buffer[] = [];
  const client = connect(url, {
    clientId,
    protocolVersion: 5,
    reconnectPeriod: 0,
    ...connectOptions,
    customHandleAcks: (topic, _message, packet, done) => {
      if (holding !== undefined && hold) {
        holding(packet.messageId ?? 0);
        holding = undefined;
        release = () => done(0);
        return;
      }
      done(answer(topic));
    },
  });
  devices.push(client);
  const seen: string[] = [];
  const ids: number[] = [];
  client.on('message', (_topic, payload) => seen.push(payload.toString()));
  client.on('packetreceive', (packet) => {
    if (packet.cmd === 'publish' && packet.messageId !== undefined) ids.push(packet.messageId);
  });
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
  });
  client.stream.on('data', (chunk: Buffer) => bytes.push(chunk));
  return {
    client,
    seen,
    ids,
    held: () => heldId,
    release: () => release(),
    arrived: (payload) => eventually(() => assert.ok(Buffer.concat(bytes).includes(payload), `${payload} has not reached ${clientId}`)),
  };
}

async function publisher(url: string): Promise<MqttClient> {
  const client = connect(url, { clientId: `pub-${Math.random().toString(16).slice(2)}`, reconnectPeriod: 0 });
  devices.push(client);
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
  });
  return client;
}

const SESSION = { clean: false, properties: { sessionExpiryInterval: 600 } } as const;

for (const [persistence, restart] of [
  ['sqlite', false],
  ['memory', false],
  ['sqlite', true],
] as const) {
  test(`[${persistence}] a resumed session${restart ? ' after a restart' : ''}: its message in flight keeps its packet id, the one queued while the device was away gets another, and the device takes both`, async () => {
    const path = join(dirs(), 'broker.db');
    let gateway = await startGateway(persistence, path);
    // The device gets message 'first' and goes before it answered (PUBREC): it is in flight.
    const away = await device(gateway.url, 'resumer', { ...SESSION, hold: true });
    await away.client.subscribeAsync('cmd/resumer', { qos: 2 });
    let pub = await publisher(gateway.url);
    await pub.publishAsync('cmd/resumer', 'first', { qos: 2 });
    const inFlight = await away.held();
    away.client.end(true);
    await eventually(() => assert.equal(gateway.broker.connectedClients, 1, 'the device is gone'));
    if (restart) {
      await pub.endAsync();
      await stopGateway(gateway);
      gateway = await startGateway(persistence, path);
      pub = await publisher(gateway.url);
    }
    await pub.publishAsync('cmd/resumer', 'second', { qos: 2 });

    counterStartsAt(gateway, 'resumer', inFlight);
    const back = await device(gateway.url, 'resumer', SESSION);
    // published live after the queue: once it is there, so is everything before it
    await pub.publishAsync('cmd/resumer', 'third', { qos: 2 });
    await eventually(() => assert.ok(back.seen.includes('third'), `'third' not received: ${back.seen.join(', ')}`));
    assert.equal(back.ids[0], inFlight, 'the message in flight goes again under its own packet id');
    assert.deepEqual(back.seen, ['first', 'second', 'third']);
    assert.equal(new Set(back.ids).size, back.ids.length, `packet ids in flight at once: ${back.ids.join(', ')}`);
    await back.client.endAsync();
    await pub.endAsync();
  });
}

test('[sqlite] a broker.db an earlier version left with two messages of a session under one packet id: the later one goes under another, and the device takes both', async () => {
  const path = join(dirs(), 'broker.db');
  let gateway = await startGateway('sqlite', path);
  const away = await device(gateway.url, 'upgraded', { ...SESSION, hold: true });
  await away.client.subscribeAsync('cmd/upgraded', { qos: 2 });
  const pub = await publisher(gateway.url);
  await pub.publishAsync('cmd/upgraded', 'first', { qos: 2 });
  const inFlight = await away.held();
  away.client.end(true);
  await eventually(() => assert.equal(gateway.broker.connectedClients, 1, 'the device is gone'));
  await pub.publishAsync('cmd/upgraded', 'second', { qos: 2 });
  await pub.endAsync();
  await stopGateway(gateway);
  // As the earlier version left it: 'second' sent under the id of 'first', still in flight.
  const db = new Database(path);
  try {
    const numbered = db.prepare("UPDATE queue SET message_id = ? WHERE client_id = 'upgraded' AND message_id IS NULL").run(inFlight);
    assert.equal(numbered.changes, 1);
  } finally {
    db.close();
  }

  gateway = await startGateway('sqlite', path);
  const back = await device(gateway.url, 'upgraded', SESSION);
  const marker = await publisher(gateway.url);
  await marker.publishAsync('cmd/upgraded', 'third', { qos: 2 });
  await eventually(() => assert.ok(back.seen.includes('third'), `'third' not received: ${back.seen.join(', ')}`));
  assert.deepEqual(back.seen, ['first', 'second', 'third']);
  assert.equal(back.ids[0], inFlight);
  assert.equal(new Set(back.ids).size, back.ids.length, `packet ids in flight at once: ${back.ids.join(', ')}`);
  await back.client.endAsync();
  await marker.endAsync();
});

test('[memory] a live connection: the counter comes round to the packet id of a message still in flight, and skips it', async () => {
  const gateway = await startGateway('memory');
  const d = await device(gateway.url, 'slow', { hold: true });
  await d.client.subscribeAsync('cmd/slow', { qos: 2 });
  const pub = await publisher(gateway.url);
  await pub.publishAsync('cmd/slow', 'first', { qos: 2 });
  const inFlight = await d.held();
  // As after 65,535 more messages to the device.
  clientInternals(aedesClient(gateway, 'slow'))._nextId = inFlight;
  await pub.publishAsync('cmd/slow', 'second', { qos: 2 });
  await d.arrived('second');
  d.release();
  await pub.publishAsync('cmd/slow', 'third', { qos: 2 });
  await eventually(() => assert.ok(d.seen.includes('third'), `'third' not received: ${d.seen.join(', ')}`));
  assert.deepEqual(d.seen, ['first', 'second', 'third']);
  assert.equal(new Set(d.ids).size, d.ids.length, `packet ids in flight at once: ${d.ids.join(', ')}`);
  await d.client.endAsync();
  await pub.endAsync();
});

test('[memory] a command is settled by its own PUBACK, not by that of another message in flight under the id it would have got', async () => {
  const gateway = await startGateway('memory');
  // The device refuses commands (PUBACK 0x80) and holds its first other message unanswered.
  const d = await device(gateway.url, 'pump', { hold: true, answer: (topic) => (topic === 'devices/pump/commands' ? 0x80 : 0) });
  await d.client.subscribeAsync(['devices/pump/commands', 'notes/pump'], { qos: 1 });
  const pub = await publisher(gateway.url);
  await pub.publishAsync('notes/pump', 'note', { qos: 1 });
  const inFlight = await d.held();
  clientInternals(aedesClient(gateway, 'pump'))._nextId = inFlight;
  const command = gateway.broker.publishCommand({ topic: 'devices/pump/commands', payload: Buffer.from('reboot'), qos: 1, retain: false, expiresAt: Date.now() + 60_000 });
  await d.arrived('reboot');
  // The note's PUBACK goes first, then the command's refusal.
  d.release();
  assert.deepEqual(await command.outcome, { status: 'refused', clientId: 'pump', reasonCode: 0x80 });
  assert.equal(new Set(d.ids).size, d.ids.length, `packet ids in flight at once: ${d.ids.join(', ')}`);
  await d.client.endAsync();
  await pub.endAsync();
});

test('[memory] a device that leaves all 65,535 packet ids unacknowledged is disconnected, not sent a message under one of them', { timeout: 120_000 }, async () => {
  const gateway = await startGateway('memory');
  // MQTT 3.1.1, with no Receive Maximum: a device that reads its messages and acknowledges none.
  const socket = createConnection({ host: '127.0.0.1', port: gateway.broker.port });
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  const ids = new Set<number>();
  let publishes = 0;
  parser.on('packet', (packet) => {
    if (packet.cmd !== 'publish') return;
    publishes += 1;
    ids.add(packet.messageId ?? 0);
  });
  socket.on('data', (chunk) => parser.parse(chunk));
  let closed = false;
  socket.on('close', () => (closed = true));
  sockets.push(socket);
  await once(socket, 'connect');
  socket.write(connectPacket('mute'));
  socket.write(subscribePacket('load/mute', 1));
  await eventually(() => assert.ok(gateway.broker.connectedClients === 1 && clientInternals(aedesClient(gateway, 'mute')).subscriptions['load/mute'] !== undefined));
  const publish = () =>
    new Promise<void>((resolve, reject) =>
      gateway.aedes.publish({ cmd: 'publish', topic: 'load/mute', payload: Buffer.from('x'), qos: 1, retain: false, dup: false }, (error) => (error ? reject(error) : resolve())),
    );
  for (let sent = 0; sent < 65_536; sent += 1024) await Promise.all(Array.from({ length: 1024 }, publish));
  await eventually(() => assert.ok(closed, `still connected after ${publishes} messages under ${ids.size} packet ids`), { timeoutMs: 30_000 });
  assert.equal(publishes, 65_535, 'each packet id once');
  assert.equal(ids.size, 65_535);
});
