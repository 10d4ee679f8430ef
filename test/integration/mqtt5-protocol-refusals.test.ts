import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { type MqttClient, type Packet, connectAsync } from 'mqtt';
import mqttPacket from 'mqtt-packet';
import pino from 'pino';
import { EmbeddedBroker } from '../../src/mqtt/embedded-broker.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { eventually } from '../harness/eventually.ts';
import { RawMqtt5 } from '../harness/raw-mqtt5.ts';

// Protocol errors an MQTT 5 client commits, answered with the reason code §4.13 asks for and
// counted in mqtt.connections.refused (logged once per client and reason): a QoS 2 flood past
// the advertised Receive Maximum (DISCONNECT 0x93), a DISCONNECT asking for a Session Expiry
// Interval after a CONNECT with 0 (DISCONNECT 0x82, the will is published), a CONNECT with a
// Maximum Packet Size of 0 (CONNACK 0x82), and a packet over mqtt.maxPacketBytes after CONNACK
// (DISCONNECT 0x95). Before, each ended in a bare socket reset or was taken as valid.

const MAX_PACKET_BYTES = 64 * 1024;

interface Broker {
  readonly url: string;
  readonly counters: CounterRegistry;
  readonly logs: { level: number; msg: string; reason?: string }[];
  /** Payloads of the messages the broker took, in order. */
  readonly taken: string[];
}

async function withBroker(run: (broker: Broker) => Promise<void>): Promise<void> {
  const counters = new CounterRegistry();
  const logs: Broker['logs'] = [];
  const logger = pino(
    { level: 'info' },
    new Writable({
      write(chunk: Buffer, _encoding, done) {
        logs.push(JSON.parse(chunk.toString()) as Broker['logs'][number]);
        done();
      },
    }),
  );
  const broker = await EmbeddedBroker.start({ host: '127.0.0.1', port: 0, logger, counters, maxPacketBytes: MAX_PACKET_BYTES });
  const taken: string[] = [];
  const taps = broker.tap('test', ['#']).subscribe((d) => {
    taken.push(d.envelope.payload.length > 100 ? `${d.envelope.payload.length} bytes` : d.envelope.payload.toString());
    d.ack();
  });
  try {
    await run({ url: `mqtt://127.0.0.1:${broker.port}`, counters, logs, taken });
  } finally {
    taps.unsubscribe();
    await broker.close();
  }
}

function refused(counters: CounterRegistry, reason: string): number {
  return counters.snapshot()[`mqtt.connections.refused{reason=${reason}}`] ?? 0;
}

/** The packets a client receives, kept from before it connects. */
function received(client: MqttClient): Packet[] {
  const packets: Packet[] = [];
  client.on('packetreceive', (p) => packets.push(p));
  return packets;
}

function qos2(messageId: number): mqttPacket.IPublishPacket {
  return { cmd: 'publish', topic: 'devices/d/telemetry', payload: Buffer.from(`m-${messageId}`), qos: 2, messageId, retain: false, dup: false };
}

test('CONNACK advertises the Receive Maximum the broker enforces; QoS 2 messages past it end the connection with DISCONNECT 0x93', { timeout: 30_000 }, async () => {
  await withBroker(async ({ url, counters, logs }) => {
    const { raw, connack } = await RawMqtt5.connect(url, { clientId: 'qos2-window' });
    const receiveMaximum = connack.properties?.receiveMaximum;
    assert.equal(receiveMaximum, 1000, 'CONNACK tells the client how many QoS 1/2 messages it may have unacknowledged');
    // A client within the window (no PUBREL sent: every message stays in flight) is served.
    for (let id = 1; id <= receiveMaximum; id += 1) raw.send(qos2(id));
    await eventually(() => assert.equal(raw.packets.filter((p) => p.cmd === 'pubrec').length, receiveMaximum), { timeoutMs: 10_000 });
    assert.equal(raw.closed, false);
    // One more is past the window.
    raw.send(qos2(receiveMaximum + 1));
    const disconnect = (await raw.next('disconnect')) as mqttPacket.IDisconnectPacket;
    assert.equal(disconnect.reasonCode, 0x93, 'Receive Maximum exceeded');
    await eventually(() => assert.ok(raw.closed));
    assert.equal(refused(counters, 'receive_maximum_exceeded'), 1);
    assert.equal(logs.filter((l) => l.reason === 'receive_maximum_exceeded').length, 1);
  });
});

test('mqtt.js publishing 1,500 QoS 2 messages at once is told DISCONNECT 0x93 once; 1,500 QoS 1 messages all pass', { timeout: 30_000 }, async () => {
  await withBroker(async ({ url, counters, logs }) => {
    const qos1 = await connectAsync(url, { protocolVersion: 5, reconnectPeriod: 0 });
    const acked = await Promise.all(Array.from({ length: 1500 }, (_, i) => qos1.publishAsync('devices/d/telemetry', `m-${i}`, { qos: 1 }).then(() => true)));
    assert.equal(acked.length, 1500);
    await qos1.endAsync();

    const flood = await connectAsync(url, { protocolVersion: 5, reconnectPeriod: 0 });
    flood.on('error', () => {});
    const packets = received(flood);
    for (let i = 0; i < 1500; i += 1) flood.publishAsync('devices/d/telemetry', `m-${i}`, { qos: 2 }).catch(() => {});
    await eventually(
      () =>
        assert.deepEqual(
          packets.filter((p) => p.cmd === 'disconnect').map((p) => (p as mqttPacket.IDisconnectPacket).reasonCode),
          [0x93],
        ),
      { timeoutMs: 10_000 },
    );
    await sleep(200);
    assert.equal(packets.filter((p) => p.cmd === 'disconnect').length, 1, 'one DISCONNECT, not one per message past the window');
    assert.equal(refused(counters, 'receive_maximum_exceeded'), 1);
    assert.equal(logs.filter((l) => l.reason === 'receive_maximum_exceeded').length, 1);
    flood.end(true);
  });
});

test('an MQTT 3.1.1 client past the QoS 2 window is disconnected, and counted', { timeout: 30_000 }, async () => {
  await withBroker(async ({ url, counters }) => {
    const flood = await connectAsync(url, { protocolVersion: 4, reconnectPeriod: 0 });
    flood.on('error', () => {});
    for (let i = 0; i < 1500; i += 1) flood.publishAsync('devices/d/telemetry', `m-${i}`, { qos: 2 }).catch(() => {});
    await eventually(() => assert.equal(refused(counters, 'receive_maximum_exceeded'), 1), { timeoutMs: 10_000 });
    await eventually(() => assert.equal(flood.connected, false));
    flood.end(true);
  });
});

test('a DISCONNECT with a Session Expiry Interval after a CONNECT with none is a Protocol Error: DISCONNECT 0x82, and the will is published (§3.14.2.2.2)', {
  timeout: 20_000,
}, async () => {
  await withBroker(async ({ url, counters, logs }) => {
    const watcher = await connectAsync(url, { protocolVersion: 5, clientId: 'will-watcher' });
    const wills: string[] = [];
    watcher.on('message', (_topic, payload) => wills.push(payload.toString()));
    await watcher.subscribeAsync('wills/#', { qos: 1 });
    const will = (name: string) => ({ topic: `wills/${name}`, payload: Buffer.from(`${name} gone`), qos: 1 as const, retain: false });

    // A valid DISCONNECT (no new interval) discards the will, as before.
    const normal = await RawMqtt5.connect(url, { clientId: 'normal', will: will('normal') });
    assert.equal(normal.connack.reasonCode, 0);
    normal.raw.send({ cmd: 'disconnect', reasonCode: 0, properties: { sessionExpiryInterval: 0 } });
    await eventually(() => assert.ok(normal.raw.closed));

    const { raw, connack } = await RawMqtt5.connect(url, { clientId: 'expiry-after-zero', will: will('expiry-after-zero') });
    assert.equal(connack.reasonCode, 0);
    raw.send({ cmd: 'disconnect', reasonCode: 0, properties: { sessionExpiryInterval: 60 } });
    const disconnect = (await raw.next('disconnect')) as mqttPacket.IDisconnectPacket;
    assert.equal(disconnect.reasonCode, 0x82);
    await eventually(() => assert.deepEqual(wills, ['expiry-after-zero gone']), { timeoutMs: 5000 });
    assert.equal(refused(counters, 'protocol_error'), 1);
    assert.equal(logs.filter((l) => l.reason === 'protocol_error').length, 1);
    await watcher.endAsync();
  });
});

test('a CONNECT with a Maximum Packet Size of 0 is a Protocol Error: CONNACK 0x82', { timeout: 20_000 }, async () => {
  await withBroker(async ({ url, counters, logs }) => {
    const { raw, connack } = await RawMqtt5.connect(url, { clientId: 'max-packet-zero', properties: { maximumPacketSize: 0 } });
    assert.equal(connack.reasonCode, 0x82);
    await eventually(() => assert.ok(raw.closed));
    assert.equal(refused(counters, 'protocol_error'), 1);
    assert.equal(logs.filter((l) => l.reason === 'protocol_error').length, 1);
    assert.equal(counters.snapshot()['mqtt.connections.opened'] ?? 0, 0);
  });
});

test('an MQTT 5 client sending a packet over mqtt.maxPacketBytes after CONNACK gets DISCONNECT 0x95 before the connection closes', { timeout: 20_000 }, async () => {
  await withBroker(async ({ url, counters, logs, taken }) => {
    const client = await connectAsync(url, { protocolVersion: 5, reconnectPeriod: 0 });
    client.on('error', () => {});
    const packets = received(client);
    client.publish('devices/d/telemetry', Buffer.alloc(300 * 1024), { qos: 1 });
    await eventually(
      () =>
        assert.deepEqual(
          packets.filter((p) => p.cmd === 'disconnect').map((p) => (p as mqttPacket.IDisconnectPacket).reasonCode),
          [0x95],
        ),
      { timeoutMs: 5000 },
    );
    await eventually(() => assert.equal(client.connected, false));
    assert.equal(refused(counters, 'packet_too_large'), 1);
    assert.equal(logs.filter((l) => l.reason === 'packet_too_large').length, 1);
    client.end(true);

    // A whole packet before the large one, in the same write, is still taken.
    const { raw } = await RawMqtt5.connect(url, { clientId: 'small-then-large' });
    const small = mqttPacket.generate({ cmd: 'publish', topic: 'devices/d/telemetry', payload: Buffer.from('small'), qos: 0, retain: false, dup: false }, { protocolVersion: 5 });
    const large = mqttPacket.generate(
      { cmd: 'publish', topic: 'devices/d/telemetry', payload: Buffer.alloc(100 * 1024), qos: 0, retain: false, dup: false },
      { protocolVersion: 5 },
    );
    raw.sendBytes(Buffer.concat([small, large.subarray(0, 1000)]));
    const disconnect = (await raw.next('disconnect')) as mqttPacket.IDisconnectPacket;
    assert.equal(disconnect.reasonCode, 0x95);
    await eventually(() => assert.ok(raw.closed));
    await eventually(() => assert.deepEqual(taken, ['small']));
    assert.equal(refused(counters, 'packet_too_large'), 2);

    // MQTT 3.1.1 has no DISCONNECT from the server: the connection just closes.
    const v4 = await connectAsync(url, { protocolVersion: 4, reconnectPeriod: 0 });
    v4.on('error', () => {});
    v4.publish('devices/d/telemetry', Buffer.alloc(300 * 1024), { qos: 1 });
    await eventually(() => assert.equal(v4.connected, false), { timeoutMs: 5000 });
    assert.equal(refused(counters, 'packet_too_large'), 3);
    v4.end(true);
  });
});
