// Issue 12: a keep alive limit (`mqtt.maxKeepAliveSeconds`) answered as MQTT 5 (§3.2.2.3.14,
// Server Keep Alive) and MQTT 3.1.1 (§3.2.2.3) say, on `ferry run`.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { MqttClient } from 'mqtt';
import { eventually } from '../harness/eventually.ts';
import type { RunningFerry } from '../harness/ferry-process.ts';
import { mosquittoPub } from '../harness/mosquitto.ts';
import { connectMqtt5, startAnonymousGateway } from '../harness/mqtt5-gateway.ts';
import { RawMqtt5 } from '../harness/raw-mqtt5.ts';
import { randomName } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-issue12-keepalive-');
let gw: RunningFerry;
const clients: MqttClient[] = [];

before(async () => {
  gw = await startAnonymousGateway(tempDir(), 'maxKeepAliveSeconds: 2');
});

after(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true)));
  gw.child.kill('SIGTERM');
  await gw.exited;
});

for (const [asked, told] of [
  [0, 2],
  [600, 2],
  [1, undefined],
] as const) {
  test(`an MQTT 5 device asking for keep alive ${asked} is told Server Keep Alive ${told ?? '(none: its own stands)'} (§3.2.2.3.14)`, async () => {
    const d = await connectMqtt5(gw.mqttUrl, randomName('ka-'), { keepalive: asked });
    clients.push(d.client);
    assert.equal(d.connack.properties?.serverKeepAlive, told);
  });
}

test('an MQTT 5 device that asked for no keep alive is disconnected when silent past the Server Keep Alive it was given (§3.1.2.10)', async () => {
  const { raw, connack } = await RawMqtt5.connect(gw.mqttUrl, { clientId: randomName('silent-'), keepalive: 0 });
  after(() => raw.end());
  assert.equal(connack.properties?.serverKeepAlive, 2);
  await eventually(() => assert.equal(raw.closed, true));
});

test('mosquitto_pub -V mqttv5 -k 600 is given the limit and publishes; -V mqttv311 -k 600 is refused with "identifier rejected"', async () => {
  const topic = `ka/${randomName('mosq-')}`;
  const v5 = await mosquittoPub(gw.mqttUrl, topic, 'x', { protocol: 'mqttv5', qos: 1, extraArgs: ['-k', '600'] });
  assert.equal(v5.code, 0, v5.stderr);
  const v311 = await mosquittoPub(gw.mqttUrl, topic, 'x', { protocol: 'mqttv311', qos: 1, extraArgs: ['-k', '600'] });
  assert.notEqual(v311.code, 0);
  assert.match(v311.stderr, /identifier rejected/i);
});
