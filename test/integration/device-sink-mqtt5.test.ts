import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { type MqttClient, connectAsync } from 'mqtt';
import pino from 'pino';
import type { Delivery } from '../../src/core/delivery.ts';
import { EmbeddedBroker } from '../../src/mqtt/embedded-broker.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { devicesSinkOn } from '../harness/devices-sink.ts';
import { eventually } from '../harness/eventually.ts';
import { mosquittoSub } from '../harness/mosquitto.ts';
import { connectListening } from '../harness/recording-client.ts';
import { randomName } from '../harness/services.ts';

// Commands to MQTT 5 devices as their properties shape them: headers a strict client refuses,
// the device's Maximum Packet Size, request/response.

const counters = new CounterRegistry();
const broker = await EmbeddedBroker.start({ host: '127.0.0.1', port: 0, logger: pino({ level: 'silent' }), counters });
after(() => broker.close());
const url = `mqtt://127.0.0.1:${broker.port}`;

const sinkOf = (config: Record<string, unknown>) => devicesSinkOn(broker, counters, 'v5-commands', config);

async function until(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  await eventually(() => assert.ok(check(), what), { timeoutMs });
}

test('a header with NUL, a control character or a non-character is left out of the command, which a strict MQTT 5 client (mosquitto_sub) then takes', {
  timeout: 30_000,
}, async () => {
  const { send, subscription } = sinkOf({ topic: 'v5h/${key}/cmd', expiryMs: 60_000 });
  const device = randomName('v5h-');
  // libmosquitto takes a PUBLISH with any of these in a user property for a Malformed Packet
  // and drops the connection: the command never reached the device, and each one sent again did the same.
  const sub = mosquittoSub(url, [`v5h/${device}/cmd`], 1, { protocol: 'mqttv5', clientId: device, timeoutS: 10, readyOnSuback: true, extraArgs: ['-F', '%p|%P'] });
  await sub.ready;
  const before = counters.snapshot()['commands.headers_dropped{bridge=v5-commands}'] ?? 0;
  try {
    // A Kafka header holding bytes (a binary trace id) becomes text with NUL and control characters.
    const command = send('unlock', { key: device, headers: { 'binary-id': 'a\u0000\u0001b', tabbed: 'a\tb', nonchar: 'a\uffffb', kept: 'fine' } });
    await until(() => command.outcome() === 'acked', "acked on the device's PUBACK");
    const [line] = await sub.messages;
    assert.equal(line, `unlock|kept:fine ferry-id:${command.delivery.envelope.id}`);
    assert.equal(counters.snapshot()['commands.headers_dropped{bridge=v5-commands}'], before + 3);
  } finally {
    subscription.unsubscribe();
  }
});

test("a command larger than the device's Maximum Packet Size is not sent to it and settles at once as refused, live and from its session", { timeout: 30_000 }, async () => {
  // The expiry is what the old code waited for before calling the command "not acknowledged".
  const { send, events, subscription } = sinkOf({ topic: 'v5big/${key}/cmd', expiryMs: 120_000 });
  const clientId = randomName('v5big-');
  const options = { clientId, protocolVersion: 5 as const, clean: false, reconnectPeriod: 0, properties: { sessionExpiryInterval: 300, maximumPacketSize: 200 } };
  const received: string[] = [];
  const listen = (device: MqttClient) => device.on('message', (_topic, payload) => received.push(payload.toString()));
  let device = await connectListening(url, options, listen);
  await device.subscribeAsync(`v5big/${clientId}/cmd`, { qos: 1 });
  const refused = () => counters.snapshot()['commands.refused{bridge=v5-commands,reason=packet_too_large}'] ?? 0;
  const before = refused();
  try {
    const big = send('x'.repeat(500), { key: clientId });
    const small = send('small', { key: clientId });
    await until(() => big.outcome() === 'acked' && small.outcome() === 'acked', 'both settled upstream');
    assert.deepEqual(received, ['small']);
    assert.equal(refused(), before + 1);
    const failed = events.filter((e) => e.type === 'failed');
    assert.equal(failed.length, 1);
    assert.match(failed[0]?.type === 'failed' ? failed[0].error.message : '', new RegExp(`than the Maximum Packet Size device '${clientId}' accepts`));

    // Queued while the device is away: discarded when its session is resumed, and settled then.
    await device.endAsync();
    const queued = send('y'.repeat(500), { key: clientId });
    // The resumed session's queue comes with the CONNACK: listen before it.
    device = await connectListening(url, options, listen);
    await until(() => queued.outcome() === 'acked', 'settled once the session was resumed');
    assert.equal(refused(), before + 2);
    assert.deepEqual(received, ['small']);
  } finally {
    subscription.unsubscribe();
    await device.endAsync(true);
  }
});

// A QoS 0 command is done once the broker has it: a device whose Maximum Packet Size it exceeds
// does not get it, and that does not make it refused for the other subscribers, who do.
test('a QoS 0 command too large for one MQTT 5 device still reaches the other subscribers and counts as delivered, not refused', { timeout: 30_000 }, async () => {
  const { send, events, subscription } = devicesSinkOn(broker, counters, 'v5-qos0', { topic: 'v5q0/${key}/cmd', qos: 0, expiryMs: 60_000 });
  const key = randomName('v5q0-');
  const topic = `v5q0/${key}/cmd`;
  const base = { protocolVersion: 5 as const, reconnectPeriod: 0 };
  const small = await connectAsync(url, { ...base, clientId: randomName('v5q0-small-'), properties: { maximumPacketSize: 200 } });
  const other = await connectAsync(url, { ...base, clientId: randomName('v5q0-other-') });
  const received: string[] = [];
  small.on('message', () => received.push('small'));
  other.on('message', () => received.push('other'));
  try {
    await small.subscribeAsync(topic, { qos: 1 });
    await other.subscribeAsync(topic, { qos: 0 });
    const command = send('x'.repeat(500), { key });
    await until(() => command.outcome() === 'acked' && received.length > 0, 'settled, and received');
    const counts = counters.snapshot();
    assert.equal(counts['commands.delivered{bridge=v5-qos0,qos=0}'], 1);
    assert.equal(counts['commands.refused{bridge=v5-qos0,reason=packet_too_large}'], undefined);
    assert.deepEqual(
      events.filter((e) => e.type === 'failed'),
      [],
    );
    assert.deepEqual(received, ['other']);
  } finally {
    subscription.unsubscribe();
    await Promise.all([small.endAsync(true), other.endAsync(true)]);
  }
});

// A QoS 1 command's outcome once no acknowledgement can come, by what its subscribers were sent:
// every client that could acknowledge it (QoS 1) refused it or had its copy discarded (larger
// than its Maximum Packet Size): their answer; none could: a copy written at QoS 0 is a delivery
// (`sent`), and a command every copy of which was discarded reached nobody. 'small' is an
// MQTT 5 client the 500-byte command is too large for; 'refuses', one answering PUBACK 0x83.
interface Subscriber {
  readonly name: string;
  readonly qos: 0 | 1;
  readonly small?: boolean;
  readonly refuses?: boolean;
}
const QOS1_CASES: { subscribers: Subscriber[]; outcome: string; received: string[] }[] = [
  { subscribers: [{ name: 'one', qos: 1 }], outcome: 'acked by one', received: ['one'] },
  { subscribers: [{ name: 'one', qos: 0 }], outcome: 'sent', received: ['one'] },
  {
    subscribers: [
      { name: 'small', qos: 0, small: true },
      { name: 'other', qos: 0 },
    ],
    outcome: 'sent',
    received: ['other'],
  },
  { subscribers: [{ name: 'small', qos: 0, small: true }], outcome: 'too_large for small', received: [] },
  { subscribers: [{ name: 'small', qos: 1, small: true }], outcome: 'too_large for small', received: [] },
  // The device (QoS 1) could not take it or refused it; a monitor at QoS 0 got a copy: the
  // device's answer is the outcome.
  {
    subscribers: [
      { name: 'small', qos: 1, small: true },
      { name: 'other', qos: 0 },
    ],
    outcome: 'too_large for small',
    received: ['other'],
  },
  {
    subscribers: [
      { name: 'refuses', qos: 1, refuses: true },
      { name: 'other', qos: 0 },
    ],
    outcome: 'refused by refuses',
    received: ['other', 'refuses'],
  },
  {
    subscribers: [
      { name: 'small', qos: 0, small: true },
      { name: 'one', qos: 1 },
    ],
    outcome: 'acked by one',
    received: ['one'],
  },
  {
    subscribers: [
      { name: 'small', qos: 1, small: true },
      { name: 'small0', qos: 0, small: true },
    ],
    outcome: 'too_large',
    received: [],
  },
  { subscribers: [], outcome: 'no_subscriber', received: [] },
];

for (const { subscribers, outcome: expected, received: expectedReceived } of QOS1_CASES) {
  const who = subscribers.length === 0 ? 'no subscriber' : subscribers.map((s) => `${s.name} (QoS ${s.qos})`).join(', ');
  test(`a QoS 1 command to ${who}: ${expected}`, { timeout: 30_000 }, async () => {
    const topic = `v5q1/${randomName('t-')}/cmd`;
    const ids = new Map<string, string>();
    const received: string[] = [];
    const clients = await Promise.all(
      subscribers.map(async ({ name, qos, small, refuses }) => {
        const clientId = randomName(`v5q1-${name}-`);
        ids.set(clientId, name);
        const client = await connectAsync(url, {
          clientId,
          protocolVersion: 5,
          reconnectPeriod: 0,
          ...(small ? { properties: { maximumPacketSize: 200 } } : {}),
          // mqtt.js emits no 'message' for a message it refuses.
          ...(refuses
            ? {
                customHandleAcks: (_t: string, _m: Buffer, _p: unknown, done: (code: number) => void) => {
                  received.push(name);
                  done(0x83);
                },
              }
            : {}),
        });
        client.on('message', () => received.push(name));
        return { client, qos };
      }),
    );
    try {
      // One after the other, in the table's order: the order aedes hands them their copies.
      for (const { client, qos } of clients) await client.subscribeAsync(topic, { qos });
      // Long enough that a command waiting for an acknowledgement that cannot come shows as `expired`.
      const published = broker.publishCommand({ topic, payload: Buffer.alloc(500, 'x'), qos: 1, retain: false, expiresAt: Date.now() + 8000, id: randomName('c-') });
      const outcome = await published.outcome;
      const by = 'clientId' in outcome ? ids.get(outcome.clientId) : undefined;
      const got =
        outcome.status === 'acked'
          ? `acked by ${by}`
          : outcome.status === 'refused'
            ? `refused by ${by}`
            : outcome.status === 'too_large' && expected !== 'too_large'
              ? `too_large for ${by}`
              : outcome.status;
      assert.equal(got, expected, JSON.stringify(outcome));
      await until(() => received.length >= expectedReceived.length, 'the copies sent arrived');
      assert.deepEqual(received.sort(), expectedReceived);
    } finally {
      await Promise.all(clients.map(({ client }) => client.endAsync(true)));
    }
  });
}

test("request/response: a device's Response Topic and Correlation Data reach the bridges as headers, and a reply carrying them back gets them as properties", {
  timeout: 30_000,
}, async () => {
  const clientId = randomName('v5rr-');
  const requests: Delivery[] = [];
  const tapped = broker.tap('requests', [`v5rr/${clientId}/requests`]).subscribe((d) => {
    requests.push(d);
    d.ack();
  });
  const { send, subscription } = sinkOf({ topic: 'v5rr/${key}/replies' });
  const device = await connectAsync(url, { clientId, protocolVersion: 5, reconnectPeriod: 0 });
  const replies: { payload: string; properties: Record<string, unknown> | undefined }[] = [];
  device.on('message', (_topic, payload, packet) => replies.push({ payload: payload.toString(), properties: packet.properties as Record<string, unknown> | undefined }));
  await device.subscribeAsync(`v5rr/${clientId}/replies`, { qos: 1 });
  // Correlation Data is bytes, any bytes.
  const correlation = Buffer.from([0x00, 0xff, 0x10, 0x80, 0x41]);
  try {
    await device.publishAsync(`v5rr/${clientId}/requests`, 'status?', {
      qos: 1,
      properties: { responseTopic: `v5rr/${clientId}/replies`, correlationData: correlation, userProperties: { kind: 'status' } },
    });
    await until(() => requests.length === 1, 'the request reached the bridge');
    const headers = requests[0]?.envelope.headers ?? {};
    assert.equal(headers['response-topic'], `v5rr/${clientId}/replies`);
    assert.equal(headers['correlation-data'], correlation.toString('base64'));
    assert.equal(headers['kind'], 'status');

    // The backend's reply, as a Kafka record copying the request's headers.
    const reply = send('ok', { key: clientId, headers: { 'correlation-data': headers['correlation-data'] as string, 'response-topic': 'v5rr/backend/acks' } });
    await until(() => reply.outcome() === 'acked', 'the reply was acknowledged');
    const properties = replies[0]?.properties ?? {};
    assert.deepEqual(Buffer.from(properties['correlationData'] as Uint8Array), correlation);
    assert.equal(properties['responseTopic'], 'v5rr/backend/acks');
    assert.deepEqual({ ...(properties['userProperties'] as object) }, { 'ferry-id': reply.delivery.envelope.id });
  } finally {
    tapped.unsubscribe();
    subscription.unsubscribe();
    await device.endAsync(true);
  }
});
