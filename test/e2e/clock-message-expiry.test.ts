// The wall clock stepped a day forward (NTP setting the clock of a gateway that booted without a
// real-time clock) while `ferry run` holds MQTT 5 messages with a Message Expiry Interval of an
// hour, retained and queued for an offline session: the step must not expire them, and those
// whose interval passed must still expire. The process runs under libfaketime (its wall clock
// moved by rewriting a file, its monotonic clock left alone): the machine's own clock is never
// touched.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { IPublishPacket, MqttClient } from 'mqtt';
import { eventually } from '../harness/eventually.ts';
import { fakeClock } from '../harness/fake-clock.ts';
import { startFerry } from '../harness/ferry-process.ts';
import { connectListening } from '../harness/recording-client.ts';
import { tempDirs } from '../harness/temp.ts';

const HOUR_S = 3600;
const DAY_S = 86_400;

const dirs = tempDirs('ferry-e2e-clock-expiry-');

/** An MQTT 5 client of `url` and each message it receives, with its properties. */
async function client(url: string, clientId: string, persistent: boolean): Promise<{ mqtt: MqttClient; got: IPublishPacket[] }> {
  const got: IPublishPacket[] = [];
  const options = { clientId, protocolVersion: 5 as const, clean: !persistent, reconnectPeriod: 0, ...(persistent ? { properties: { sessionExpiryInterval: HOUR_S } } : {}) };
  // A resumed session's queue comes with the CONNACK: listen before it.
  const mqtt = await connectListening(url, options, (mqtt) => mqtt.on('message', (_topic, _payload, packet) => got.push(packet)));
  return { mqtt, got };
}

/** The gateway's wall clock, ms: the Date header of its admin server's answer (node:http reads it from Date). */
async function gatewayNow(adminUrl: string): Promise<number> {
  const response = await fetch(`${adminUrl}/healthz`, { signal: AbortSignal.timeout(5_000) });
  await response.arrayBuffer();
  return Date.parse(response.headers.get('date') ?? '');
}

/** Topic and payload of each message, in the order received. */
const received = (got: readonly IPublishPacket[]) => got.map((p) => `${p.topic} ${p.payload.toString()}`);

test('a clock set a day forward expires no MQTT 5 message an hour from its expiry, retained or queued; one past its interval still expires', { timeout: 120_000 }, async (t) => {
  const root = dirs();
  const clock = fakeClock(root);
  writeFileSync(join(root, 'gateway.yaml'), 'mqtt: {allowAnonymous: loopback}\nbridges: []\ndevices: []\n');
  const gw = await startFerry(['--config', join(root, 'gateway.yaml'), '--data-dir', join(root, 'data')], clock.env);
  t.after(() => gw.child.kill('SIGKILL'));

  // A persistent session, offline while the messages are queued for it.
  const away = await client(gw.mqttUrl, 'away', true);
  await away.mqtt.subscribeAsync('q/#', { qos: 1 });
  await away.mqtt.endAsync();

  const publisher = await client(gw.mqttUrl, 'publisher', false);
  t.after(() => publisher.mqtt.end(true));
  // The short ones first: retained messages are sent in topic order and a queue in its order,
  // so a short one not expired would arrive before the long one.
  const expiring = (seconds: number) => ({ qos: 1 as const, properties: { messageExpiryInterval: seconds } });
  await publisher.mqtt.publishAsync('r/a-short', 'second', { ...expiring(1), retain: true });
  await publisher.mqtt.publishAsync('r/b-long', 'hour', { ...expiring(HOUR_S), retain: true });
  await publisher.mqtt.publishAsync('q/a-short', 'second', expiring(1));
  await publisher.mqtt.publishAsync('q/b-long', 'hour', expiring(HOUR_S));

  clock.set('+1d');
  // The gateway's clock is a day ahead once the step reached the process (its uptime goes by the
  // monotonic clock and does not show it).
  await eventually(async () => assert.ok((await gatewayNow(gw.adminUrl)) >= Date.now() + (DAY_S - 60) * 1000, 'the gateway does not see the clock set forward yet'), {
    timeoutMs: 10_000,
  });
  // The short messages' second has passed by the monotonic clock too.
  await sleep(1_500);

  const late = await client(gw.mqttUrl, 'late', false);
  t.after(() => late.mqtt.end(true));
  await late.mqtt.subscribeAsync('r/#', { qos: 1 });
  await eventually(() => assert.ok(late.got.length > 0, 'no retained message: the clock set a day forward expired the one an hour from its expiry'), { timeoutMs: 5_000 });
  assert.deepEqual(received(late.got), ['r/b-long hour'], 'retained messages');
  assert.ok((late.got[0]?.properties?.messageExpiryInterval ?? 0) > HOUR_S - 60, `retained message sent with ${late.got[0]?.properties?.messageExpiryInterval} s of its hour left`);

  const back = await client(gw.mqttUrl, 'away', true);
  t.after(() => back.mqtt.end(true));
  await eventually(() => assert.ok(back.got.length > 0, 'no queued message: the clock set a day forward expired the one an hour from its expiry'), { timeoutMs: 5_000 });
  assert.deepEqual(received(back.got), ['q/b-long hour'], 'messages queued for the offline session');
  assert.ok((back.got[0]?.properties?.messageExpiryInterval ?? 0) > HOUR_S - 60, `queued message sent with ${back.got[0]?.properties?.messageExpiryInterval} s of its hour left`);
});
