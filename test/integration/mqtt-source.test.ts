import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connectAsync } from 'mqtt';
import pino from 'pino';
import { deviceSchema } from '../../src/config/schema.ts';
import type { Delivery } from '../../src/core/delivery.ts';
import { DeviceAuthenticator } from '../../src/mqtt/auth.ts';
import { EmbeddedBroker } from '../../src/mqtt/embedded-broker.ts';
import { hashPassword } from '../../src/mqtt/password.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { sourceConformance } from '../conformance/source-suite.ts';

for (const [label, protocolVersion] of [
  ['MQTT 3.1.1', 4],
  ['MQTT 5', 5],
] as const) {
  sourceConformance(`mqtt (embedded broker, ${label} clients)`, {
    start: async () => {
      const broker = await EmbeddedBroker.start({ host: '127.0.0.1', port: 0, logger: pino({ level: 'silent' }), counters: new CounterRegistry() });
      const source = broker.tap('test', ['devices/+/telemetry/#']);
      // One device for all messages. A nack closes its connection unacknowledged; it comes back
      // at once and, as MQTT asks, sends again every QoS 1 message not yet acknowledged, in order.
      const device = await connectAsync(`mqtt://127.0.0.1:${broker.port}`, { clientId: `dev${protocolVersion}`, protocolVersion, clean: false, reconnectPeriod: 20 });
      return {
        source,
        produce: async (payload) => {
          await device.publishAsync('devices/dev/telemetry/t', payload, { qos: 1 });
        },
        cleanup: async () => {
          await device.endAsync(true);
          await broker.close();
        },
      };
    },
  });
}

test('a delivery names the client id and the username its device logged in with', async () => {
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
  const seen: Delivery[] = [];
  const subscription = broker.tap('test', ['devices/#']).subscribe((d) => {
    seen.push(d);
    d.ack();
  });
  const client = await connectAsync(`mqtt://127.0.0.1:${broker.port}`, { clientId: 'sensor-7', username: 'sensor-7', password: 'secret-7', reconnectPeriod: 0 });
  try {
    await client.publishAsync('devices/sensor-7/telemetry/t', 'x', { qos: 1 });
    assert.equal(seen.length, 1);
    assert.deepEqual(seen[0]?.envelope.origin, { source: 'mqtt', qos: 1, retain: false, clientId: 'sensor-7', username: 'sensor-7' });
  } finally {
    subscription.unsubscribe();
    await client.endAsync(true);
    await broker.close();
  }
});

test("a tap added or removed after a topic was published to changes which taps take that topic's next messages", async () => {
  const broker = await EmbeddedBroker.start({ host: '127.0.0.1', port: 0, logger: pino({ level: 'silent' }), counters: new CounterRegistry() });
  const seen: string[] = [];
  const take = (name: string) => (d: Delivery) => {
    seen.push(`${name}:${d.envelope.payload.toString()}`);
    d.ack();
  };
  const first = broker.tap('first', ['devices/#']).subscribe(take('first'));
  const client = await connectAsync(`mqtt://127.0.0.1:${broker.port}`, { clientId: 'd1', reconnectPeriod: 0 });
  // A message handed to a tap that is gone is never acknowledged.
  const publish = (payload: string) =>
    Promise.race([
      client.publishAsync('devices/d1/telemetry/t', payload, { qos: 1 }),
      new Promise((_, reject) => setTimeout(() => reject(new Error(`message ${payload}: no PUBACK in 5 s`)), 5_000).unref()),
    ]);
  try {
    // The intake keeps which taps a topic goes to: a tap that comes or goes must change that.
    await publish('1');
    const second = broker.tap('second', ['devices/+/telemetry/t']).subscribe(take('second'));
    await publish('2');
    first.unsubscribe();
    await publish('3');
    second.unsubscribe();
    await publish('4');
    assert.deepEqual(seen, ['first:1', 'first:2', 'second:2', 'second:3']);
  } finally {
    await client.endAsync(true);
    await broker.close();
  }
});
