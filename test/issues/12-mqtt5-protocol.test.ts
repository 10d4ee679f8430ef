// Issue 12: a connection's protocol rules on `ferry run` (MQTT 5 §3.1, §3.2, §4.13): CONNECT
// first and once, the session taken over by a second connection, Request Problem Information.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect } from 'node:net';
import { test } from 'node:test';
import mqttPacket from 'mqtt-packet';
import { eventually } from '../harness/eventually.ts';
import { gatewayForFile } from '../harness/mqtt5-gateway.ts';
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

test('a connection whose first packet is not CONNECT is closed without a CONNACK [MQTT-3.1.0-1]', async () => {
  const { hostname, port } = new URL(file.gw.mqttUrl);
  const socket = connect(Number(port), hostname);
  await once(socket, 'connect');
  const received: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => received.push(chunk));
  const closed = once(socket, 'close');
  socket.write(mqttPacket.generate({ cmd: 'publish', topic: 'early/bird', payload: Buffer.from('x'), qos: 1, messageId: 1, dup: false, retain: false }));
  await closed;
  assert.equal(Buffer.concat(received).length, 0, 'nothing was sent back');
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
