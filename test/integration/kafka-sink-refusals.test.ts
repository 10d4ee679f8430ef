// A record Kafka refuses for what it is (too large for the topic, no key on a compacted topic,
// a time the topic does not accept) must be refused alone: Kafka refuses its partition's whole
// record batch, and the sink dead-lettered every message of the batch with it (records of other
// partitions, already written, included), or retried the batch for ever (INVALID_TIMESTAMP).
// Before kafkajs loads, as in `ferry run`: some of Ferry's replacements are bound at kafkajs' load.
import '../harness/kafkajs-patched.ts';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Subject } from 'rxjs';
import pino from 'pino';
import { Kafka, type ITopicConfig, logLevel } from 'kafkajs';
import { type Delivery, createDelivery } from '../../src/core/delivery.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import { isFerryError } from '../../src/core/errors.ts';
import { kafkaSink } from '../../src/kafka/sink.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { readTopic } from '../harness/kafka-read.ts';
import { randomName, requireService } from '../harness/services.ts';

const logger = pino({ level: 'silent' });

async function createTopics(brokers: string[], topics: ITopicConfig[]): Promise<void> {
  const admin = new Kafka({ brokers, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics, waitForLeaders: true });
  } finally {
    await admin.disconnect();
  }
}

interface Message {
  /** The MQTT topic's level after `d/` (`${1}`), and the client id unless `clientId` says otherwise. */
  readonly level: string;
  readonly bytes?: number;
  /** Null: no client id (so no key). */
  readonly clientId?: string | null;
  readonly timestamp?: number;
}

type Outcome = { readonly id: string; readonly outcome: 'acked' | Error };

/** A kafka sink over the source filter `d/+`, fed from a Subject. */
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
  const subscription = sink(input).subscribe();
  /** Sends the messages in one batch; resolves with each one's outcome, in order. */
  const send = (messages: readonly Message[]): Promise<Outcome[]> =>
    Promise.all(
      messages.map(
        (m, i) =>
          new Promise<Outcome>((resolve) => {
            const clientId = m.clientId === undefined ? m.level : m.clientId;
            const envelope = createEnvelope({
              topic: `d/${m.level}`,
              payload: Buffer.alloc(m.bytes ?? 10, 48 + (i % 10)),
              origin: { source: 'test', ...(clientId === null ? {} : { clientId }) },
              ...(m.timestamp === undefined ? {} : { timestamp: m.timestamp }),
            });
            input.next(createDelivery(envelope, { onAck: () => resolve({ id: envelope.id, outcome: 'acked' }), onNack: (error) => resolve({ id: envelope.id, outcome: error }) }));
          }),
      ),
    );
  return { send, counters, close: () => subscription.unsubscribe() };
}

function assertRefusedAlone(outcome: Outcome | undefined, reason: RegExp): void {
  const error = outcome?.outcome;
  assert.ok(isFerryError(error, 'MESSAGE_INVALID') && !error.retryable, `refused alone, for good: ${String(error)}`);
  assert.match(error.message, new RegExp(`message ${outcome?.id} \\(MQTT topic '[^']+'\\) cannot be written: Kafka refused the record`));
  assert.match(error.message, reason);
}

/** The ids written to `topic`, per key, in order, each once (a retry may write some twice). */
async function idsByKey(brokers: string[], topic: string): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {};
  for (const m of await readTopic(brokers, topic)) {
    const ids = (out[m.key ?? ''] ??= []);
    const id = m.headers['ferry-id'] as string;
    if (!ids.includes(id)) ids.push(id);
  }
  return out;
}

const expectedByKey = (messages: readonly Message[], outcomes: readonly Outcome[]) => {
  const out: Record<string, string[]> = {};
  messages.forEach((m, i) => {
    if (outcomes[i]?.outcome === 'acked') (out[m.level] ??= []).push(outcomes[i].id);
  });
  return out;
};

test('kafka sink: a record larger than the topic allows is refused alone; its batch-mates, in its partition and others, are written in order', async () => {
  const brokers = await requireService('kafka');
  const topic = randomName('ferry-sink-too-large-');
  await createTopics(brokers, [{ topic, numPartitions: 3, configEntries: [{ name: 'max.message.bytes', value: '4096' }] }]);
  const sink = openSink({ brokers, topic });
  try {
    const messages: Message[] = [...'abcabcabc'].map((level, i) => ({ level, bytes: i === 4 ? 8000 : 20 }));
    const outcomes = await sink.send(messages);
    assertRefusedAlone(outcomes[4], /8000 bytes of payload.*max\.message\.bytes.*MESSAGE_TOO_LARGE/);
    outcomes.forEach((o, i) => i === 4 || assert.equal(o.outcome, 'acked', `message ${i}: ${String(o.outcome)}`));
    assert.equal(sink.counters.get('kafka.messages.rejected{bridge=test}'), 1);
    assert.deepEqual(await idsByKey(brokers, topic), expectedByKey(messages, outcomes));
  } finally {
    sink.close();
  }
});

for (const idempotent of [false, true]) {
  test(`kafka sink: a too-large record's batch-mates that Kafka wrote in other partitions are not written again while it is looked for${idempotent ? ' (idempotent)' : ''}`, async () => {
    const brokers = await requireService('kafka');
    const topic = randomName('ferry-sink-too-large-once-');
    await createTopics(brokers, [{ topic, numPartitions: 3, configEntries: [{ name: 'max.message.bytes', value: '4096' }] }]);
    const sink = openSink({ brokers, topic, idempotent });
    try {
      // 60 records over 7 keys in one request; Kafka refuses the big one's partition and writes the two others.
      const messages: Message[] = Array.from({ length: 60 }, (_, i) => ({ level: `k${i % 7}`, bytes: i === 30 ? 8000 : 20 }));
      const outcomes = await sink.send(messages);
      assertRefusedAlone(outcomes[30], /MESSAGE_TOO_LARGE/);
      outcomes.forEach((o, i) => i === 30 || assert.equal(o.outcome, 'acked', `message ${i}: ${String(o.outcome)}`));
      const written = await readTopic(brokers, topic);
      const ids = written.map((m) => m.headers['ferry-id'] as string);
      assert.equal(ids.length - new Set(ids).size, 0, 'records written twice');
      assert.deepEqual(await idsByKey(brokers, topic), expectedByKey(messages, outcomes));
    } finally {
      sink.close();
    }
  });
}

test('kafka sink: records that fit the topic alone but not together in one batch are all written', async () => {
  const brokers = await requireService('kafka');
  const topic = randomName('ferry-sink-batch-too-large-');
  await createTopics(brokers, [{ topic, numPartitions: 2, configEntries: [{ name: 'max.message.bytes', value: '4096' }] }]);
  const sink = openSink({ brokers, topic });
  try {
    // 20 records of 500 bytes for one key: 10 KB in one partition's batch.
    const messages: Message[] = Array.from({ length: 20 }, (_, i) => ({ level: i % 5 === 0 ? 'other' : 'same', bytes: 500 }));
    const outcomes = await sink.send(messages);
    outcomes.forEach((o, i) => assert.equal(o.outcome, 'acked', `message ${i}: ${String(o.outcome)}`));
    assert.equal(sink.counters.get('kafka.messages.rejected{bridge=test}'), 0);
    assert.deepEqual(await idsByKey(brokers, topic), expectedByKey(messages, outcomes));
  } finally {
    sink.close();
  }
});

test('kafka sink: the idempotent producer refuses a too-large record alone and goes on writing, from a topic template too', async () => {
  const brokers = await requireService('kafka');
  const base = randomName('ferry-sink-idem-large-');
  await createTopics(brokers, [
    { topic: `${base}.small`, numPartitions: 3, configEntries: [{ name: 'max.message.bytes', value: '4096' }] },
    { topic: `${base}.big`, numPartitions: 1 },
  ]);
  const sink = openSink({ brokers, topic: `${base}.\${1}`, idempotent: true });
  try {
    // Keys spread over the small topic's partitions; the big topic takes what the small one refuses.
    const messages: Message[] = [0, 1, 2, 3, 4, 5, 6, 7].map((i) => ({ level: i % 4 === 3 ? 'big' : 'small', clientId: `k${i % 3}`, bytes: i === 5 ? 8000 : 20 }));
    const outcomes = await sink.send(messages);
    assertRefusedAlone(outcomes[5], /MESSAGE_TOO_LARGE/);
    outcomes.forEach((o, i) => i === 5 || assert.equal(o.outcome, 'acked', `message ${i}: ${String(o.outcome)}`));
    // The next batch goes to the same partitions: no sequence number of the failed requests is in its way.
    const next = await sink.send(messages.map((m) => ({ ...m, bytes: 20 })));
    next.forEach((o, i) => assert.equal(o.outcome, 'acked', `next message ${i}: ${String(o.outcome)}`));
    const written = new Set([...(await readTopic(brokers, `${base}.small`)), ...(await readTopic(brokers, `${base}.big`))].map((m) => m.headers['ferry-id']));
    const acked = [...outcomes, ...next].filter((o) => o.outcome === 'acked').map((o) => o.id);
    assert.deepEqual(
      acked.filter((id) => !written.has(id)),
      [],
    );
    assert.equal(written.has(outcomes[5]?.id), false);
  } finally {
    sink.close();
  }
});

test('kafka sink: a record without a key on a compacted topic is refused alone (INVALID_RECORD)', async () => {
  const brokers = await requireService('kafka');
  const topic = randomName('ferry-sink-compacted-');
  await createTopics(brokers, [{ topic, numPartitions: 2, configEntries: [{ name: 'cleanup.policy', value: 'compact' }] }]);
  const sink = openSink({ brokers, topic });
  try {
    const messages: Message[] = [{ level: 'a' }, { level: 'b', clientId: null }, { level: 'c' }];
    const outcomes = await sink.send(messages);
    assertRefusedAlone(outcomes[1], /INVALID_RECORD/);
    assert.equal(outcomes[0]?.outcome, 'acked');
    assert.equal(outcomes[2]?.outcome, 'acked');
    assert.deepEqual(await idsByKey(brokers, topic), expectedByKey(messages, outcomes));
  } finally {
    sink.close();
  }
});

test('kafka sink: a record older than the topic accepts (a backlog after a long outage) is refused alone, not retried for ever', async () => {
  const brokers = await requireService('kafka');
  const topic = randomName('ferry-sink-old-');
  await createTopics(brokers, [{ topic, numPartitions: 2, configEntries: [{ name: 'message.timestamp.before.max.ms', value: '3600000' }] }]);
  const sink = openSink({ brokers, topic });
  try {
    const messages: Message[] = [{ level: 'a' }, { level: 'b', timestamp: Date.now() - 2 * 86_400_000 }, { level: 'a' }];
    const outcomes = await sink.send(messages);
    assertRefusedAlone(outcomes[1], /message\.timestamp\.before\.max\.ms.*INVALID_TIMESTAMP/);
    assert.equal(outcomes[0]?.outcome, 'acked');
    assert.equal(outcomes[2]?.outcome, 'acked');
    assert.deepEqual(await idsByKey(brokers, topic), expectedByKey(messages, outcomes));
  } finally {
    sink.close();
  }
});
