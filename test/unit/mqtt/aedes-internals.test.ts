// Fails when an aedes upgrade removes or changes an internal that src/mqtt/aedes-internals.ts
// declares: each field and method there is checked on a real broker, for the behaviour Ferry
// relies on and not only for its presence.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { type AddressInfo, type Socket, connect, createServer } from 'node:net';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Aedes, type AedesPublishPacket, type Client, type ConnectPacket } from 'aedes';
import type { IClientOptions, MqttClient } from 'mqtt';
import {
  type ClientPacket,
  type DiscardReason,
  aedesInternals,
  clientInternals,
  handleUnread,
  onClientPacket,
  onPublishDiscarded,
  reservePacketId,
} from '../../../src/mqtt/aedes-internals.ts';
import { connectPacket, publishPacket, publishPacketV5 } from '../../harness/mqtt-wire.ts';
import { connectListening } from '../../harness/recording-client.ts';

interface Seen {
  /** `connecting` and `_cleanStart` as authenticate saw them, by client id. */
  readonly atAuthenticate: Map<string, { connecting: unknown; cleanStart: unknown }>;
  /** `connecting` at each authorizeSubscribe, by client id, in order. */
  readonly atSubscribe: Map<string, unknown[]>;
  /** Client ids whose saved session authenticate discards, as session-guard.ts does. */
  readonly startClean: Set<string>;
  /** Client ids whose live QoS 1 copies get their packet id from reservePacketId. */
  readonly reserveFor: Set<string>;
  /** Packets authorizeForward saw, with the id it reserved, if any. */
  readonly forwarded: { clientId: string; packet: AedesPublishPacket; reserved: number | undefined }[];
}

/** A real aedes broker, created as src/mqtt/embedded-broker.ts creates it, on a TCP port. */
async function startBroker() {
  const seen: Seen = { atAuthenticate: new Map(), atSubscribe: new Map(), startClean: new Set(), reserveFor: new Set(), forwarded: [] };
  const connects = new WeakMap<Client, ConnectPacket>();
  const aedes = await Aedes.createBroker({
    connectTimeout: 2000,
    preConnect: (client, packet, callback) => {
      connects.set(client, packet);
      callback(null, true);
    },
    authenticate: (client, _username, _password, done) => {
      const internals = clientInternals(client);
      seen.atAuthenticate.set(client.id, { connecting: internals.connecting, cleanStart: internals._cleanStart });
      if (seen.startClean.has(client.id)) {
        const packet = connects.get(client);
        if (packet !== undefined) packet.clean = true;
        internals._cleanStart = true;
      }
      done(null, true);
    },
    authorizeSubscribe: (client, subscription, callback) => {
      const list = seen.atSubscribe.get(client.id) ?? [];
      list.push(clientInternals(client).connecting);
      seen.atSubscribe.set(client.id, list);
      callback(null, subscription);
    },
    authorizeForward: (client, packet) => {
      let reserved: number | undefined;
      if (seen.reserveFor.has(client.id) && packet.qos > 0 && packet.messageId === undefined) {
        reserved = reservePacketId(client);
        packet.messageId = reserved;
      }
      seen.forwarded.push({ clientId: client.id, packet, reserved });
      return packet;
    },
  });
  const clients = new Map<string, Client>();
  aedes.on('client', (client) => clients.set(client.id, client));
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    aedes.handle(socket);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  const opened: MqttClient[] = [];
  return {
    aedes,
    internals: aedesInternals(aedes),
    seen,
    port,
    /** The aedes client object of a connected client id. */
    client: (id: string) => {
      const client = clients.get(id);
      assert.ok(client !== undefined, `client ${id} connected`);
      return client;
    },
    /** `listen` is called before the CONNACK, with which a resumed session's queue comes. */
    device: async (clientId: string, options: IClientOptions = {}, listen: (device: MqttClient) => void = () => {}) => {
      const device = await connectListening(`mqtt://127.0.0.1:${port}`, { clientId, reconnectPeriod: 0, ...options }, (device) => {
        opened.push(device);
        listen(device);
      });
      return device;
    },
    close: async () => {
      for (const device of opened) device.end(true);
      for (const socket of sockets) socket.destroy();
      server.close();
      await new Promise<void>((done) => aedes.close(() => done()));
    },
  };
}

type Broker = Awaited<ReturnType<typeof startBroker>>;

async function withBroker(run: (broker: Broker) => Promise<void>): Promise<void> {
  const broker = await startBroker();
  try {
    await run(broker);
  } finally {
    await broker.close();
  }
}

async function until(what: string, check: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await sleep(10);
  }
}

test('the broker: id, counter, the patched clients map and maxInflightInbound, and the persistence methods', async () => {
  await withBroker(async ({ internals, device, client }) => {
    assert.equal(typeof internals.id, 'string');
    assert.ok(internals.id.length > 0);
    assert.ok(Number.isInteger(internals.counter), 'counter is an integer');
    // embedded-broker.ts refuses to start without these two (patches/aedes+2.0.0-beta.1.patch).
    assert.equal(Object.getPrototypeOf(internals.clients), null, 'clients has no prototype');
    assert.equal(typeof internals.maxInflightInbound, 'number');
    assert.equal(typeof internals.outboundQueueLimit, 'number');
    for (const method of ['subscriptionsByTopic', 'incomingGetPacket', 'removeSubscriptions'] as const) {
      assert.equal(typeof internals.persistence[method], 'function', `persistence.${method}`);
    }
    const id = `d-${randomUUID()}`;
    await device(id);
    assert.equal(internals.clients[id], client(id), 'clients holds each connected client by id');
    assert.equal(internals.clients['nobody'], undefined);
  });
});

test('a client: connackSent and _connackAccepted once its CONNACK accepted it; protocol errors reported with their reason code', { timeout: 10_000 }, async () => {
  await withBroker(async ({ aedes, internals, device, client }) => {
    // embedded-broker.ts refuses to start without it (patches/aedes+2.0.0-beta.1.patch).
    assert.equal(internals.protocolErrorsAnswered, true);
    const id = `d-${randomUUID()}`;
    const d = await device(id, { protocolVersion: 5 });
    const c = clientInternals(client(id));
    // Set once the CONNACK's write called back, which may come after the client read it.
    await until('the CONNACK was written', () => c.connackSent && c._connackAccepted);
    const reported = once(aedes, 'clientError') as Promise<[Client, Error & { reasonCode?: number }]>;
    // A topic alias when the broker allows none (topicAliasMaximum 0) is out of range
    // (written past mqtt.js, which would not send it).
    d.stream.write(publishPacketV5('t', Buffer.from('x'), Buffer.from([3, 0x23, 0, 1])));
    const [, error] = await reported;
    assert.equal(error.reasonCode, 0x94, 'protocol-refusals.ts counts a protocol error by the reason code on the error');
  });
});

test('a published packet keeps the brokerId, brokerCounter and messageExpiry it was given, up to authorizeForward', async () => {
  await withBroker(async ({ aedes, internals, seen, device }) => {
    const id = `d-${randomUUID()}`;
    const d = await device(id);
    await d.subscribeAsync('cmd/#', { qos: 1 });
    const before = internals.counter;
    const counter = ++internals.counter;
    const expiry = Date.now() + 60_000;
    await new Promise<void>((done, fail) =>
      aedes.publish(
        {
          cmd: 'publish',
          topic: 'cmd/a',
          payload: Buffer.from('x'),
          qos: 1,
          retain: false,
          dup: false,
          brokerId: internals.id,
          brokerCounter: counter,
          messageExpiry: expiry,
        } as AedesPublishPacket,
        (error) => (error ? fail(error) : done()),
      ),
    );
    await until('the message is forwarded', () => seen.forwarded.some((f) => f.clientId === id));
    const forwarded = seen.forwarded.find((f) => f.clientId === id)?.packet as AedesPublishPacket & { brokerId?: string; brokerCounter?: number; messageExpiry?: number };
    assert.equal(forwarded.brokerId, internals.id);
    assert.equal(forwarded.brokerCounter, counter);
    assert.equal(forwarded.messageExpiry, expiry);
    assert.equal(internals.counter, before + 1, 'aedes did not take another counter value for a packet that had one');
  });
});

test('a client: connecting and _cleanStart during authentication, subscriptions, and setting _cleanStart there starts a clean session', async () => {
  await withBroker(async ({ aedes, seen, device, client }) => {
    const id = `d-${randomUUID()}`;
    const first = await device(id, { clean: false });
    assert.deepEqual(seen.atAuthenticate.get(id), { connecting: true, cleanStart: false });
    await until('connecting is false once the connect sequence finished', () => clientInternals(client(id)).connecting === false);
    await first.subscribeAsync('cmd/#', { qos: 1 });
    assert.deepEqual(seen.atSubscribe.get(id), [false], 'a live SUBSCRIBE is authorized while not connecting');
    assert.equal(clientInternals(client(id)).subscriptions['cmd/#']?.qos, 1);
    first.end(true);
    await until('the client is gone', () => aedesInternals(aedes).clients[id] === undefined);

    // Resuming: the saved subscription is authorized again, while still connecting.
    const again = await device(id, { clean: false });
    assert.deepEqual(seen.atSubscribe.get(id), [false, true], 'a restored subscription is authorized while connecting');
    again.end(true);
    await until('the client is gone', () => aedesInternals(aedes).clients[id] === undefined);

    // A message queued for the saved session, then a connection that authenticate turns clean.
    await new Promise<void>((done, fail) =>
      aedes.publish({ cmd: 'publish', topic: 'cmd/queued', payload: Buffer.from('q'), qos: 1, retain: false, dup: false } as AedesPublishPacket, (error) =>
        error ? fail(error) : done(),
      ),
    );
    seen.startClean.add(id);
    const received: string[] = [];
    await device(id, { clean: false }, (clean) => clean.on('message', (topic) => received.push(topic)));
    assert.equal(seen.atAuthenticate.get(id)?.cleanStart, false, 'the CONNECT asked to resume');
    await sleep(300);
    assert.deepEqual(received, [], 'the queued message of the discarded session is not sent');
    assert.equal(clientInternals(client(id)).subscriptions['cmd/#'], undefined, 'the saved subscription is not restored');

    const cleanId = `d-${randomUUID()}`;
    await device(cleanId, { clean: true });
    assert.deepEqual(seen.atAuthenticate.get(cleanId), { connecting: true, cleanStart: true });
  });
});

test('_nextId and reservePacketId: a copy numbered in authorizeForward keeps its id, and aedes numbers the next one after it', async () => {
  await withBroker(async ({ aedes, seen, device, client }) => {
    const id = `d-${randomUUID()}`;
    const d = await device(id);
    await d.subscribeAsync('cmd/#', { qos: 1 });
    const internals = clientInternals(client(id));
    assert.ok(Number.isInteger(internals._nextId) && internals._nextId >= 1 && internals._nextId <= 65535, '_nextId is a packet id');
    const received: number[] = [];
    d.on('message', (_topic, _payload, packet) => received.push(packet.messageId ?? -1));
    const publish = (topic: string) =>
      new Promise<void>((done, fail) =>
        aedes.publish({ cmd: 'publish', topic, payload: Buffer.from('x'), qos: 1, retain: false, dup: false } as AedesPublishPacket, (error) => (error ? fail(error) : done())),
      );

    internals._nextId = 65535;
    seen.reserveFor.add(id);
    await publish('cmd/reserved');
    await until('the reserved copy arrives', () => received.length === 1);
    assert.deepEqual(received, [65535]);
    assert.equal(seen.forwarded.at(-1)?.reserved, 65535);
    assert.equal(internals._nextId, 1, 'the counter wraps to 1 after 65535');

    seen.reserveFor.delete(id);
    await publish('cmd/numbered-by-aedes');
    await until('the copy aedes numbered arrives', () => received.length === 2);
    assert.deepEqual(received, [65535, 1], 'aedes numbers from the same counter');
    assert.equal(internals._nextId, 2);
  });
});

test('_parser and onClientPacket: every PUBACK a client sends, with its packet id and MQTT 5 reason code', async () => {
  await withBroker(async ({ aedes, device, client }) => {
    const publish = (topic: string) =>
      new Promise<void>((done, fail) =>
        aedes.publish({ cmd: 'publish', topic, payload: Buffer.from('x'), qos: 1, retain: false, dup: false } as AedesPublishPacket, (error) => (error ? fail(error) : done())),
      );

    const v4 = `d-${randomUUID()}`;
    const d4 = await device(v4);
    await d4.subscribeAsync('v4/#', { qos: 1 });
    const heard4: ClientPacket[] = [];
    onClientPacket(client(v4), (packet) => heard4.push(packet));
    const received4: number[] = [];
    d4.on('message', (_topic, _payload, packet) => received4.push(packet.messageId ?? -1));
    await publish('v4/a');
    await until('the PUBACK is heard', () => heard4.some((p) => p.cmd === 'puback'));
    const puback4 = heard4.find((p) => p.cmd === 'puback');
    assert.equal(puback4?.messageId, received4[0]);
    assert.ok((puback4?.reasonCode ?? 0) < 0x80);

    const v5 = `d-${randomUUID()}`;
    const d5 = await device(v5, { protocolVersion: 5, customHandleAcks: (_topic, _message, _packet, done) => done(0x80) });
    await d5.subscribeAsync('v5/#', { qos: 1 });
    const heard5: ClientPacket[] = [];
    onClientPacket(client(v5), (packet) => heard5.push(packet));
    await publish('v5/a');
    await until('the refusing PUBACK is heard', () => heard5.some((p) => p.cmd === 'puback'));
    const puback5 = heard5.find((p) => p.cmd === 'puback');
    assert.equal(typeof puback5?.messageId, 'number');
    assert.equal(puback5?.reasonCode, 0x80);
  });
});

test('handleUnread: aedes handles the packets in bytes given to its parser as if it read them; a DISCONNECT among them ends the connection without its will', async () => {
  await withBroker(async ({ device, client }) => {
    const watcher = await device(`w-${randomUUID()}`);
    await watcher.subscribeAsync('unread/#', { qos: 0 });
    const heard: string[] = [];
    watcher.on('message', (topic, payload) => heard.push(`${topic} ${payload.toString()}`));
    const id = `d-${randomUUID()}`;
    const closing = await device(id, { will: { topic: 'unread/will', payload: Buffer.from('gone'), qos: 0, retain: false } });
    const closed = new Promise<void>((done) => closing.once('close', () => done()));
    handleUnread(client(id), Buffer.concat([publishPacket('unread/message', Buffer.from('hi')), Buffer.from([0xe0, 0x00])]));
    await closed;
    await watcher.publishAsync('unread/marker', 'after');
    await until('the marker is heard', () => heard.includes('unread/marker after'));
    assert.deepEqual(heard, ['unread/message hi', 'unread/marker after']);
  });
});

test('persistence: subscriptionsByTopic lists persistent sessions, removeSubscriptions drops one, incomingGetPacket finds a QoS 2 message awaiting PUBREL', async () => {
  await withBroker(async ({ internals, device, client, port }) => {
    const id = `d-${randomUUID()}`;
    const d = await device(id, { clean: false });
    await d.subscribeAsync('state/#', { qos: 1 });
    const listed = await internals.persistence.subscriptionsByTopic('state/a');
    assert.ok(Array.isArray(listed));
    assert.ok(
      listed.some((s) => s.clientId === id),
      'the persistent session is listed by client id',
    );
    await internals.persistence.removeSubscriptions(client(id), ['state/#']);
    const after = await internals.persistence.subscriptionsByTopic('state/a');
    assert.ok(!after.some((s) => s.clientId === id), 'the subscription is gone from the session');

    // A raw client that sends a QoS 2 PUBLISH and never the PUBREL.
    const rawId = `raw-${randomUUID()}`;
    const socket = connect(port, '127.0.0.1');
    await once(socket, 'connect');
    const bytes: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => bytes.push(chunk));
    try {
      socket.write(connectPacket(rawId, 60, true));
      await until('CONNACK', () => Buffer.concat(bytes).includes(0x20));
      socket.write(publishPacket('state/qos2', Buffer.from('payload-2'), { qos: 2, id: 7 }));
      await until('PUBREC', () => Buffer.concat(bytes).includes(0x50));
      const stored = (await internals.persistence.incomingGetPacket(client(rawId), { messageId: 7 })) as { topic?: unknown; payload?: unknown };
      assert.equal(stored.topic, 'state/qos2');
      assert.ok(stored.payload instanceof Uint8Array || typeof stored.payload === 'string');
      assert.equal(Buffer.from(stored.payload as Uint8Array).toString(), 'payload-2');
      await assert.rejects(internals.persistence.incomingGetPacket(client(rawId), { messageId: 8 }), 'rejects for a packet id with nothing stored');
    } finally {
      socket.destroy();
    }
  });
});

test('onPublishDiscarded: a message larger than the Maximum Packet Size an MQTT 5 client announced is reported, not sent', async () => {
  await withBroker(async ({ aedes, device }) => {
    const discarded: [string, string, DiscardReason][] = [];
    onPublishDiscarded(aedes, (topic, clientId, reason) => discarded.push([topic, clientId, reason]));
    const id = `small-${randomUUID()}`;
    const small = await device(id, { protocolVersion: 5, properties: { maximumPacketSize: 100 } });
    const got: string[] = [];
    small.on('message', (_topic, payload) => got.push(payload.toString()));
    await small.subscribeAsync('sizes/#', { qos: 1 });
    const sender = await device(`sender-${randomUUID()}`, { protocolVersion: 5 });
    await sender.publishAsync('sizes/big', 'x'.repeat(500), { qos: 1 });
    await sender.publishAsync('sizes/small', 'fits', { qos: 1 });
    await until('the small message', () => got.includes('fits'));
    assert.deepEqual(got, ['fits']);
    assert.deepEqual(discarded, [['sizes/big', id, 'packetTooLarge']]);
  });
});

test("_takingOver: holds a client id while the connection taken over ends ('clientDisconnect'), no longer once the new one is registered", async () => {
  await withBroker(async ({ aedes, internals, device }) => {
    const id = `d-${randomUUID()}`;
    const atEnd: boolean[] = [];
    const atRegister: boolean[] = [];
    aedes.on('clientDisconnect', (client) => {
      if (client.id === id) atEnd.push(internals._takingOver.has(id));
    });
    aedes.on('client', (client) => {
      if (client.id === id) atRegister.push(internals._takingOver.has(id));
    });
    await device(id, { clean: true });
    await device(id, { clean: false });
    await until('the first connection ended', () => atEnd.length === 1 && atRegister.length === 2);
    assert.deepEqual(atEnd, [true], 'during the takeover');
    assert.deepEqual(atRegister, [false, false], 'as each connection is registered');
    assert.equal(internals._takingOver.has(id), false);
  });
});
