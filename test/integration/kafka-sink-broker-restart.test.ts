// A Kafka broker killed (SIGKILL: no clean shutdown, produce requests in flight unanswered)
// under a steady stream into an idempotent sink, and restarted on the same port and log dir: the
// sink must resume by itself, with the same gateway, and every message the buffer acknowledged
// must be in Kafka, nothing dead-lettered (a topic-templated sink must not take what a restarting
// broker answers for a refused topic). Unlike the outage test (test/e2e/kafka-outage.test.ts: a
// clean stop, a fixed topic, no idempotence), the broker dies mid-produce.
// A batch Kafka appended just before it died, its answer lost, must not be written twice: the
// sink keeps its producer id and sends that batch again as it went, which Kafka then drops. A
// kill hits that moment only by chance (two of eight kills mid-drain did), so a relay in front
// of the real broker drops its answers from a given moment (answerDroppingRelay). Other messages
// after such a batch must go under a new producer id: under the same one, Kafka would take them
// for the appended batch and acknowledge them unwritten.
// Runs its own Kafka (the shared one cannot be killed).
// Before kafkajs loads, as in `ferry run`: some of Ferry's replacements are bound at kafkajs' load.
import '../harness/kafkajs-patched.ts';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { once } from 'node:events';
import { type Socket, connect, createServer } from 'node:net';
import { type TestContext, after, before, test } from 'node:test';
import { Kafka, logLevel } from 'kafkajs';
import { type MqttClient, connectAsync } from 'mqtt';
import pino from 'pino';
import { Subject } from 'rxjs';
import { type Delivery, createDelivery } from '../../src/core/delivery.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import { kafkaSink } from '../../src/kafka/sink.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { startGateway } from '../../src/lib/gateway.ts';
import { eventually, until } from '../harness/eventually.ts';
import { type KafkaHarness, startKafka } from '../harness/kafka.ts';
import { readTopic } from '../harness/kafka-read.ts';
import { randomName } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';

const DEVICES = 4;
/** Each device publishes a QoS 1 message every PACE_MS: about 400 a second in all, a produce request every batchTimeMs. */
const PACE_MS = 10;
const BRIDGE = 'restart';
const dirs = tempDirs('ferry-kafka-restart-');

// One Kafka for the file, behind a relay that can lose the broker's answers (answerDroppingRelay).
let relay: Relay;
let kafka: KafkaHarness;
before(async () => {
  relay = await answerDroppingRelay();
  kafka = await startKafka({ advertisedPort: (port) => relay.forwardTo(port) });
});
after(async () => {
  await kafka?.stop();
  relay?.close();
});

/** A gateway with one idempotent Kafka bridge from `devices/+/telemetry` to `topic` (a template), and a device per topic publishing ids. */
async function streamInto(t: TestContext, bootstrap: string, topic: string) {
  const root = dirs();
  mkdirSync(join(root, 'bridges'));
  writeFileSync(
    join(root, 'bridges', 'kafka.yaml'),
    [
      `name: ${BRIDGE}`,
      'from: {mqtt: {topics: ["devices/+/telemetry"]}}',
      'to:',
      // Short attempts: the buffer's backoff takes over soon after the broker is gone.
      `  - kafka: {brokers: "${bootstrap}", topic: "${topic}", acks: all, idempotent: true, retries: 2, connectionTimeoutMs: 1000, requestTimeoutMs: 5000}`,
      'buffer: {retryMaxMs: 1000}',
      '',
    ].join('\n'),
  );
  const gateway = await startGateway({
    config: { mqtt: { host: '127.0.0.1', allowAnonymous: 'loopback' }, bridges: ['bridges'], devices: [], admin: { enabled: false } },
    baseDir: root,
    overrides: { mqttPort: 0 },
    logger: pino({ level: 'silent' }),
  });
  t.after(() => gateway.stop());
  await gateway.ready;
  const sink = () => {
    const status = gateway.status();
    const found = status.bridges.find((b) => b.name === BRIDGE)?.sinks[0];
    assert.ok(found !== undefined, `no sink of bridge '${BRIDGE}' in the status`);
    const pending = status.buffer.bridges.find((b) => b.bridge === BRIDGE)?.sinks[0]?.pending ?? -1;
    return { ...found, pending, degraded: status.health.degraded, counters: status.counters };
  };

  const acked = new Set<string>();
  const devices: MqttClient[] = await Promise.all(
    Array.from({ length: DEVICES }, (_, d) => connectAsync(`mqtt://127.0.0.1:${gateway.mqttPort}`, { clientId: `dev${d}`, reconnectPeriod: 0 })),
  );
  t.after(() => Promise.all(devices.map((device) => device.endAsync(true))));
  let publishing = true;
  const streams = devices.map(async (device, d) => {
    const puback: Promise<void>[] = [];
    for (let n = 0; publishing; n++) {
      const id = `dev${d}-${n}`;
      puback.push(device.publishAsync(`devices/dev${d}/telemetry`, JSON.stringify({ id }), { qos: 1 }).then(() => void acked.add(id)));
      await sleep(PACE_MS);
    }
    await Promise.all(puback);
  });
  /** Stops the devices once every message they sent was acknowledged, then waits for the buffer to drain. */
  const finish = async () => {
    publishing = false;
    await Promise.all(streams);
    await eventually(() => assert.equal(sink().pending, 0, 'the buffer did not drain after the restart'), { timeoutMs: 60_000, intervalMs: 200 });
  };
  return { sink, acked, finish };
}

async function createTopics(bootstrap: string, topics: readonly string[], partitions = 3): Promise<void> {
  const admin = new Kafka({ brokers: [bootstrap], logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics: topics.map((topic) => ({ topic, numPartitions: partitions })), waitForLeaders: true });
  } finally {
    await admin.disconnect();
  }
}

/** How many times each message id is in the topics. */
async function copiesIn(bootstrap: string, topics: readonly string[]): Promise<Map<string, number>> {
  const copies = new Map<string, number>();
  for (const topic of topics) {
    for (const record of await readTopic([bootstrap], topic, 60_000)) {
      const { id } = JSON.parse(String(record.value)) as { id: string };
      copies.set(id, (copies.get(id) ?? 0) + 1);
    }
  }
  return copies;
}

const duplicatesOf = (copies: ReadonlyMap<string, number>) => [...copies.values()].reduce((n, c) => n + c - 1, 0);

test('kafka sink, idempotent: other messages after a batch whose answer was lost go under a new producer id, and are written', { timeout: 120_000 }, async (t) => {
  // One partition: the next batch gets the sequence numbers the lost one had, which Kafka, had
  // they gone under the same producer id, would take for that batch sent again (and not write).
  const topic = randomName('ferry-restart-other-');
  await createTopics(kafka.bootstrap, [topic], 1);
  const sink = kafkaSink.create(
    kafkaSink.schema.parse({ brokers: [kafka.bootstrap], topic, idempotent: true, retries: 1, requestTimeoutMs: 1500, connectionTimeoutMs: 1000, batchTimeMs: 50 }),
    { logger: pino({ level: 'silent' }), counters: new CounterRegistry(), dataDir: '/nonexistent', bridge: 'test' },
  );
  const input = new Subject<Delivery>();
  const subscription = sink(input).subscribe();
  t.after(() => subscription.unsubscribe());
  /** Sends `ids` in one batch; resolves with each one's outcome. */
  const send = (ids: readonly string[]) =>
    Promise.all(
      ids.map(
        (id) =>
          new Promise<'acked' | Error>((resolve) => {
            const envelope = createEnvelope({ topic: 'd/1', payload: JSON.stringify({ id }), origin: { source: 'test', clientId: 'd1' } });
            input.next(createDelivery(envelope, { onAck: () => resolve('acked'), onNack: resolve }));
          }),
      ),
    );
  const batch = (name: string) => Array.from({ length: 5 }, (_, i) => `${name}-${i}`);

  assert.deepEqual(await send(batch('first')), Array(5).fill('acked'));
  const lost = send(batch('lost'));
  await relay.dropAnswers();
  relay.cutAll();
  const outcomes = await lost;
  relay.forwardAnswers();
  assert.ok(
    outcomes.every((o) => o instanceof Error),
    'the batch whose answers were dropped was acknowledged',
  );
  // What the buffer would not send after it (it sends the lost batch again first), but a sink may be given.
  assert.deepEqual(await send(batch('other')), Array(5).fill('acked'));
  const copies = await copiesIn(kafka.bootstrap, [topic]);
  assert.deepEqual(
    batch('other').filter((id) => !copies.has(id)),
    [],
    'acknowledged messages missing from Kafka',
  );
});

test('kafka sink, idempotent, topic template: the broker SIGKILLed mid-produce and restarted; the sink resumes by itself and every acknowledged message is in Kafka, nothing dead-lettered', {
  timeout: 240_000,
}, async (t) => {
  const base = randomName('ferry-restart-');
  const topics = Array.from({ length: DEVICES }, (_, d) => `${base}.dev${d}`);
  await createTopics(kafka.bootstrap, topics);
  const { sink, acked, finish } = await streamInto(t, kafka.bootstrap, `${base}.\${1}`);

  // The stream is flowing into Kafka: a produce request goes out every few milliseconds.
  await until('1,000 messages written', () => (sink().written >= 1000 ? true : undefined), { timeoutMs: 60_000 });
  await kafka.crash();
  const ackedAtKill = acked.size;
  await until('the sink to fail a write', () => (sink().failed > 0 ? true : undefined), { timeoutMs: 30_000 });
  await sleep(2_000);
  const down = sink();
  const ackedWhileDown = acked.size - ackedAtKill;
  await kafka.start();
  await until('the sink to write again', () => (sink().written > down.written ? true : undefined), { timeoutMs: 60_000 });
  await sleep(1_000);
  await finish();
  const after = sink();

  const copies = await copiesIn(kafka.bootstrap, topics);
  t.diagnostic(
    `${acked.size} acknowledged (${ackedWhileDown} while Kafka was down, ${down.pending} buffered then); ${down.failed} failed writes; ${duplicatesOf(copies)} duplicates in Kafka`,
  );
  assert.ok(ackedWhileDown > 0 && down.pending > 0, 'nothing was acknowledged and buffered while Kafka was down');
  assert.match(down.lastError ?? '', /kafka sink of bridge 'restart'/);
  assert.deepEqual(
    [...acked].filter((id) => !copies.has(id)),
    [],
    'acknowledged messages missing from Kafka',
  );
  assert.equal(copies.size, acked.size);
  const counted = (name: string) =>
    Object.entries(after.counters)
      .filter(([key]) => key.startsWith(`${name}{`))
      .reduce((n, [, v]) => n + v, 0);
  assert.equal(counted('buffer.dead_letters'), 0, 'messages were dead-lettered across the restart');
  assert.equal(counted('kafka.messages.rejected'), 0, 'messages were refused across the restart');
  await eventually(() => assert.deepEqual(sink().degraded, [], 'the bridge is still reported degraded after the drain'), { timeoutMs: 15_000, intervalMs: 200 });
});

test('kafka sink, idempotent: a batch Kafka appended just before it was killed, its answer lost, is not written twice after the restart', { timeout: 240_000 }, async (t) => {
  const topic = randomName('ferry-restart-lost-');
  await createTopics(kafka.bootstrap, [topic]);
  const { sink, acked, finish } = await streamInto(t, kafka.bootstrap, topic);

  await until('500 messages written', () => (sink().written >= 500 ? true : undefined), { timeoutMs: 60_000 });
  // The broker appends the next batch (acks: all) and answers; the answer is lost as it dies.
  await relay.dropAnswers();
  await kafka.crash();
  relay.cutAll();
  relay.forwardAnswers();
  await until('the sink to fail a write', () => (sink().failed > 0 ? true : undefined), { timeoutMs: 30_000 });
  await kafka.start();
  const down = sink();
  await until('the sink to write again', () => (sink().written > down.written ? true : undefined), { timeoutMs: 60_000 });
  await finish();

  const copies = await copiesIn(kafka.bootstrap, [topic]);
  t.diagnostic(`${acked.size} acknowledged; ${duplicatesOf(copies)} duplicates in Kafka`);
  assert.deepEqual(
    [...acked].filter((id) => !copies.has(id)),
    [],
    'acknowledged messages missing from Kafka',
  );
  assert.deepEqual(
    [...copies].filter(([, n]) => n > 1).map(([id]) => id),
    [],
    'messages written twice: the batch was sent again under another producer id, which Kafka cannot match to the first',
  );
});

/** Kafka's Produce request key: the first int16 of a request after its size. */
const PRODUCE = 0;

/**
 * A relay in front of the broker (the port it advertises) that forwards requests and can drop the
 * broker's answers: from `dropAnswers` on, every answer is dropped, and `dropAnswers` resolves once
 * one to a produce request was (the broker appended its records: acks is all). Killing the broker
 * then loses that answer for good, as when a broker dies between appending and answering, which a
 * kill alone hits only by chance.
 */
type Relay = Awaited<ReturnType<typeof answerDroppingRelay>>;

async function answerDroppingRelay() {
  let target = 0;
  let dropping: (() => void) | undefined;
  const pairs = new Set<{ client: Socket; upstream: Socket }>();
  const server = createServer((client) => {
    const upstream = connect(target, '127.0.0.1');
    const pair = { client, upstream };
    pairs.add(pair);
    const close = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const socket of [client, upstream]) socket.on('error', close).on('close', close);
    /** Request keys by correlation id, read off the requests' frames. */
    const keys = new Map<number, number>();
    frames(client, (frame) => {
      keys.set(frame.readInt32BE(4), frame.readInt16BE(0));
      upstream.write(Buffer.concat([sizeOf(frame), frame]));
    });
    frames(upstream, (frame) => {
      const key = keys.get(frame.readInt32BE(0));
      if (dropping === undefined) {
        client.write(Buffer.concat([sizeOf(frame), frame]));
        return;
      }
      if (key === PRODUCE) dropping();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  return {
    /** Points the relay at the broker; returns the relay's port, for the broker to advertise. */
    forwardTo: (brokerPort: number) => {
      target = brokerPort;
      return port;
    },
    dropAnswers: () =>
      new Promise<void>((resolve) => {
        dropping = resolve;
      }),
    forwardAnswers: () => {
      dropping = undefined;
    },
    /** Closes every relayed connection. */
    cutAll: () => {
      for (const { client, upstream } of pairs) {
        client.destroy();
        upstream.destroy();
      }
    },
    close: () => {
      for (const { client, upstream } of pairs) {
        client.destroy();
        upstream.destroy();
      }
      server.close();
    },
  };
}

/** Calls `onFrame` with each Kafka frame read from `socket`, without its int32 size. */
function frames(socket: Socket, onFrame: (frame: Buffer) => void): void {
  let pending: Buffer = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    while (pending.length >= 4 && pending.length >= 4 + pending.readInt32BE(0)) {
      const size = pending.readInt32BE(0);
      onFrame(pending.subarray(4, 4 + size));
      pending = pending.subarray(4 + size);
    }
  });
}

function sizeOf(frame: Buffer): Buffer {
  const size = Buffer.alloc(4);
  size.writeInt32BE(frame.length);
  return size;
}
