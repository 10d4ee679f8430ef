// Issue 12: a connection's protocol rules on `ferry run` (MQTT 5 §3.1, §3.2, §4.13): CONNECT
// first and once, the session taken over by a second connection, Request Problem Information,
// and strings in properties that are not well-formed UTF-8 or hold NUL (§1.5.4).
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect } from 'node:net';
import { test } from 'node:test';
import mqttPacket from 'mqtt-packet';
import { eventually } from '../harness/eventually.ts';
import { gatewayCounters, gatewayForFile } from '../harness/mqtt5-gateway.ts';
import { RawMqtt5 } from '../harness/raw-mqtt5.ts';
import { randomName } from '../harness/services.ts';

const file = gatewayForFile('ferry-issue12-protocol-');
const { device } = file;

test('a second CONNECT on a connection is a protocol error: the connection is closed [MQTT-3.1.0-2]', async () => {
  const { raw } = await RawMqtt5.connect(file.gw.mqttUrl, { clientId: randomName('twice-') });
  raw.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 60, clientId: randomName('again-') });
  await eventually(() => assert.ok(raw.closed));
  // No second CONNACK; a DISCONNECT saying why may come before the close.
  assert.deepEqual(
    raw.packets.filter((p) => p.cmd !== 'disconnect' || (p.reasonCode ?? 0) < 0x80).map((p) => p.cmd),
    [],
  );
});

/** Sends `bytes` as the first thing on a new connection; what the gateway sent back before it closed the connection. */
async function answerUntilClosed(bytes: Buffer): Promise<Buffer> {
  const { hostname, port } = new URL(file.gw.mqttUrl);
  const socket = connect(Number(port), hostname);
  await once(socket, 'connect');
  const received: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => received.push(chunk));
  const closed = once(socket, 'close');
  socket.write(bytes);
  await closed;
  return Buffer.concat(received);
}

test('a connection whose first packet is not CONNECT is closed without a CONNACK [MQTT-3.1.0-1]', async () => {
  const answer = await answerUntilClosed(mqttPacket.generate({ cmd: 'publish', topic: 'early/bird', payload: Buffer.from('x'), qos: 1, messageId: 1, dup: false, retain: false }));
  assert.equal(answer.length, 0, 'nothing was sent back');
});

test('with Request Problem Information 0 a refusal carries no Reason String; without it, it says why [MQTT-3.1.2-29]', async () => {
  const quiet = await device(randomName('quiet-'), { properties: { requestProblemInformation: false } });
  const told = await device(randomName('told-'));
  for (const d of [quiet, told]) {
    // Publishing to a '$' topic is refused (the ACL of the anonymous default): PUBACK 0x87.
    await assert.rejects(d.client.publishAsync('$SYS/x', 'no', { qos: 1 }), /Not authorized/);
  }
  const puback = (d: typeof quiet) => d.packets.find((p) => p.cmd === 'puback') as { reasonCode?: number; properties?: { reasonString?: string } };
  assert.equal(puback(quiet).reasonCode, 0x87);
  assert.equal(puback(quiet).properties?.reasonString, undefined);
  assert.match(puback(told).properties?.reasonString ?? '', /not allowed/);
});

test('a second connection with the same client id takes the session over: the first gets DISCONNECT 0x8E [MQTT-3.1.4-3]', async () => {
  const id = randomName('twin-');
  const first = await device(id);
  await device(id);
  await eventually(() => assert.ok(first.packets.some((p) => p.cmd === 'disconnect')));
  assert.deepEqual(
    first.packets.filter((p) => p.cmd === 'disconnect').map((p) => (p as { reasonCode?: number }).reasonCode),
    [0x8e],
  );
});

/** Ill-formed UTF-8, 8 bytes: an overlong '/', then an encoded surrogate cut short. */
const ILL_FORMED = Buffer.concat([Buffer.from('ab'), Buffer.from([0xc0, 0xaf]), Buffer.from('cd'), Buffer.from([0xed, 0xa0])]);

test('a PUBLISH whose properties hold ill-formed UTF-8 or NUL is a Malformed Packet: DISCONNECT 0x81, not stored nor forwarded; well-formed text passes [MQTT-1.5.4-1, MQTT-1.5.4-2]', async () => {
  const topic = `devices/${randomName('utf-')}/telemetry`;
  const watcher = await device();
  await watcher.client.subscribeAsync(topic, { qos: 1 });
  const before = (await gatewayCounters(file.gw))['mqtt.publish.refused{reason=malformed}'] ?? 0;
  const publish = (properties: Record<string, unknown>, messageId: number) =>
    ({ cmd: 'publish', topic, payload: Buffer.from(`m${messageId}`), qos: 1, messageId, dup: false, retain: false, properties }) as mqttPacket.IPublishPacket;
  const cases: [string, (raw: RawMqtt5) => void][] = [
    ['a user property value', (raw) => raw.sendWith(publish({ userProperties: { unit: 'XXXXXXXX' } }, 1), 'XXXXXXXX', ILL_FORMED)],
    ['a user property name', (raw) => raw.sendWith(publish({ userProperties: { XXXXXXXX: 'v' } }, 2), 'XXXXXXXX', ILL_FORMED)],
    ['the content type', (raw) => raw.sendWith(publish({ contentType: 'XXXXXXXX' }, 3), 'XXXXXXXX', ILL_FORMED)],
    ['NUL in the response topic', (raw) => raw.send(publish({ responseTopic: 'replies/a\u0000b' }, 4))],
  ];
  for (const [what, send] of cases) {
    const { raw } = await RawMqtt5.connect(file.gw.mqttUrl, { clientId: randomName('bad-') });
    send(raw);
    await eventually(() => assert.ok(raw.closed, `${what}: the connection stays open`));
    assert.deepEqual(
      raw.packets.map((p) => [p.cmd, (p as { reasonCode?: number }).reasonCode]),
      [['disconnect', 0x81]],
      `${what}: a DISCONNECT 0x81 and nothing else (no PUBACK)`,
    );
    assert.match((raw.packets[0] as mqttPacket.IDisconnectPacket).properties?.reasonString ?? '', /malformed packet/);
  }
  // A will with such a property: refused when it would be published, not sent.
  const { hostname, port } = new URL(file.gw.mqttUrl);
  const socket = connect(Number(port), hostname);
  await once(socket, 'connect');
  const will = { topic, payload: Buffer.from('will'), qos: 1, retain: false, properties: { userProperties: { state: 'XXXXXXXX' } } } as const;
  const connectPacket = mqttPacket.generate(
    { cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 60, clientId: randomName('will-'), will },
    { protocolVersion: 5 },
  );
  ILL_FORMED.copy(connectPacket, connectPacket.indexOf('XXXXXXXX'));
  const connacked = once(socket, 'data');
  socket.write(connectPacket);
  await connacked;
  socket.destroy();
  await eventually(async () => assert.equal((await gatewayCounters(file.gw))['mqtt.publish.refused{reason=malformed}'], before + cases.length + 1));
  // Well-formed text beyond ASCII is not refused, and is forwarded as it was.
  const { raw } = await RawMqtt5.connect(file.gw.mqttUrl, { clientId: randomName('good-') });
  raw.send(publish({ contentType: 'text/plain; charset=utf-8', userProperties: { unité: '°C ✓ 🌡' } }, 5));
  assert.equal(((await raw.next('puback')) as mqttPacket.IPubackPacket).reasonCode ?? 0, 0);
  await eventually(() => assert.equal(watcher.publishes.length, 1));
  assert.equal(watcher.publishes[0]?.payload.toString(), 'm5', 'only the well-formed message reached the subscriber');
  assert.deepEqual({ ...watcher.publishes[0]?.properties?.userProperties }, { unité: '°C ✓ 🌡' });
  raw.end();
});

/** An MQTT string: its length in two bytes, then its UTF-8. */
const mqttString = (text: string) => Buffer.concat([Buffer.from([0, Buffer.byteLength(text)]), Buffer.from(text)]);
/** A Session Expiry Interval (0x11) of 100 s, then one of 200 s. */
const TWO_EXPIRIES = Buffer.from([0x11, 0, 0, 0, 100, 0x11, 0, 0, 0, 200]);

test('a property other than User Property sent twice is a Protocol Error: the connection is closed, and the gateway goes on', async () => {
  // CONNECT with two Session Expiry Intervals (aedes took [100, 200] for one, and its timer's NaN crashed the process at the close).
  const body = Buffer.concat([mqttString('MQTT'), Buffer.from([5, 0x02, 0, 60, TWO_EXPIRIES.length]), TWO_EXPIRIES, mqttString(randomName('twice-'))]);
  assert.equal((await answerUntilClosed(Buffer.concat([Buffer.from([0x10, body.length]), body]))).length, 0, 'no CONNACK');
  // DISCONNECT with two Session Expiry Intervals, and a PUBLISH with two Topic Aliases (each
  // array a new key of the client's alias map, without limit).
  const disconnecting = await RawMqtt5.connect(file.gw.mqttUrl, { clientId: randomName('bye-') });
  disconnecting.raw.sendBytes(Buffer.concat([Buffer.from([0xe0, 2 + TWO_EXPIRIES.length, 0x00, TWO_EXPIRIES.length]), TWO_EXPIRIES]));
  const aliasing = await RawMqtt5.connect(file.gw.mqttUrl, { clientId: randomName('alias-') });
  const aliases = Buffer.from([0x23, 0, 1, 0x23, 0, 1]);
  const publish = Buffer.concat([mqttString('devices/a/telemetry'), Buffer.from([aliases.length]), aliases, Buffer.from('x')]);
  aliasing.raw.sendBytes(Buffer.concat([Buffer.from([0x30, publish.length]), publish]));
  await eventually(() => assert.ok(disconnecting.raw.closed && aliasing.raw.closed));
  await new Promise((resolve) => setTimeout(resolve, 300));
  // The gateway is still there for everyone else.
  const after = await device(randomName('after-'));
  await after.client.publishAsync('devices/after/telemetry', 'ok', { qos: 1 });
  assert.equal(file.gw.child.exitCode, null);
});
