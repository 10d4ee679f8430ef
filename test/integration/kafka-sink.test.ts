import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Subject, lastValueFrom, toArray } from 'rxjs';
import pino from 'pino';
import { type Delivery, createDelivery } from '../../src/core/delivery.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import { isFerryError } from '../../src/core/errors.ts';
import type { Sink, SinkEvent } from '../../src/core/stream.ts';
import { kafkaSink } from '../../src/kafka/sink.ts';
import { type KafkaSinkConfig, toKafka } from '../../src/lib/kafka.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { SinkSet } from '../../src/runtime/bridge-parts.ts';
import type { RuntimeDeps } from '../../src/runtime/registry.ts';
import { sinkConformance } from '../conformance/sink-suite.ts';
import { trackedDeliveries } from '../conformance/deliveries.ts';
import { kafkaTestClient } from '../harness/kafka-group.ts';
import { readTopic } from '../harness/kafka-read.ts';
import { eventually } from '../harness/eventually.ts';
import { kcatConsume } from '../harness/kcat.ts';
import { randomName, requireService } from '../harness/services.ts';
import { tcpProxy } from '../harness/tcp-proxy.ts';

const ctx = { logger: pino({ level: 'silent' }), counters: new CounterRegistry(), dataDir: '/nonexistent', bridge: 'test' };

/** Through the public entry point (ferry/kafka), as a library user makes it. */
function sinkFor(brokers: string[], topic: string, extra: Record<string, unknown> = {}) {
  return toKafka({ brokers, topic, batchSize: 40, batchTimeMs: 5, ...extra } as KafkaSinkConfig, { name: ctx.bridge, logger: ctx.logger, counters: ctx.counters });
}

async function destination(brokers: string[], topic: string, extra: Record<string, unknown> = {}) {
  return {
    sink: sinkFor(brokers, topic, extra),
    readBack: async () => (await readTopic(brokers, topic)).map((m) => m.headers['ferry-id'] ?? ''),
    cleanup: async () => {},
  };
}

sinkConformance('kafka', {
  batchSize: 40,
  working: async () => destination(await requireService('kafka'), randomName('ferry-sink-')),
  failing: async () => ({
    // Nothing listens on port 1 of loopback: connecting is refused at once.
    sink: sinkFor(['127.0.0.1:1'], 'ferry-unreachable', { retries: 0, connectionTimeoutMs: 500 }),
    cleanup: async () => {},
  }),
  unwritable: async () => {
    // A header from `${clientId}`: a message without a client id can never be written.
    const poison = createEnvelope({ topic: 'devices/x/telemetry/t', payload: 'no client id', origin: { source: 'test' } });
    return { ...(await destination(await requireService('kafka'), randomName('ferry-sink-poison-'), { headers: { device: '${clientId}' } })), poison };
  },
  flaky: async () => {
    // The broker is real; the way to it is down until recover(). Only the bootstrap connection
    // goes through the relay (the broker then advertises its own address), which is enough:
    // the sink opens a new producer for each write after a failure.
    const brokers = await requireService('kafka');
    const [host, port] = (brokers[0] as string).split(':') as [string, string];
    const proxy = await tcpProxy({ host, port: Number(port) }, { refusing: true });
    const topic = randomName('ferry-sink-flaky-');
    return {
      sink: sinkFor([`127.0.0.1:${proxy.port}`], topic, { retries: 0, connectionTimeoutMs: 1000 }),
      readBack: async () => (await readTopic(brokers, topic)).map((m) => m.headers['ferry-id'] ?? ''),
      recover: () => proxy.forward(),
      cleanup: () => proxy.close(),
    };
  },
});

test('kafka sink: key is the client id; envelope id and MQTT topic travel as headers; bytes intact', async () => {
  const brokers = await requireService('kafka');
  const topic = randomName('ferry-sink-headers-');
  const tracked = trackedDeliveries(3, 'devices/sensor-9/telemetry/climate', 'sensor-9');
  const input = new Subject<Delivery>();
  const done = lastValueFrom(sinkFor(brokers, topic)(input).pipe(toArray()));
  for (const d of tracked.deliveries) input.next(d);
  input.complete();
  await done;
  assert.equal(tracked.acked.length, 3);
  const messages = await readTopic(brokers, topic);
  assert.deepEqual(
    messages.map((m) => [m.key, m.headers['ferry-id'], m.headers['mqtt-topic'], m.value?.toString()]),
    tracked.deliveries.map((d) => ['sensor-9', d.envelope.id, 'devices/sensor-9/telemetry/climate', Buffer.from(d.envelope.payload).toString()]),
  );
});

/** Deliveries of the given messages that record how each was settled. */
function deliveriesOf(messages: readonly { topic: string; clientId: string; payload: string; headers?: Record<string, string> }[]) {
  const settled = new Map<string, 'acked' | Error>();
  const deliveries = messages.map((m) => {
    const envelope = createEnvelope({ topic: m.topic, payload: m.payload, origin: { source: 'test', clientId: m.clientId, qos: 1 }, headers: m.headers ?? {} });
    return createDelivery(envelope, { onAck: () => settled.set(envelope.id, 'acked'), onNack: (error) => settled.set(envelope.id, error) });
  });
  return { deliveries, settled };
}

async function run(sink: Sink, deliveries: readonly Delivery[]): Promise<SinkEvent[]> {
  const input = new Subject<Delivery>();
  const done = lastValueFrom(sink(input).pipe(toArray()));
  for (const d of deliveries) input.next(d);
  input.complete();
  return done;
}

test('kafka sink: topic, key and headers rendered per message, grouped per topic in one write; an invalid rendered topic mid-batch is rejected alone', async () => {
  const brokers = await requireService('kafka');
  const prefix = randomName('ferry-sink-tpl-');
  const counters = new CounterRegistry();
  const sink = kafkaSink.create(
    kafkaSink.schema.parse({ brokers, topic: `${prefix}.\${1}`, key: '${1}', headers: { site: '${payload.site}', rest: '${#}' }, batchSize: 100, batchTimeMs: 200 }),
    { ...ctx, counters, sourceFilters: ['devices/+/telemetry/#'] },
  );
  const trace = { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', tracestate: 'ferry=1' };
  const messages = [
    { topic: 'devices/d1/telemetry/climate', clientId: 'd1', payload: '{"site":"north","n":0}', headers: trace },
    { topic: 'devices/d2/telemetry/climate/room', clientId: 'd2', payload: '{"site":"south","n":1}' },
    { topic: 'devices/bad@dev/telemetry/x', clientId: 'bad@dev', payload: '{"site":"north","n":2}' },
    { topic: 'devices/d1/telemetry/climate', clientId: 'd1', payload: '{"n":3}' },
    { topic: 'devices/d1/telemetry/climate', clientId: 'd1', payload: '{"site":"north","n":4}' },
    { topic: 'devices/d2/telemetry/power', clientId: 'd2', payload: '{"site":"south","n":5}' },
  ];
  const { deliveries, settled } = deliveriesOf(messages);
  const events = await run(sink, deliveries);

  // One batch: one write of the four good messages to two topics, and the two bad ones refused alone.
  assert.deepEqual(
    events.map((e) => [e.type, e.count]),
    [
      ['written', 4],
      ['failed', 2],
    ],
  );
  const outcome = (i: number) => settled.get((deliveries[i] as Delivery).envelope.id);
  for (const i of [0, 1, 4, 5]) assert.equal(outcome(i), 'acked');
  for (const [i, reason] of [
    [2, /topic 'ferry-sink-tpl-[^']+\.bad@dev' \(from '[^']+'\) is invalid: .*it has "@"/],
    [3, /\$\{payload\.site\} has no value: the payload field 'site' is absent/],
  ] as const) {
    const error = outcome(i);
    assert.ok(isFerryError(error, 'MESSAGE_INVALID') && !error.retryable, String(error));
    assert.match(error.message, reason);
  }
  assert.equal(counters.get('kafka.messages.rejected{bridge=test}'), 2);

  const read = async (device: string) => (await kcatConsume(brokers, `${prefix}.${device}`)).map((m) => ({ key: m.key, payload: m.payload, headers: m.headers }));
  const expected = (i: number, site: string, rest: string, extra: Record<string, string> = {}) => {
    const m = messages[i] as (typeof messages)[number];
    return { key: m.clientId, payload: m.payload, headers: { ...extra, site, rest, 'ferry-id': (deliveries[i] as Delivery).envelope.id, 'mqtt-topic': m.topic } };
  };
  assert.deepEqual(await read('d1'), [expected(0, 'north', 'climate', trace), expected(4, 'north', 'climate')]);
  assert.deepEqual(await read('d2'), [expected(1, 'south', 'climate/room'), expected(5, 'south', 'power')]);
});

for (const compression of ['gzip', 'snappy', 'lz4', 'zstd'] as const) {
  test(`kafka sink: ${compression} batches are read back intact by an independent client (kcat)`, async () => {
    const brokers = await requireService('kafka');
    const topic = randomName(`ferry-sink-${compression}-`);
    const tracked = trackedDeliveries(20, 'devices/c1/telemetry/t', 'c1');
    await run(sinkFor(brokers, topic, { compression }), tracked.deliveries);
    assert.equal(tracked.acked.length, 20);
    const messages = await kcatConsume(brokers, topic);
    assert.deepEqual(
      messages.map((m) => m.payload),
      tracked.deliveries.map((d) => Buffer.from(d.envelope.payload).toString()),
    );
  });
}

test('kafka sink: the idempotent producer writes and acknowledges', async () => {
  const brokers = await requireService('kafka');
  const topic = randomName('ferry-sink-idempotent-');
  const tracked = trackedDeliveries(50, 'devices/i1/telemetry/t', 'i1');
  await run(sinkFor(brokers, topic, { idempotent: true }), tracked.deliveries);
  assert.equal(tracked.acked.length, 50);
  assert.deepEqual(
    (await readTopic(brokers, topic)).map((m) => m.headers['ferry-id']),
    tracked.deliveries.map((d) => d.envelope.id),
  );
});

test("kafka sink's status after an outage: `lastError` is cleared by the next write, `lastFailure` keeps the error and when", { timeout: 60_000 }, async () => {
  const brokers = await requireService('kafka');
  const [host, port] = (brokers[0] as string).split(':') as [string, string];
  const proxy = await tcpProxy({ host, port: Number(port) }, { refusing: true });
  const topic = randomName('ferry-sink-recovered-');
  // Made beforehand: the first write after the outage is not refused for a topic being auto-created.
  const kafka = await kafkaTestClient(brokers);
  await kafka.createTopic(topic);
  await kafka.close();
  const sinks = new SinkSet('recovering', ctx.logger, new CounterRegistry());
  const input = new Subject<Delivery>();
  const config = kafkaSink.schema.parse({ brokers: [`127.0.0.1:${proxy.port}`], topic, batchSize: 1, batchTimeMs: 0, retries: 0, connectionTimeoutMs: 1000 });
  // The kafka sink takes nothing of the runtime.
  sinks.add('kafka', { kafka: config }, input, { ...ctx, bridge: 'recovering' }, {} as RuntimeDeps, 'kept');
  const send = (n: number) =>
    new Promise<'acked' | 'nacked'>((resolve) => {
      const envelope = createEnvelope({ topic: 'devices/r1/telemetry/t', payload: `m${n}`, origin: { source: 'test', clientId: 'r1' } });
      input.next(createDelivery(envelope, { onAck: () => resolve('acked'), onNack: () => resolve('nacked') }));
    });
  try {
    const beforeOutage = Date.now();
    assert.equal(await send(1), 'nacked');
    const [down] = sinks.status();
    assert.match(down?.lastError ?? '', /cannot connect/);
    assert.equal(sinks.problems(Date.now(), 10_000)[0]?.problem, 'down');

    proxy.forward();
    await eventually(async () => assert.equal(await send(2), 'acked'), { timeoutMs: 30_000, intervalMs: 500 });
    const [after] = sinks.status();
    assert.deepEqual(sinks.problems(Date.now(), 10_000), []);
    assert.equal(after?.lastError, undefined, "the outage's error is still shown as lastError after the sink wrote again");
    assert.deepEqual(down?.lastFailure?.error, down?.lastError);
    assert.ok((down?.lastFailure?.at ?? 0) >= beforeOutage, 'lastFailure.at is not the time of the failure');
    // The outage's error, at its time, unless a later attempt failed too.
    assert.match(after?.lastFailure?.error ?? '', /cannot connect/);
    assert.ok((after?.lastFailure?.at ?? 0) >= (down?.lastFailure?.at ?? Number.POSITIVE_INFINITY));
  } finally {
    input.complete();
    await sinks.done();
    await proxy.close();
  }
});
