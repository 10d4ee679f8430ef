// A topic Kafka refuses, rendered for one device, must not hold back the others' (the stall found
// in review: every batch with it failed as a whole, retried for ever, nothing dead-lettered).
// Before kafkajs loads, as in `ferry run`: some of Ferry's replacements are bound at kafkajs' load.
import '../harness/kafkajs-patched.ts';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Subject } from 'rxjs';
import pino from 'pino';
import { Kafka, logLevel } from 'kafkajs';
import { type Delivery, createDelivery } from '../../src/core/delivery.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import { type FerryError, isFerryError } from '../../src/core/errors.ts';
import type { SinkEvent } from '../../src/core/stream.ts';
import { kafkaSink } from '../../src/kafka/sink.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { readTopic } from '../harness/kafka-read.ts';
import { randomName, requireService } from '../harness/services.ts';

const logger = pino({ level: 'silent' });

/** Creates `topics` (one partition each) and waits for their leaders. */
async function createTopics(brokers: string[], topics: readonly string[]): Promise<void> {
  const admin = new Kafka({ brokers, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics: topics.map((topic) => ({ topic, numPartitions: 1 })), waitForLeaders: true });
  } finally {
    await admin.disconnect();
  }
}

/** A kafka sink fed from a Subject, over the source filter `d/+`: `${1}` is the device's level. */
function openSink(config: Record<string, unknown>) {
  const counters = new CounterRegistry();
  const sink = kafkaSink.create(kafkaSink.schema.parse({ retries: 1, batchTimeMs: 100, ...config }), {
    logger,
    counters,
    dataDir: '/nonexistent',
    bridge: 'test',
    sourceFilters: ['d/+'],
  });
  const input = new Subject<Delivery>();
  const events: SinkEvent[] = [];
  const subscription = sink(input).subscribe((event) => events.push(event));
  /** Sends one message per level, in one batch; resolves with each one's outcome, in order. */
  const send = (levels: readonly string[]) => {
    const outcomes = levels.map(
      (level) =>
        new Promise<{ id: string; outcome: 'acked' | Error }>((resolve) => {
          const envelope = createEnvelope({ topic: `d/${level}`, payload: `to ${level}`, origin: { source: 'test', clientId: level } });
          input.next(createDelivery(envelope, { onAck: () => resolve({ id: envelope.id, outcome: 'acked' }), onNack: (error) => resolve({ id: envelope.id, outcome: error }) }));
        }),
    );
    return Promise.all(outcomes);
  };
  return { send, events, counters, close: () => subscription.unsubscribe() };
}

function refusal(outcome: 'acked' | Error): FerryError {
  assert.ok(isFerryError(outcome, 'MESSAGE_INVALID') && !outcome.retryable, `refused alone, for good: ${String(outcome)}`);
  return outcome;
}

test('kafka sink: a topic the broker will not create is refused alone; the other topics of its batch are written, in order', async () => {
  const brokers = await requireService('kafka');
  const base = randomName('ferry-sink-refused-');
  // `${base}.a_b` collides with `${base}.a.b` ("." and "_" are one to Kafka): never created.
  await createTopics(brokers, [`${base}.a.b`, `${base}.good`]);
  const sink = openSink({ brokers, topic: `${base}.\${1}` });
  try {
    // The first batch makes `good` and `more` topics the sink has written (sent again together
    // while the refused one is looked for); `other` is new to it (sent alone).
    const first = await sink.send(['good', 'more']);
    assert.deepEqual(
      first.map((o) => o.outcome),
      ['acked', 'acked'],
    );
    const outcomes = await sink.send(['good', 'a_b', 'other', 'good', 'a_b', 'good', 'more']);
    for (const i of [0, 2, 3, 5, 6]) assert.equal(outcomes[i]?.outcome, 'acked', String(outcomes[i]?.outcome));
    for (const i of [1, 4]) {
      const error = refusal((outcomes[i] as { outcome: Error }).outcome);
      assert.match(
        error.message,
        new RegExp(
          `message ${outcomes[i]?.id} \\(MQTT topic 'd/a_b'\\) cannot be written: Kafka refused topic '${base}\\.a_b': the topic does not exist and the broker did not create it`,
        ),
      );
      assert.match(error.message, /UNKNOWN_TOPIC_OR_PARTITION/);
    }
    assert.equal(sink.counters.get('kafka.messages.rejected{bridge=test}'), 2);
    const ids = (topic: string) => readTopic(brokers, topic).then((messages) => messages.map((m) => m.headers['ferry-id']));
    assert.deepEqual(
      (await ids(`${base}.good`)).slice(1),
      [0, 3, 5].map((i) => outcomes[i]?.id),
    );
    assert.deepEqual(await ids(`${base}.other`), [outcomes[2]?.id]);
    assert.deepEqual(await ids(`${base}.more`), [first[1]?.id, outcomes[6]?.id]);

    // Its next messages are refused without asking Kafka again (each ask costs kafkajs' retries).
    const again = await sink.send(['a_b', 'good']);
    assert.match(refusal((again[0] as { outcome: Error }).outcome).message, /Kafka refused topic .*; remembered from \d+ s before \(Kafka is asked again 60 s after a refusal\)/);
    assert.equal(again[1]?.outcome, 'acked');
  } finally {
    sink.close();
  }
});

test('kafka sink: a topic Kafka refuses to append to (an internal topic) is refused alone, even as the only topic of its batch', async () => {
  const brokers = await requireService('kafka');
  const good = randomName('ferry-sink-internal-');
  await createTopics(brokers, [good]);
  // Reading with a consumer group makes sure the broker has __consumer_offsets.
  await readTopic(brokers, good);
  const sink = openSink({ brokers, topic: '${1}' });
  try {
    const outcomes = await sink.send([good, '__consumer_offsets', good]);
    assert.equal(outcomes[0]?.outcome, 'acked');
    assert.equal(outcomes[2]?.outcome, 'acked');
    assert.match(refusal((outcomes[1] as { outcome: Error }).outcome).message, /Kafka refused topic '__consumer_offsets': the broker refuses the name \(INVALID_TOPIC_EXCEPTION/);
    // Kafka appended the good topic's records of the first request, which it refused as a whole
    // (the broker names the topic, kafkajs does not): they come twice, as after any retry.
    const written = (await readTopic(brokers, good)).map((m) => m.headers['ferry-id']);
    assert.deepEqual([...new Set(written)], [outcomes[0]?.id, outcomes[2]?.id]);
  } finally {
    sink.close();
  }
  // A sink that has not met it yet: found without another topic beside it.
  const fresh = openSink({ brokers, topic: '${1}' });
  try {
    const alone = await fresh.send(['__consumer_offsets']);
    assert.match(refusal((alone[0] as { outcome: Error }).outcome).message, /Kafka refused topic '__consumer_offsets': .*INVALID_TOPIC_EXCEPTION/);
  } finally {
    fresh.close();
  }
});

test('kafka sink: a fixed topic the broker will not create fails the whole batch, retryable (it waits like an outage)', async () => {
  const brokers = await requireService('kafka');
  const base = randomName('ferry-sink-fixed-');
  await createTopics(brokers, [`${base}.a.b`]);
  const sink = openSink({ brokers, topic: `${base}.a_b` });
  try {
    for (const { outcome } of await sink.send(['x', 'y'])) {
      assert.ok(isFerryError(outcome, 'SINK_WRITE_FAILED') && outcome.retryable, String(outcome));
      assert.match(outcome.message, /does not host this topic-partition/);
    }
    assert.equal(sink.counters.get('kafka.messages.rejected{bridge=test}'), 0);
  } finally {
    sink.close();
  }
});

test('kafka sink: with Kafka unreachable, no message of a topic template is refused for good', async () => {
  // Nothing listens on port 1 of loopback: connecting is refused at once.
  const sink = openSink({ brokers: ['127.0.0.1:1'], topic: 'iot.${1}', retries: 0, connectionTimeoutMs: 500 });
  try {
    for (const { outcome } of await sink.send(['a', 'b'])) assert.ok(outcome !== 'acked' && (!isFerryError(outcome) || outcome.retryable), String(outcome));
  } finally {
    sink.close();
  }
});
