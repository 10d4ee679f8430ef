import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import pino, { type Logger } from 'pino';
import type { Subscription } from 'rxjs';
import type { Delivery } from '../../src/core/delivery.ts';
import { isUuidV7 } from '../../src/core/envelope.ts';
import { FerryError } from '../../src/core/errors.ts';
import { kafkaSource } from '../../src/kafka/source.ts';
import { fromKafka } from '../../src/lib/kafka.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { sourceConformance } from '../conformance/source-suite.ts';
import { eventually } from '../harness/eventually.ts';
import { capturedEntries } from '../harness/log-lines.ts';
import { kafkaTestClient, type KafkaTestClient } from '../harness/kafka-group.ts';
import { randomName, requireService } from '../harness/services.ts';

interface Running {
  readonly kafka: KafkaTestClient;
  readonly topic: string;
  readonly group: string;
  readonly received: Delivery[];
  readonly counters: CounterRegistry;
  readonly subscription: Subscription;
  /** Resolves when `count` deliveries arrived in all. */
  waitFor(count: number): Promise<Delivery[]>;
  close(): Promise<void>;
}

async function consume(options: { maxInFlight?: number; retryBackoffMs?: number; stopTimeoutMs?: number } = {}, logger: Logger = pino({ level: 'silent' })): Promise<Running> {
  const brokers = await requireService('kafka');
  const kafka = await kafkaTestClient(brokers);
  const topic = randomName('ferry-it-source-');
  const group = randomName('ferry-it-source-group-');
  await kafka.createTopic(topic);
  const counters = new CounterRegistry();
  const config = kafkaSource.schema.parse({ brokers, groupId: group, topics: [topic], fromBeginning: true, ...options });
  const source = kafkaSource.create(config, { logger, counters, dataDir: '/nonexistent', bridge: 'it' });
  const received: Delivery[] = [];
  const subscription = source.subscribe((d) => received.push(d));
  return {
    kafka,
    topic,
    group,
    received,
    counters,
    subscription,
    waitFor: async (count) => {
      await eventually(() => assert.ok(!(received.length < count), 'still: received.length < count'), { timeoutMs: 30000 });
      assert.ok(received.length >= count, `received ${received.length} of ${count}`);
      return received;
    },
    close: async () => {
      subscription.unsubscribe();
      await kafka.close();
    },
  };
}

sourceConformance('kafka (consumer group)', {
  start: async () => {
    const brokers = await requireService('kafka');
    const kafka = await kafkaTestClient(brokers);
    const topic = randomName('ferry-conformance-');
    const group = randomName('ferry-conformance-group-');
    await kafka.createTopic(topic);
    const config = kafkaSource.schema.parse({ brokers, groupId: group, topics: [topic], fromBeginning: true, retryBackoffMs: 100, maxWaitTimeMs: 100, stopTimeoutMs: 500 });
    let cleaned = false;
    // One partition, written in the order of the calls.
    let previous: Promise<unknown> = Promise.resolve();
    return {
      // Through the public entry point (ferry/kafka), as a library user makes it.
      source: fromKafka(config, { name: 'conformance', logger: pino({ level: 'silent' }), counters: new CounterRegistry() }),
      // The producer's acknowledgement, for a source that reads Kafka: the group's committed
      // offset moved past the message.
      produce: async (payload) => {
        const sent = previous.then(() => kafka.produce(topic, [{ value: payload }]));
        previous = sent.catch(() => {});
        const [offset] = await sent;
        await eventually(
          async () => {
            // Nobody waits for it after cleanup, and the admin client is gone.
            if (cleaned) return;
            const committed = (await kafka.committed(group, topic))[0] ?? '-1';
            assert.ok(BigInt(committed) > BigInt(offset as string), `committed ${committed}, message at ${offset}`);
          },
          { timeoutMs: 60_000, intervalMs: 100 },
        );
      },
      cleanup: async () => {
        cleaned = true;
        await kafka.close();
      },
    };
  },
});

const text = (d: Delivery | undefined) => Buffer.from(d?.envelope.payload ?? []).toString();

/** The log lines at `level` (pino's number: 20 debug, 40 warn, 50 error) whose message includes `text`. */
const linesOf = (entries: readonly Record<string, unknown>[], level: number, text: string) => entries.filter((e) => e['level'] === level && String(e['msg']).includes(text));

test('acks out of order: the committed offset moves only past messages that are acked with every one before them', async () => {
  const run = await consume();
  try {
    await run.kafka.produce(
      run.topic,
      ['m0', 'm1', 'm2', 'm3', 'm4'].map((value, i) => ({ key: `k${i}`, value, headers: { n: String(i) } })),
    );
    const [m0, m1, m2, m3, m4] = await run.waitFor(5);
    assert.deepEqual(run.received.map(text), ['m0', 'm1', 'm2', 'm3', 'm4']);
    assert.equal(m2?.envelope.key, 'k2');
    assert.deepEqual(m2?.envelope.headers, { n: '2' });
    assert.equal(m2?.envelope.topic, run.topic);
    assert.equal(m2?.envelope.origin.source, 'kafka');

    m2?.ack();
    m4?.ack();
    m1?.ack();
    await sleep(1000);
    assert.deepEqual(await run.kafka.committed(run.group, run.topic), { 0: '-1' }, 'committed past the unacked m0');
    m0?.ack();
    await run.kafka.waitForCommitted(run.group, run.topic, (o) => o[0] === '3');
    m3?.ack();
    await run.kafka.waitForCommitted(run.group, run.topic, (o) => o[0] === '5');
  } finally {
    await run.close();
  }
});

test('a nacked message is delivered again (same envelope), and the offset waits for it', async () => {
  const run = await consume({ retryBackoffMs: 100 });
  try {
    await run.kafka.produce(run.topic, [{ value: 'flaky' }, { value: 'fine' }]);
    const [flaky, fine] = await run.waitFor(2);
    fine?.ack();
    flaky?.nack(new Error('device link down'));
    const [, , again] = await run.waitFor(3);
    assert.equal(again?.envelope.id, flaky?.envelope.id);
    assert.equal(text(again), 'flaky');
    assert.deepEqual(await run.kafka.committed(run.group, run.topic), { 0: '-1' });
    assert.equal(run.counters.get(`kafka.messages.redelivered{bridge=it,topic=${run.topic}}`), 1);
    again?.ack();
    await run.kafka.waitForCommitted(run.group, run.topic, (o) => o[0] === '2');
  } finally {
    await run.close();
  }
});

test('retries keep the partition in order: refused messages come again in offset order, before those fetched meanwhile', async () => {
  const run = await consume({ retryBackoffMs: 1500 });
  try {
    await run.kafka.produce(
      run.topic,
      ['m0', 'm1', 'm2'].map((value) => ({ key: 'device-1', value })),
    );
    const [m0, m1, m2] = await run.waitFor(3);
    m0?.ack();
    // A sink whose batch [m1, m2] failed refuses both, the later one second.
    m1?.nack(new Error('upstream down'));
    m2?.nack(new Error('upstream down'));
    // Fetched while the partition waits for its retry: held back behind m1 and m2.
    await run.kafka.produce(run.topic, [{ key: 'device-1', value: 'm3' }]);
    const all = await run.waitFor(6);
    assert.deepEqual(all.slice(3).map(text), ['m1', 'm2', 'm3']);
    for (const d of all.slice(3)) d.ack();
    await run.kafka.waitForCommitted(run.group, run.topic, (o) => o[0] === '4');
  } finally {
    await run.close();
  }
});

test('a message refused for good is delivered again by itself; refused alone, it is counted and committed past, so its partition does not stall', async () => {
  const { logger, entries } = capturedEntries('debug');
  const run = await consume({ retryBackoffMs: 100 }, logger);
  try {
    await run.kafka.produce(run.topic, [{ value: 'bad' }, { value: 'good' }]);
    const [bad, good] = await run.waitFor(2);
    const refuse = () => new FerryError('MESSAGE_REJECTED', 'no key to render the topic', { retryable: false });
    bad?.nack(refuse());
    good?.ack();
    const [, , alone] = await run.waitFor(3);
    assert.equal(alone?.envelope.id, bad?.envelope.id);
    alone?.nack(refuse());
    await run.kafka.waitForCommitted(run.group, run.topic, (o) => o[0] === '2');
    assert.equal(run.counters.get(`kafka.messages.invalid{bridge=it,topic=${run.topic}}`), 1);
    await sleep(300);
    assert.equal(run.received.length, 3, 'not delivered a third time');
    // Refused by a sink that does not batch (its own error): no warning of a batch, only the error
    // line naming where it was committed past.
    assert.deepEqual(linesOf(entries, 40, 'refused for good'), []);
    assert.equal(linesOf(entries, 20, 'refused for good; delivering it again by itself').length, 1);
    const committedPast = linesOf(entries, 50, 'refused for good; committing past it');
    assert.deepEqual(
      committedPast.map((l) => [l['topic'], l['partition'], l['offset'], l['id']]),
      [[run.topic, 0, '0', bad?.envelope.id]],
    );
  } finally {
    await run.close();
  }
});

test('a batch refused for good is delivered again one message at a time: the one at fault is committed past, the others are written', async () => {
  const { logger, entries } = capturedEntries('debug');
  const run = await consume({ retryBackoffMs: 100 }, logger);
  try {
    await run.kafka.produce(
      run.topic,
      ['a', 'b', 'c'].map((value) => ({ key: 'k', value })),
    );
    const batch = await run.waitFor(3);
    // A sink refuses the whole batch because of b (a record too large for the broker, say), each
    // message with the batch's one error, as a batching sink does.
    const refused = new FerryError('SINK_WRITE_FAILED', 'batch refused', { retryable: false });
    for (const d of batch) d.nack(refused);
    const [a] = (await run.waitFor(4)).slice(3);
    assert.equal(text(a), 'a');
    await sleep(300);
    assert.equal(run.received.length, 4, 'b waits until a is settled');
    a?.ack();
    const [b] = (await run.waitFor(5)).slice(4);
    assert.equal(text(b), 'b');
    b?.nack(new FerryError('SINK_WRITE_FAILED', 'record too large', { retryable: false }));
    const [c] = (await run.waitFor(6)).slice(5);
    assert.equal(text(c), 'c');
    c?.ack();
    await run.kafka.waitForCommitted(run.group, run.topic, (o) => o[0] === '3');
    assert.equal(run.counters.get(`kafka.messages.invalid{bridge=it,topic=${run.topic}}`), 1);
    // Each message of the batch is warned about once, with the size of its batch; b's error line names where it was.
    const withBatch = linesOf(entries, 40, 'refused for good with its batch of 3; delivering it again by itself');
    assert.deepEqual(
      withBatch.map((l) => [l['offset'], l['batch']]),
      [
        ['0', 3],
        ['1', 3],
        ['2', 3],
      ],
    );
    assert.deepEqual(
      linesOf(entries, 50, 'refused for good; committing past it').map((l) => [l['topic'], l['partition'], l['offset']]),
      [[run.topic, 0, '1']],
    );
  } finally {
    await run.close();
  }
});

test('a partition takes at most maxInFlight messages past its oldest unacked one, and resumes when it is acked', async () => {
  const run = await consume({ maxInFlight: 2 });
  try {
    await run.kafka.produce(
      run.topic,
      ['a', 'b', 'c', 'd'].map((value) => ({ value })),
    );
    const [a, b] = await run.waitFor(2);
    b?.ack();
    await sleep(1000);
    assert.deepEqual(run.received.map(text), ['a', 'b'], 'took more than maxInFlight');
    a?.ack();
    const all = await run.waitFor(4);
    assert.deepEqual(all.map(text), ['a', 'b', 'c', 'd']);
    for (const d of all.slice(2)) d.ack();
    await run.kafka.waitForCommitted(run.group, run.topic, (o) => o[0] === '4');
  } finally {
    await run.close();
  }
});

test('unsubscribing stops taking messages, commits what is acked within stopTimeoutMs, and leaves the group', async () => {
  const run = await consume({ stopTimeoutMs: 10_000 });
  try {
    await run.kafka.produce(run.topic, [{ value: 'x' }]);
    const [x] = await run.waitFor(1);
    run.subscription.unsubscribe();
    // Acked after the unsubscribe, while the source waits for its messages in flight.
    x?.ack();
    await run.kafka.waitForCommitted(run.group, run.topic, (o) => o[0] === '1');
    await run.kafka.produce(run.topic, [{ value: 'after' }]);
    await sleep(1000);
    assert.deepEqual(run.received.map(text), ['x']);
    let state = '';
    for (let i = 0; i < 100 && state !== 'Empty'; i++) {
      state = await run.kafka.groupState(run.group);
      if (state !== 'Empty') await sleep(100);
    }
    assert.equal(state, 'Empty', 'the consumer is still a member of its group');
  } finally {
    await run.close();
  }
});

test('a record read again (the consumer started again before its offset was committed) is the same message: the same id, a UUIDv7 with the record time', async () => {
  const run = await consume({ stopTimeoutMs: 100 });
  const brokers = await requireService('kafka');
  let again: Subscription | undefined;
  try {
    await run.kafka.produce(run.topic, [{ value: 'open' }, { value: 'close' }]);
    const first = (await run.waitFor(2)).map((d) => d.envelope);
    // Not acked: the next consumer of the group reads both again.
    run.subscription.unsubscribe();
    await eventually(async () => assert.equal(await run.kafka.groupState(run.group), 'Empty'), { timeoutMs: 30_000, intervalMs: 100 });
    const config = kafkaSource.schema.parse({ brokers, groupId: run.group, topics: [run.topic], fromBeginning: true });
    const source = kafkaSource.create(config, { logger: pino({ level: 'silent' }), counters: new CounterRegistry(), dataDir: '/nonexistent', bridge: 'it' });
    const second: Delivery[] = [];
    again = source.subscribe((d) => second.push(d));
    await eventually(() => assert.equal(second.length, 2), { timeoutMs: 30_000 });
    assert.deepEqual(
      second.map((d) => [d.envelope.id, text(d)]),
      first.map((e) => [e.id, Buffer.from(e.payload).toString()]),
    );
    assert.notEqual(first[0]?.id, first[1]?.id);
    for (const e of first) {
      assert.ok(isUuidV7(e.id), e.id);
      assert.equal(Number.parseInt(e.id.replaceAll('-', '').slice(0, 12), 16), e.timestamp, 'the time field is the record time');
    }
    for (const d of second) d.ack();
  } finally {
    again?.unsubscribe();
    await run.close();
  }
});

test('a partition paused for a full window, taken away by a rebalance and given back, is read again', { timeout: 120_000 }, async () => {
  const brokers = await requireService('kafka');
  const kafka = await kafkaTestClient(brokers);
  const topic = randomName('ferry-it-source-');
  const group = randomName('ferry-it-source-group-');
  await kafka.createTopic(topic, 2);
  const member = (name: string, maxInFlight: number, onDelivery: (d: Delivery) => void) =>
    kafkaSource
      .create(
        kafkaSource.schema.parse({
          brokers,
          groupId: group,
          topics: [topic],
          fromBeginning: true,
          maxInFlight,
          sessionTimeoutMs: 10_000,
          heartbeatIntervalMs: 500,
          maxWaitTimeMs: 200,
          stopTimeoutMs: 200,
        }),
        { logger: pino({ level: 'silent' }), counters: new CounterRegistry(), dataDir: '/nonexistent', bridge: name },
      )
      .subscribe(onDelivery);
  const a: Delivery[] = [];
  const b: Delivery[] = [];
  const subscriptions: Subscription[] = [];
  try {
    for (const p of [0, 1])
      await kafka.produce(
        topic,
        [1, 2, 3].map((i) => ({ value: `p${p}-m${i}`, partition: p })),
      );
    // A holds what it takes: both partitions' windows fill (2 each) and both are paused.
    subscriptions.push(member('a', 2, (d) => a.push(d)));
    await eventually(() => assert.equal(a.length, 4), { timeoutMs: 30_000 });
    // B joins and gets one of them (read from the start: nothing was committed), then leaves.
    const bSubscription = member('b', 100, (d) => {
      b.push(d);
      d.ack();
    });
    await eventually(() => assert.equal(b.length, 3), { timeoutMs: 30_000 });
    const moved = Number(text(b[0]).slice(1, 2));
    await kafka.waitForCommitted(group, topic, (o) => o[moved] === '3');
    bSubscription.unsubscribe();
    // A gets the partition back, acks all it holds, and must read what comes to it now.
    await sleep(2000);
    for (const d of a) d.ack();
    const before = a.length;
    await kafka.produce(topic, [{ value: `p${moved}-new`, partition: moved }]);
    await eventually(
      () => {
        for (const d of a.slice(before)) d.ack();
        assert.ok(
          a.slice(before).some((d) => text(d) === `p${moved}-new`),
          `A took only ${a.slice(before).map(text).join(', ')}`,
        );
      },
      { timeoutMs: 40_000, intervalMs: 200 },
    );
  } finally {
    for (const s of subscriptions) s.unsubscribe();
    await kafka.close();
  }
});

/** A kafka source on `topics` logging at debug into `entries`; unsubscribe to stop it. */
function consumeLogged(brokers: string[], topics: string[]) {
  const { logger, entries } = capturedEntries('debug');
  const counters = new CounterRegistry();
  const config = kafkaSource.schema.parse({ brokers, groupId: randomName('ferry-it-source-missing-group-'), topics, fromBeginning: true });
  const received: Delivery[] = [];
  const subscription = kafkaSource.create(config, { logger, counters, dataDir: '/nonexistent', bridge: 'it' }).subscribe((d) => {
    received.push(d);
    d.ack();
  });
  return { entries, counters, received, subscription };
}

test('a topic that is never created is a warning said once, not an error per retry; each retry is counted', { timeout: 60_000 }, async () => {
  const brokers = await requireService('kafka');
  const kafka = await kafkaTestClient(brokers);
  // To Kafka "." and "_" are one: it does not auto-create a name that collides with an existing topic's.
  const base = randomName('ferry-it-source-missing-');
  await kafka.createTopic(`${base}_t`);
  const topic = `${base}.t`;
  const run = consumeLogged(brokers, [topic]);
  try {
    // Retried every 5 s: the third attempt failed too.
    await eventually(() => assert.ok((run.counters.get('kafka.consumer.errors{bridge=it}') ?? 0) >= 3, 'fewer than 3 attempts yet'), { timeoutMs: 30_000, intervalMs: 200 });
    const warnings = linesOf(run.entries, 40, 'does not exist (yet)');
    assert.equal(warnings.length, 1, JSON.stringify(run.entries.map((e) => [e['level'], e['msg']])));
    assert.match(String(warnings[0]?.['msg']), new RegExp(`topic ${topic.replaceAll('.', '\\.')} does not exist \\(yet\\): waiting for it; retried every 5 s`));
    assert.deepEqual(linesOf(run.entries, 50, ''), [], 'no error lines');
    assert.ok(linesOf(run.entries, 20, 'still waiting for its topic').length >= 2, 'the retries are logged at debug');
  } finally {
    run.subscription.unsubscribe();
    await kafka.close();
  }
});

test('a topic that does not exist yet is waited for: one warning, then a line when consumption starts, and its messages are read', { timeout: 60_000 }, async () => {
  const brokers = await requireService('kafka');
  const kafka = await kafkaTestClient(brokers);
  const topic = randomName('ferry-it-source-missing-');
  const run = consumeLogged(brokers, [topic]);
  try {
    // The first attempt finds no topic; the cluster auto-creates it, and the retry consumes it.
    await eventually(() => assert.equal(linesOf(run.entries, 30, 'consuming (the topic exists now)').length, 1), { timeoutMs: 30_000, intervalMs: 200 });
    assert.equal(linesOf(run.entries, 40, `topic ${topic} does not exist (yet): waiting for it`).length, 1);
    assert.deepEqual(linesOf(run.entries, 50, ''), [], 'no error lines');
    await kafka.produce(topic, [{ value: 'first' }]);
    await eventually(() => assert.deepEqual(run.received.map(text), ['first']), { timeoutMs: 30_000, intervalMs: 200 });
  } finally {
    run.subscription.unsubscribe();
    await kafka.close();
  }
});
