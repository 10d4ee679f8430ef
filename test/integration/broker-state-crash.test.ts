// What a kill -9 of the broker leaves in broker.db at the moments a QoS 2 publish goes through
// the persistence, and what the broker makes of it after the restart. Real aedes (as patched)
// on the SQLite persistence, devices on raw sockets. The crash is a copy of broker.db and its
// WAL taken synchronously at the chosen instant: the files a SIGKILL leaves (the page cache
// survives a killed process), opened by a second broker as the restarted gateway opens them.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { copyFileSync, existsSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import mqttPacket from 'mqtt-packet';
import pino from 'pino';
import { openBrokerState } from '../../src/mqtt/persistence/open.ts';
import type { SqlitePersistence } from '../../src/mqtt/persistence/sqlite-persistence.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { aedesOnState } from '../harness/aedes-on-state.ts';
import { eventually } from '../harness/eventually.ts';
import { tempDirs } from '../harness/temp.ts';

const dirs = tempDirs('ferry-broker-crash-');

interface RunningBroker {
  readonly persistence: SqlitePersistence;
  readonly port: number;
  close(): Promise<void>;
}

async function startBroker(path: string): Promise<RunningBroker> {
  const persistence = openBrokerState({ path, synchronous: 'full' }, { logger: pino({ level: 'silent' }), counters: new CounterRegistry() });
  const { port, close } = await aedesOnState(persistence);
  return { persistence, port, close };
}

/** broker.db as a SIGKILL at this instant leaves it: the file and its WAL, copied now. */
function crashImage(path: string, into: string): void {
  copyFileSync(path, into);
  if (existsSync(`${path}-wal`)) copyFileSync(`${path}-wal`, `${into}-wal`);
}

/** A device on a raw socket (MQTT 3.1.1 unless `connect` says 5) with a persistent session: every packet it receives, decoded. */
async function device(port: number, clientId: string, hello: Partial<mqttPacket.IConnectPacket> = {}) {
  const version = hello.protocolVersion ?? 4;
  const socket = connect(port, '127.0.0.1');
  await once(socket, 'connect');
  const received: mqttPacket.Packet[] = [];
  const parser = mqttPacket.parser({ protocolVersion: version });
  parser.on('packet', (p: mqttPacket.Packet) => received.push(p));
  socket.on('data', (chunk: Buffer) => parser.parse(chunk));
  const send = (packet: mqttPacket.Packet) => socket.write(mqttPacket.generate(packet, { protocolVersion: version }));
  send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: version, clean: false, clientId, keepalive: 60, ...hello });
  await eventually(() => assert.equal(received[0]?.cmd, 'connack'));
  return { socket, received, send, connack: received[0] as mqttPacket.IConnackPacket };
}

/** Waits for the first packet of `cmd` with this packet id. */
function awaitPacket(received: readonly mqttPacket.Packet[], cmd: string, messageId: number): Promise<void> {
  return eventually(() =>
    assert.ok(
      received.some((p) => p.cmd === cmd && (p as { messageId?: number }).messageId === messageId),
      `no ${cmd} ${messageId}`,
    ),
  );
}

/** A persistent session of `clientId` subscribed to `topic`, its client gone away. */
async function subscribeAway(port: number, clientId: string, topic: string, qos: 0 | 1 | 2): Promise<void> {
  const client = await device(port, clientId);
  client.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos }] });
  await awaitPacket(client.received, 'suback', 1);
  client.send({ cmd: 'disconnect' });
  await once(client.socket, 'close');
}

for (const retain of [false, true]) {
  test(`a QoS 2 message${retain ? ' with the retain flag' : ''}: a crash right after its PUBREC state was stored does not lose it for an offline persistent session`, {
    timeout: 30_000,
  }, async (t) => {
    const dir = dirs();
    const path = join(dir, 'broker.db');
    const first = await startBroker(path);
    t.after(() => first.close());

    // A persistent session subscribed at QoS 2, its client away.
    await subscribeAway(first.port, 'sub', 't/#', 2);

    // The gateway is killed the moment the device's QoS 2 state is stored (aedes publishes the
    // message right after, and answers PUBREC once it is queued).
    const image = join(dir, 'crashed.db');
    const storeIncoming = first.persistence.incomingStorePacket.bind(first.persistence);
    let crashed = false;
    first.persistence.incomingStorePacket = (client, packet) =>
      storeIncoming(client, packet).then(() => {
        crashImage(path, image);
        crashed = true;
      });
    const publisher = await device(first.port, 'pub');
    publisher.send({ cmd: 'publish', topic: 't/a', payload: Buffer.from('one'), qos: 2, messageId: 7, retain, dup: false });
    await awaitPacket(publisher.received, 'pubrec', 7);
    assert.ok(crashed);
    publisher.socket.destroy();
    await first.close();

    // The restart. The device had no PUBREC when the gateway died: it sends the message again.
    const second = await startBroker(image);
    t.after(() => second.close());
    const again = await device(second.port, 'pub');
    t.after(() => again.socket.destroy());
    again.send({ cmd: 'publish', topic: 't/a', payload: Buffer.from('one'), qos: 2, messageId: 7, retain, dup: true });
    await awaitPacket(again.received, 'pubrec', 7);
    again.send({ cmd: 'pubrel', messageId: 7 });
    await awaitPacket(again.received, 'pubcomp', 7);

    // Its PUBREC came: the session gets the message (exactly once).
    const back = await device(second.port, 'sub');
    t.after(() => back.socket.destroy());
    assert.equal(back.connack.sessionPresent, true);
    const published = () => back.received.filter((p): p is mqttPacket.IPublishPacket => p.cmd === 'publish').map((p) => `${p.topic} ${p.payload.toString()}`);
    await eventually(() => assert.deepEqual(published(), ['t/a one']), { timeoutMs: 3000 });
    if (retain) {
      const reader = await device(second.port, 'reader');
      t.after(() => reader.socket.destroy());
      reader.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 't/a', qos: 0 }] });
      await eventually(() =>
        assert.ok(
          reader.received.some((p) => p.cmd === 'publish' && p.retain && p.payload.toString() === 'one'),
          'the retained message is kept',
        ),
      );
    }
  });
}

test("a message numbered after a restart under the packet id of an earlier run's unacknowledged one does not replace it", async (t) => {
  // aedes numbers each connection's messages from a random packet id, without looking at the ids
  // of the session's copies still in flight: after a restart (a new broker id) a new message can
  // get one. Seen with a session holding 15,000 unacknowledged QoS 1 messages across a SIGKILL and
  // 15,000 more queued after it: about 7,000 of the first were lost.
  const path = join(dirs(), 'broker.db');
  const open = () => openBrokerState({ path, synchronous: 'full' }, { logger: pino({ level: 'silent' }), counters: new CounterRegistry() });
  const client = { id: 'sub' };
  const message = (brokerId: string, brokerCounter: number, payload: string) => ({
    cmd: 'publish',
    topic: 't/a',
    payload: Buffer.from(payload),
    qos: 1,
    retain: false,
    dup: false,
    brokerId,
    brokerCounter,
  });

  const before = open();
  await before.setup({ id: 'run-1' });
  const old = message('run-1', 5, 'old');
  await before.outgoingEnqueueCombi([{ clientId: 'sub' }], old);
  await before.outgoingUpdate(client, { ...old, messageId: 42 }); // sent, never acknowledged
  await before.destroy();

  const after = open();
  t.after(() => after.destroy());
  await after.setup({ id: 'run-2' });
  const fresh = message('run-2', 1, 'new');
  await after.outgoingEnqueueCombi([{ clientId: 'sub' }], fresh);
  await after.outgoingUpdate(client, { ...fresh, messageId: 42 });

  const queued = async () => (await after.outgoingStream(client).toArray()).map((p: { payload: Buffer; messageId?: number }) => `${p.payload.toString()} ${p.messageId}`);
  assert.deepEqual(await queued(), ['old 42', 'new 42']);
  // Each PUBACK takes one copy, the oldest first.
  assert.equal(((await after.outgoingClearMessageId(client, { messageId: 42 })) as { payload: Buffer }).payload.toString(), 'old');
  assert.equal(((await after.outgoingClearMessageId(client, { messageId: 42 })) as { payload: Buffer }).payload.toString(), 'new');
  assert.deepEqual(await queued(), []);
});

test("a PUBREL sent again after a restart still replaces its copy (aedes numbers it as the new run's)", async (t) => {
  const path = join(dirs(), 'broker.db');
  const open = () => openBrokerState({ path, synchronous: 'full' }, { logger: pino({ level: 'silent' }), counters: new CounterRegistry() });
  const client = { id: 'sub' };
  const before = open();
  await before.setup({ id: 'run-1' });
  const packet = { cmd: 'publish', topic: 't/a', payload: Buffer.from('one'), qos: 2, retain: false, dup: false, brokerId: 'run-1', brokerCounter: 3 };
  await before.outgoingEnqueueCombi([{ clientId: 'sub' }], packet);
  await before.outgoingUpdate(client, { ...packet, messageId: 9 });
  await before.outgoingUpdate(client, { cmd: 'pubrel', messageId: 9 });
  await before.destroy();

  const after = open();
  t.after(() => after.destroy());
  await after.setup({ id: 'run-2' });
  const [resumed] = (await after.outgoingStream(client).toArray()) as { cmd: string; messageId: number }[];
  assert.equal(resumed?.cmd, 'pubrel');
  // As aedes' QoSPacket wraps it when the session resumes: the new run's broker id and a new counter.
  await after.outgoingUpdate(client, { cmd: 'pubrel', messageId: 9, brokerId: 'run-2', brokerCounter: 1 });
  assert.deepEqual(
    ((await after.outgoingStream(client).toArray()) as { cmd: string; messageId: number }[]).map((p) => `${p.cmd} ${p.messageId}`),
    ['pubrel 9'],
  );
  await after.outgoingClearMessageId(client, { messageId: 9 });
  assert.deepEqual(await after.outgoingStream(client).toArray(), []);
});

test('an MQTT 5 will with a delay, stored as its client connected: after a crash right after the CONNACK it waits its delay, and the client coming back in time keeps it from being published', {
  timeout: 30_000,
}, async (t) => {
  const dir = dirs();
  const path = join(dir, 'broker.db');
  const first = await startBroker(path);
  t.after(() => first.close());
  await subscribeAway(first.port, 'watcher', 'status/#', 1);

  // The gateway is killed the moment the CONNACK may leave: the will is stored.
  const image = join(dir, 'crashed.db');
  const putWill = first.persistence.putWill.bind(first.persistence);
  first.persistence.putWill = (client, packet) => putWill(client, packet).then(() => crashImage(path, image));
  const hello: Partial<mqttPacket.IConnectPacket> = {
    protocolVersion: 5,
    clean: false,
    properties: { sessionExpiryInterval: 600 },
    will: { topic: 'status/dev', payload: Buffer.from('offline'), qos: 1, retain: false, properties: { willDelayInterval: 3 } },
  };
  const dev = await device(first.port, 'dev', hello);
  assert.equal(dev.connack.cmd, 'connack');
  dev.socket.destroy();
  await first.close();

  const second = await startBroker(image);
  t.after(() => second.close());
  // The device is back within its will's delay: its session is there, and its will is not published.
  const back = await device(second.port, 'dev', hello);
  t.after(() => back.socket.destroy());
  assert.equal(back.connack.sessionPresent, true, 'the session of the device is kept');
  const watching = await device(second.port, 'watcher');
  t.after(() => watching.socket.destroy());
  watching.send({ cmd: 'pingreq' });
  await eventually(() => assert.ok(watching.received.some((p) => p.cmd === 'pingresp')));
  await new Promise((resolve) => setTimeout(resolve, 3500));
  assert.deepEqual(
    watching.received.filter((p) => p.cmd === 'publish').map((p) => (p as mqttPacket.IPublishPacket).topic),
    [],
    'no will published',
  );
});
