import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { type IClientOptions, type MqttClient, connectAsync } from 'mqtt';
import pino from 'pino';
import { EmbeddedBroker } from '../../src/mqtt/embedded-broker.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { devicesSinkOn } from '../harness/devices-sink.ts';
import { eventually } from '../harness/eventually.ts';
import { connectListening } from '../harness/recording-client.ts';
import { randomName } from '../harness/services.ts';

// A command whose copy the broker drops for a client without sending it, for a reason other than
// its size: settled as soon as the broker says so when that client will never get it, and still
// waited for when its session keeps it. Real mqtt.js MQTT 5 clients on the embedded broker.

const counters = new CounterRegistry();
const broker = await EmbeddedBroker.start({ host: '127.0.0.1', port: 0, logger: pino({ level: 'silent' }), counters });
after(() => broker.close());
const url = `mqtt://127.0.0.1:${broker.port}`;

/** aedes' `outboundQueueLimit` (the patch's default): copies kept per MQTT 5 client while its Receive Maximum is reached. */
const OUTBOUND_QUEUE_LIMIT = 1000;
/** Far enough that a command still waiting for an acknowledgement that cannot come shows as `expired` rather than settled. */
const EXPIRY_MS = 20_000;

async function until(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  await eventually(() => assert.ok(check(), what), { timeoutMs });
}

/** An MQTT 5 device that receives messages and holds their PUBACKs (mqtt.js acks when `customHandleAcks` calls back). */
async function holdingDevice(options: IClientOptions): Promise<{ client: MqttClient; received: string[] }> {
  const received: string[] = [];
  const client = await connectAsync(url, {
    protocolVersion: 5,
    reconnectPeriod: 0,
    ...options,
    customHandleAcks: (_topic, message) => {
      received.push(message.toString());
    },
  });
  return { client, received };
}

const count = (name: string) => counters.snapshot()[name] ?? 0;

test('a command discarded for a clean session whose Receive Maximum is reached and whose queue is full settles at once as refused (receive_queue_full)', {
  timeout: 60_000,
}, async () => {
  const { send, events, subscription } = devicesSinkOn(broker, counters, 'rqf', { topic: 'rqf/${key}/cmd', expiryMs: EXPIRY_MS });
  const clientId = randomName('rqf-');
  const topic = `rqf/${clientId}/cmd`;
  const device = await holdingDevice({ clientId, clean: true, properties: { receiveMaximum: 1 } });
  try {
    await device.client.subscribeAsync(topic, { qos: 1 });
    // One copy in flight (its PUBACK held), then as many waiting as the broker keeps.
    for (let i = 0; i <= OUTBOUND_QUEUE_LIMIT; i++) {
      broker.publishCommand({ topic, payload: Buffer.from(`filler-${i}`), qos: 1, retain: false, expiresAt: Date.now() + 60_000 });
    }
    const before = count('commands.refused{bridge=rqf,reason=receive_queue_full}');
    const command = send('the-command', { key: clientId });
    await until(() => command.outcome() !== 'pending', 'settled upstream', EXPIRY_MS + 5_000);
    assert.equal(count('commands.refused{bridge=rqf,reason=receive_queue_full}'), before + 1, 'counted as refused, not as expired');
    assert.equal(count('commands.expired{bridge=rqf,reason=expired}'), 0);
    const failed = events.filter((e) => e.type === 'failed');
    assert.equal(failed.length, 1);
    assert.match(failed[0]?.type === 'failed' ? failed[0].error.message : '', new RegExp(`Receive Maximum of device '${clientId}'`));
    assert.deepEqual(device.received, ['filler-0']);
  } finally {
    subscription.unsubscribe();
    await device.client.endAsync(true);
  }
});

test("a command past a persistent session's Receive Maximum queue stays in the session: sent once the device takes messages again, and acked", {
  timeout: 60_000,
}, async () => {
  const { send, subscription } = devicesSinkOn(broker, counters, 'rqp', { topic: 'rqp/${key}/cmd', expiryMs: EXPIRY_MS });
  const clientId = randomName('rqp-');
  const topic = `rqp/${clientId}/cmd`;
  const options = { clientId, clean: false, properties: { receiveMaximum: 1, sessionExpiryInterval: 300 } };
  const device = await holdingDevice(options);
  let back: MqttClient | undefined;
  try {
    await device.client.subscribeAsync(topic, { qos: 1 });
    for (let i = 0; i <= OUTBOUND_QUEUE_LIMIT; i++) {
      broker.publishCommand({ topic, payload: Buffer.from(`filler-${i}`), qos: 1, retain: false, expiresAt: Date.now() + 60_000 });
    }
    const before = count('commands.refused{bridge=rqp,reason=receive_queue_full}');
    const command = send('the-command', { key: clientId });
    // The device comes back acknowledging: every filler, then the command, which it acks.
    await device.client.endAsync(true);
    const received: string[] = [];
    back = await connectListening(url, { ...options, protocolVersion: 5, reconnectPeriod: 0 }, (back) =>
      back.on('message', (_topic, payload) => received.push(payload.toString())),
    );
    await until(() => command.outcome() === 'acked' && received.includes('the-command'), 'the command arrived and was acked', 30_000);
    assert.equal(count('commands.refused{bridge=rqp,reason=receive_queue_full}'), before, 'not refused: the session kept it');
    assert.equal(new Set(received.filter((p) => p.startsWith('filler-'))).size, OUTBOUND_QUEUE_LIMIT + 1, 'every filler arrived');
  } finally {
    subscription.unsubscribe();
    await device.client.endAsync(true);
    await back?.endAsync(true);
  }
});

test('a command whose shared-subscription member (clean session) disconnects before its PUBACK, with no other member, settles at once as dropped (no_share_member)', {
  timeout: 60_000,
}, async () => {
  const { send, events, subscription } = devicesSinkOn(broker, counters, 'share', { topic: 'share/${key}/cmd', expiryMs: EXPIRY_MS });
  const key = randomName('share-');
  const member = await holdingDevice({ clientId: randomName('member-') });
  try {
    await member.client.subscribeAsync(`$share/workers/share/${key}/cmd`, { qos: 1 });
    const command = send('job', { key });
    await until(() => member.received.length === 1, 'the member got its copy');
    assert.equal(command.outcome(), 'pending');
    // Gone without its PUBACK (no DISCONNECT packet): the broker looks for another member, finds none.
    member.client.stream.destroy();
    await until(() => command.outcome() !== 'pending', 'settled upstream', EXPIRY_MS + 5_000);
    assert.equal(count('commands.expired{bridge=share,reason=no_share_member}'), 1);
    assert.equal(count('commands.expired{bridge=share,reason=expired}'), 0);
    const failed = events.filter((e) => e.type === 'failed');
    assert.equal(failed.length, 1);
    assert.match(failed[0]?.type === 'failed' ? failed[0].error.message : '', /no other member of its shared subscription/);
  } finally {
    subscription.unsubscribe();
    await member.client.endAsync(true);
  }
});

test("a shared-subscription member with a persistent session keeps the command it did not acknowledge: it waits, and the member's PUBACK on return settles it", {
  timeout: 60_000,
}, async () => {
  const { send, subscription } = devicesSinkOn(broker, counters, 'share-kept', { topic: 'sharekept/${key}/cmd', expiryMs: EXPIRY_MS });
  const key = randomName('sharekept-');
  const options = { clientId: randomName('member-'), clean: false, properties: { sessionExpiryInterval: 300 } };
  const member = await holdingDevice(options);
  let back: MqttClient | undefined;
  try {
    await member.client.subscribeAsync(`$share/workers/sharekept/${key}/cmd`, { qos: 1 });
    const command = send('job', { key });
    await until(() => member.received.length === 1, 'the member got its copy');
    member.client.stream.destroy();
    const received: string[] = [];
    back = await connectListening(url, { ...options, protocolVersion: 5, reconnectPeriod: 0 }, (back) =>
      back.on('message', (_topic, payload) => received.push(payload.toString())),
    );
    await until(() => command.outcome() === 'acked', "settled by the member's PUBACK after its return");
    assert.deepEqual(received, ['job']);
    assert.equal(count('commands.delivered{bridge=share-kept,qos=1}'), 1);
  } finally {
    subscription.unsubscribe();
    await member.client.endAsync(true);
    await back?.endAsync(true);
  }
});
