import assert from 'node:assert/strict';
import { once } from 'node:events';
import { type Socket, connect as connectSocket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { type IDisconnectPacket, type MqttClient, type Packet, connectAsync } from 'mqtt';
import pino from 'pino';
import type { Delivery } from '../../src/core/delivery.ts';
import { FerryError } from '../../src/core/errors.ts';
import { deviceSchema } from '../../src/config/schema.ts';
import { DeviceAuthenticator } from '../../src/mqtt/auth.ts';
import { EmbeddedBroker } from '../../src/mqtt/embedded-broker.ts';
import { hashPassword } from '../../src/mqtt/password.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { connectPacket, packet, publishPacket } from '../harness/mqtt-wire.ts';
import { eventually } from '../harness/eventually.ts';

// The embedded broker (aedes 2.0.0-beta.1 with aedes 1.2.0's security fixes backported by
// patches/aedes+2.0.0-beta.1.patch) with MQTT 5 clients, and the regressions of those fixes.
// (The source conformance suite runs with MQTT 5 clients in mqtt-source.test.ts.)

async function withBroker(run: (broker: EmbeddedBroker, url: string, counters: CounterRegistry) => Promise<void>): Promise<void> {
  const counters = new CounterRegistry();
  const broker = await EmbeddedBroker.start({ host: '127.0.0.1', port: 0, logger: pino({ level: 'silent' }), counters });
  try {
    await run(broker, `mqtt://127.0.0.1:${broker.port}`, counters);
  } finally {
    await broker.close();
  }
}

/** The packets a client receives, by command, kept from before it connects. */
function received(client: MqttClient): Packet[] {
  const packets: Packet[] = [];
  client.on('packetreceive', (p) => packets.push(p));
  return packets;
}

for (const [label, error, reasonCode] of [
  ['a message the gateway could not store', new Error('disk full'), 0x89],
  ['a message refused by a rate limit', new FerryError('MESSAGE_REJECTED', 'rate limit', { retryable: true }), 0x97],
] as const) {
  test(`${label}: an MQTT 5 device gets DISCONNECT 0x${reasonCode.toString(16)}, never a PUBACK, and sends it again`, { timeout: 20_000 }, async () => {
    await withBroker(async (broker, url, counters) => {
      let refuse = true;
      const seen: string[] = [];
      const subscription = broker.tap('test', ['devices/#']).subscribe((d) => {
        seen.push(d.envelope.payload.toString());
        if (refuse) d.nack(error);
        else d.ack();
      });
      // A device as mqtt.js is by default: it reconnects by itself and sends again what was not acknowledged.
      const client = await connectAsync(url, { clientId: 'dev-refused', protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 60 }, reconnectPeriod: 100 });
      const packets = received(client);
      const disconnected = new Promise<IDisconnectPacket>((resolve) =>
        client.once('disconnect', (p) => {
          refuse = false;
          resolve(p);
        }),
      );
      const publish = client.publishAsync('devices/d/telemetry', 'm-1', { qos: 1 }).then(
        () => 'acknowledged',
        (e: Error) => `failed: ${e.message}`,
      );
      const disconnect = await disconnected;
      assert.equal(disconnect.reasonCode, reasonCode);
      assert.match(disconnect.properties?.reasonString ?? '', /send it again/);
      assert.deepEqual(
        packets.map((p) => p.cmd),
        ['disconnect'],
        'no PUBACK (which would tell the device the message is done with) came before the DISCONNECT',
      );
      assert.equal(counters.snapshot()['mqtt.publish.nacked'], 1);
      // The device reconnected and sent the unacknowledged message again.
      assert.equal(await publish, 'acknowledged');
      assert.deepEqual(seen, ['m-1', 'm-1']);
      subscription.unsubscribe();
      await client.endAsync(true);
    });
  });
}

test('an MQTT 5 device refused by the ACL gets PUBACK 0x87, for an invalid topic PUBACK 0x90, and stays connected', async () => {
  await withBroker(async (broker, url) => {
    const subscription = broker.tap('test', ['#']).subscribe((d) => d.ack());
    const client = await connectAsync(url, { clientId: 'dev-reserved', protocolVersion: 5, reconnectPeriod: 0 });
    try {
      // Without device profiles, publishing to a '$' topic is refused (the ACL of the anonymous default).
      await assert.rejects(client.publishAsync('$SYS/x', 'no', { qos: 1 }), /Not authorized/);
      assert.ok(client.connected);
      // A control character in the topic: Topic Name invalid.
      await assert.rejects(client.publishAsync('devices/d/\u0007bell', 'no', { qos: 1 }), /Topic Name invalid/);
      assert.ok(client.connected);
      await client.publishAsync('devices/d/telemetry', 'yes', { qos: 1 });
    } finally {
      subscription.unsubscribe();
      await client.endAsync(true);
    }
  });
});

test("an MQTT 5 publish's user properties and content type become the message's headers", async () => {
  await withBroker(async (broker, url) => {
    const seen: Delivery[] = [];
    const subscription = broker.tap('test', ['devices/#']).subscribe((d) => {
      seen.push(d);
      d.ack();
    });
    const client = await connectAsync(url, { clientId: 'dev-props', protocolVersion: 5, reconnectPeriod: 0 });
    try {
      const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
      await client.publishAsync('devices/d/telemetry', '{}', {
        qos: 1,
        properties: { contentType: 'application/json', userProperties: { traceparent, site: ['a', 'b'], ['__proto__']: 'kept' } },
      });
      await client.publishAsync('devices/d/telemetry', 'plain', { qos: 1 });
      assert.deepEqual({ ...seen[0]?.envelope.headers }, { traceparent, site: 'a,b', ['__proto__']: 'kept', 'content-type': 'application/json' });
      assert.ok(Object.hasOwn(seen[0]?.envelope.headers ?? {}, '__proto__'));
      assert.deepEqual(seen[1]?.envelope.headers, {});
    } finally {
      subscription.unsubscribe();
      await client.endAsync(true);
    }
  });
});

test('client ids and filters named like Object.prototype members are ordinary (GHSA-52qw-whmv-87c5)', async () => {
  await withBroker(async (broker, url) => {
    const seen: string[] = [];
    const subscription = broker.tap('test', ['+/t']).subscribe((d) => {
      seen.push(d.envelope.topic);
      d.ack();
    });
    try {
      for (const protocolVersion of [4, 5] as const) {
        for (const clientId of ['constructor', '__proto__', 'toString', 'hasOwnProperty']) {
          // Unpatched, the broker took `clients.constructor` (Object) for a connected client and crashed.
          const client = await connectAsync(url, { clientId, protocolVersion, reconnectPeriod: 0 });
          await client.subscribeAsync(['toString', 'constructor'], { qos: 1 });
          await client.unsubscribeAsync(['toString', 'valueOf', '__proto__']);
          await client.publishAsync(`${clientId}/t`, 'x', { qos: 1 });
          await client.endAsync();
        }
      }
      assert.equal(seen.length, 8);
      assert.equal(broker.connectedClients, 0);
    } finally {
      subscription.unsubscribe();
    }
  });
});

/** A raw MQTT 3.1.1 connection, to withhold a PUBREL as no client library would. */
async function rawClient(port: number, clientId: string, clean = true, login?: { username: string; password: string }): Promise<{ socket: Socket; bytes: () => Buffer }> {
  const socket = connectSocket(port, '127.0.0.1');
  let data = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => (data = Buffer.concat([data, chunk])));
  await once(socket, 'connect');
  socket.write(connectPacket(clientId, 60, clean, login));
  await eventually(() => assert.ok(!(data.length < 4), 'still: data.length < 4'), { timeoutMs: 5000 });
  assert.equal(data[0], 0x20, 'CONNACK');
  assert.equal(data[3], 0, 'connection accepted');
  data = Buffer.alloc(0);
  return { socket, bytes: () => data };
}

test('a QoS 2 packet id reused after a clean-session reconnect is a new message (GHSA-p8r9-qf8w-p73r)', { timeout: 20_000 }, async () => {
  await withBroker(async (broker, url) => {
    const subscription = broker.tap('test', ['qos2/#']).subscribe((d) => d.ack());
    const watcher = await connectAsync(url, { clientId: 'qos2-watcher', reconnectPeriod: 0 });
    const seen: string[] = [];
    watcher.on('message', (_topic, payload) => seen.push(payload.toString()));
    await watcher.subscribeAsync('qos2/#', { qos: 2 });
    try {
      const first = await rawClient(broker.port, 'qos2-device');
      first.socket.write(publishPacket('qos2/x', Buffer.from('first'), { qos: 2, id: 7 }));
      await eventually(() => assert.ok(!(first.bytes().length < 4), 'still: first.bytes().length < 4'), { timeoutMs: 5000 });
      assert.equal(first.bytes()[0], 0x50, 'PUBREC');
      // No PUBREL: the connection (a clean session) ends mid-handshake.
      first.socket.destroy();
      await eventually(() => assert.ok(!(broker.connectedClients > 1), 'still: broker.connectedClients > 1'), { timeoutMs: 5000 });

      const second = await rawClient(broker.port, 'qos2-device');
      second.socket.write(publishPacket('qos2/x', Buffer.from('second'), { qos: 2, id: 7 }));
      await eventually(() => assert.ok(!(second.bytes().length < 4), 'still: second.bytes().length < 4'), { timeoutMs: 5000 });
      second.socket.write(packet(0x62, Buffer.from([0, 7]))); // PUBREL
      await eventually(() => assert.ok(seen.includes('second'), 'waiting for: seen.includes(second)'), { timeoutMs: 5000 });
      assert.deepEqual(seen, ['first', 'second'], 'the second message was taken for a duplicate of the first');
      second.socket.destroy();
    } finally {
      subscription.unsubscribe();
      await watcher.endAsync(true);
    }
  });
});

test('a client holding 1,000 QoS 2 messages without PUBREL is disconnected at the next one (GHSA-p8r9-qf8w-p73r)', { timeout: 20_000 }, async () => {
  await withBroker(async (broker) => {
    const device = await rawClient(broker.port, 'qos2-hoarder');
    const closed = once(device.socket, 'close');
    let open = true;
    void closed.then(() => (open = false));
    const publishes = Array.from({ length: 1000 }, (_, i) => publishPacket('hoard/x', Buffer.from('x'), { qos: 2, id: i + 1 }));
    device.socket.write(Buffer.concat(publishes));
    await eventually(() => assert.ok(!(device.bytes().length < 4000), 'still: device.bytes().length < 4000'), { timeoutMs: 5000 });
    assert.equal(device.bytes().length, 4000, '1,000 PUBRECs');
    assert.ok(open, 'still connected at the limit');
    device.socket.write(publishPacket('hoard/x', Buffer.from('x'), { qos: 2, id: 1001 }));
    // Well before its keepalive (60 s) would end the connection.
    assert.equal(await Promise.race([closed.then(() => 'closed'), sleep(5000, 'still open')]), 'closed');
  });
});

test('a QoS 2 message sent again after its PUBREC was lost is answered, not taken twice', { timeout: 20_000 }, async () => {
  await withBroker(async (broker, url, counters) => {
    const taken: string[] = [];
    const subscription = broker.tap('test', ['qos2dup/#']).subscribe((d) => {
      taken.push(d.envelope.payload.toString());
      d.ack();
    });
    const watcher = await connectAsync(url, { clientId: 'qos2dup-watcher', reconnectPeriod: 0 });
    const seen: string[] = [];
    watcher.on('message', (_topic, payload) => seen.push(payload.toString()));
    await watcher.subscribeAsync('qos2dup/#', { qos: 2 });
    const device = await rawClient(broker.port, 'qos2dup-device');
    try {
      const first = publishPacket('qos2dup/x', Buffer.from('once'), { qos: 2, id: 9 });
      device.socket.write(first);
      await eventually(() => assert.ok(!(device.bytes().length < 4), 'still: device.bytes().length < 4'), { timeoutMs: 5000 });
      // The same packet with DUP set, as a device sends it when it missed the PUBREC.
      const again = Buffer.from(first);
      again[0] = (again[0] as number) | 0x08;
      device.socket.write(again);
      await eventually(() => assert.ok(!(device.bytes().length < 8), 'still: device.bytes().length < 8'), { timeoutMs: 5000 });
      assert.deepEqual([...device.bytes()], [0x50, 2, 0, 9, 0x50, 2, 0, 9], 'a PUBREC for each');
      device.socket.write(packet(0x62, Buffer.from([0, 9]))); // PUBREL
      await eventually(() => assert.ok(!(device.bytes().length < 12), 'still: device.bytes().length < 12'), { timeoutMs: 5000 });
      assert.deepEqual([...device.bytes().subarray(8)], [0x70, 2, 0, 9], 'PUBCOMP');
      await sleep(200);
      assert.deepEqual(taken, ['once']);
      assert.deepEqual(seen, ['once']);
      assert.equal(counters.snapshot()['mqtt.publish.duplicates{qos=2}'], 1);
    } finally {
      device.socket.destroy();
      subscription.unsubscribe();
      await watcher.endAsync(true);
    }
  });
});

test('two messages refused together on one MQTT 5 connection: one DISCONNECT, no PUBACK for either', { timeout: 20_000 }, async () => {
  await withBroker(async (broker, url) => {
    const pending: Delivery[] = [];
    const subscription = broker.tap('test', ['devices/#']).subscribe((d) => {
      pending.push(d);
      if (pending.length === 2) for (const p of pending) p.nack(new Error('disk full'));
    });
    const client = await connectAsync(url, { clientId: 'dev-two-refused', protocolVersion: 5, reconnectPeriod: 0 });
    // A subscription makes aedes' close take an extra turn, the window a second refusal fell into.
    await client.subscribeAsync('cmd/dev-two-refused', { qos: 1 });
    const packets = received(client);
    const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
    void client.publishAsync('devices/a', 'm1', { qos: 1 }).catch(() => {});
    void client.publishAsync('devices/a', 'm2', { qos: 1 }).catch(() => {});
    await closed;
    await sleep(200);
    assert.deepEqual(
      packets.map((p) => `${p.cmd}:${(p as { reasonCode?: number }).reasonCode}`),
      ['disconnect:137'],
    );
    subscription.unsubscribe();
    await client.endAsync(true);
  });
});

test('a QoS 2 repeat whose packet id holds another message (a session the device lost) is taken', { timeout: 20_000 }, async () => {
  await withBroker(async (broker) => {
    const taken: string[] = [];
    const subscription = broker.tap('test', ['stale/#']).subscribe((d) => {
      taken.push(d.envelope.payload.toString());
      d.ack();
    });
    try {
      const first = await rawClient(broker.port, 'stale-device', false);
      first.socket.write(publishPacket('stale/x', Buffer.from('A'), { qos: 2, id: 7 }));
      await eventually(() => assert.ok(!(first.bytes().length < 4), 'still: first.bytes().length < 4'), { timeoutMs: 5000 });
      first.socket.destroy(); // rebooted before PUBREL, its state gone
      await eventually(() => assert.ok(!(broker.connectedClients > 0), 'still: broker.connectedClients > 0'), { timeoutMs: 5000 });
      const second = await rawClient(broker.port, 'stale-device', false);
      const b = publishPacket('stale/x', Buffer.from('B'), { qos: 2, id: 7 });
      b[0] = (b[0] as number) | 0x08; // DUP: its first attempt was refused
      second.socket.write(b);
      await eventually(() => assert.ok(!(taken.length < 2), 'still: taken.length < 2'), { timeoutMs: 5000 });
      assert.deepEqual(taken, ['A', 'B']);
      second.socket.destroy();
    } finally {
      subscription.unsubscribe();
    }
  });
});

test("publishes behind a QoS 2 repeat lookup keep the device's order", { timeout: 20_000 }, async () => {
  await withBroker(async (broker) => {
    const taken: string[] = [];
    const subscription = broker.tap('test', ['order/#']).subscribe((d) => {
      taken.push(d.envelope.payload.toString());
      d.ack();
    });
    try {
      const device = await rawClient(broker.port, 'order-device');
      const repeat = publishPacket('order/x', Buffer.from('1 (a repeat never seen)'), { qos: 2, id: 3 });
      repeat[0] = (repeat[0] as number) | 0x08;
      device.socket.write(Buffer.concat([repeat, publishPacket('order/x', Buffer.from('2'), { qos: 1, id: 4 }), publishPacket('order/x', Buffer.from('3'), { qos: 0 })]));
      await eventually(() => assert.ok(!(taken.length < 3), 'still: taken.length < 3'), { timeoutMs: 5000 });
      assert.deepEqual(taken, ['1 (a repeat never seen)', '2', '3']);
      device.socket.destroy();
    } finally {
      subscription.unsubscribe();
    }
  });
});

test('once the broker drains, QoS 1 publishes are refused unstored: MQTT 3.1.1 closed, MQTT 5 told 0x8B', { timeout: 20_000 }, async () => {
  await withBroker(async (broker, url, counters) => {
    const taken: string[] = [];
    const subscription = broker.tap('test', ['drain/#']).subscribe((d) => {
      taken.push(d.envelope.payload.toString());
      d.ack();
    });
    const v4 = await connectAsync(url, { clientId: 'drain-v4', reconnectPeriod: 0 });
    const v5 = await connectAsync(url, { clientId: 'drain-v5', protocolVersion: 5, reconnectPeriod: 0 });
    const v5Packets = received(v5);
    try {
      assert.equal(await broker.drain(1000), true);
      const closed4 = new Promise<void>((resolve) => v4.once('close', () => resolve()));
      const closed5 = new Promise<void>((resolve) => v5.once('close', () => resolve()));
      void v4.publishAsync('drain/x', 'late v4', { qos: 1 }).catch(() => {});
      void v5.publishAsync('drain/x', 'late v5', { qos: 1 }).catch(() => {});
      await Promise.all([closed4, closed5]);
      assert.deepEqual(
        v5Packets.map((p) => `${p.cmd}:${(p as { reasonCode?: number }).reasonCode}`),
        ['disconnect:139'],
      );
      assert.deepEqual(taken, []);
      assert.equal(counters.snapshot()['mqtt.publish.refused{reason=shutting_down}'], 2);
    } finally {
      subscription.unsubscribe();
      await Promise.all([v4.endAsync(true), v5.endAsync(true)]);
    }
  });
});

test("a refused login under a device's client id leaves that device's QoS 2 messages awaiting PUBREL alone", { timeout: 20_000 }, async () => {
  const counters = new CounterRegistry();
  const profile = deviceSchema().parse({ name: 'sensor', credentials: [{ username: 'sensor-7', passwordHash: await hashPassword('secret-7') }] });
  const auth = new DeviceAuthenticator({
    profiles: [profile],
    allowAnonymous: false,
    anonymousAcl: { publish: [], subscribe: [] },
    maxConnectionsPerAddress: 100,
    maxAuthFailures: 10,
    counters,
  });
  const broker = await EmbeddedBroker.start({ host: '127.0.0.1', port: 0, logger: pino({ level: 'silent' }), counters, auth });
  const taken: string[] = [];
  const subscription = broker.tap('test', ['devices/#']).subscribe((d) => {
    taken.push(d.envelope.payload.toString());
    d.ack();
  });
  try {
    const device = await rawClient(broker.port, 'sensor-7', true, { username: 'sensor-7', password: 'secret-7' });
    const message = publishPacket('devices/sensor-7/telemetry', Buffer.from('once'), { qos: 2, id: 5 });
    device.socket.write(message);
    await eventually(() => assert.ok(!(device.bytes().length < 4), 'still: device.bytes().length < 4'), { timeoutMs: 5000 });
    await assert.rejects(
      connectAsync(`mqtt://127.0.0.1:${broker.port}`, { clientId: 'sensor-7', username: 'sensor-7', password: 'guess', reconnectPeriod: 0 }),
      /Bad username or password/,
    );
    await sleep(100);
    const again = Buffer.from(message);
    again[0] = (again[0] as number) | 0x08;
    device.socket.write(again);
    await eventually(() => assert.ok(!(device.bytes().length < 8), 'still: device.bytes().length < 8'), { timeoutMs: 5000 });
    await sleep(100);
    assert.deepEqual(taken, ['once'], 'the repeat was recognised: the refused login did not wipe the store');
    device.socket.destroy();
  } finally {
    subscription.unsubscribe();
    await broker.close();
  }
});
