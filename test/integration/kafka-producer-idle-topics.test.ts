// A producer with a topic per device (`topic: telemetry.${clientId}`) must not ask Kafka for the
// metadata of every device it ever wrote: kafkajs remembered each topic for good and named all of
// them in every metadata request, so that on a gateway whose devices come and go the requests
// (and the cost of each send) grew without end.
// Before kafkajs loads, as in `ferry run`: some of Ferry's replacements are bound at kafkajs' load.
import '../harness/kafkajs-patched.ts';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Kafka, logLevel } from 'kafkajs';
import pino from 'pino';
import { createKafkaProducer, type KafkaProducerOptions } from '../../src/kafka/client.ts';
import { randomName, requireService } from '../harness/services.ts';

const require = createRequire(import.meta.url);

/** The topics named in each metadata request kafkajs sends, read at its Broker (the topics it asks Kafka about). */
function recordMetadataRequests(): { readonly requests: string[][]; stop(): void } {
  const { prototype } = require('kafkajs/src/broker/index.js') as { prototype: { metadata: (this: unknown, topics?: string[]) => Promise<unknown> } };
  const original = prototype.metadata;
  const requests: string[][] = [];
  prototype.metadata = function metadata(this: unknown, topics: string[] = []) {
    requests.push([...topics]);
    return original.call(this, topics);
  };
  return { requests, stop: () => void (prototype.metadata = original) };
}

/** A producer, acks all and no compression, that forgets a topic not written for `options.topicIdleMs`. */
function forgettingProducer(options: Pick<KafkaProducerOptions, 'brokers' | 'clientId' | 'idempotent' | 'maxInFlightRequests' | 'topicIdleMs'>) {
  return createKafkaProducer({
    acks: 'all',
    compression: 'none',
    connectionTimeoutMs: 3000,
    requestTimeoutMs: 30_000,
    retries: 5,
    logger: pino({ level: 'silent' }),
    ...options,
  });
}

test('kafka producer: a topic not written for topicIdleMs is no longer in its metadata requests, and is written again when it comes back', async () => {
  const brokers = await requireService('kafka');
  const base = randomName('ferry-idle-topics-');
  const waves = [0, 1, 2, 3].map((wave) => Array.from({ length: 40 }, (_, i) => `${base}.w${wave}.dev-${i}`));
  const admin = new Kafka({ brokers, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics: waves.flat().map((topic) => ({ topic, numPartitions: 1 })), waitForLeaders: true });
  } finally {
    await admin.disconnect();
  }
  const idleMs = 1000;
  const producer = forgettingProducer({ brokers, clientId: 'ferry-idle-topics', idempotent: false, topicIdleMs: idleMs });
  const recorded = recordMetadataRequests();
  const write = (topics: readonly string[]) =>
    producer.send(topics.map((topic) => ({ topic, records: [{ key: 'k', value: Buffer.from(topic), headers: {}, timestamp: Date.now() }] })));
  try {
    await producer.connect();
    const byWave: string[][][] = [];
    for (const topics of waves) {
      const from = recorded.requests.length;
      await write(topics);
      byWave.push(recorded.requests.slice(from));
      await sleep(idleMs + 300);
    }
    for (const [wave, requests] of byWave.entries()) {
      assert.ok(requests.length > 0, `wave ${wave}: a metadata request for its new topics (kafkajs' Broker.metadata not called: has kafkajs changed?)`);
      const named = new Set(requests.flat());
      for (const topic of waves[wave] as string[]) assert.ok(named.has(topic), `wave ${wave}: its topic ${topic} is asked for`);
      const earlier = waves
        .slice(0, wave)
        .flat()
        .filter((topic) => named.has(topic));
      assert.deepEqual(earlier, [], `wave ${wave}: the topics of earlier waves, idle for over ${idleMs} ms, are not asked for`);
    }
    // The first wave's topics, forgotten, are looked up again and written.
    const from = recorded.requests.length;
    await write(waves[0] as string[]);
    const again = recorded.requests.slice(from);
    assert.ok(
      again.some((topics) => topics.includes(`${base}.w0.dev-0`)),
      'a forgotten topic written again is asked for again',
    );
    assert.ok(Math.max(...again.map((topics) => topics.length)) <= 40, `only the topics written lately are asked for: ${again.map((t) => t.length).join(', ')}`);
  } finally {
    recorded.stop();
    await producer.disconnect();
  }
});

test("kafka producer: an idempotent producer's topic, forgotten and written again, goes on from its sequence numbers", async () => {
  const brokers = await requireService('kafka');
  const base = randomName('ferry-idle-topics-eos-');
  const [kept, other] = [`${base}.kept`, `${base}.other`];
  const admin = new Kafka({ brokers, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics: [kept, other].map((topic) => ({ topic, numPartitions: 3 })), waitForLeaders: true });
    const idleMs = 300;
    const producer = forgettingProducer({ brokers, clientId: 'ferry-idle-topics-eos', idempotent: true, maxInFlightRequests: 1, topicIdleMs: idleMs });
    const recorded = recordMetadataRequests();
    const write = (topic: string, round: number) =>
      producer.send([{ topic, records: Array.from({ length: 20 }, (_, i) => ({ key: `dev-${i}`, value: Buffer.from(`${round}`), headers: {}, timestamp: Date.now() })) }]);
    const rounds = 3;
    try {
      await producer.connect();
      for (let round = 0; round < rounds; round++) {
        const from = recorded.requests.length;
        // Refused as out of order, this would throw (the producer is not renewed by a send that fails).
        await write(kept, round);
        assert.ok(
          recorded.requests.slice(from).some((topics) => topics.includes(kept)),
          `round ${round}: '${kept}', forgotten, is asked for again`,
        );
        await sleep(idleMs + 200);
        await write(other, round);
        await sleep(idleMs + 200);
      }
    } finally {
      recorded.stop();
      await producer.disconnect();
    }
    const written = (await admin.fetchTopicOffsets(kept)).reduce((n, { high, low }) => n + Number(high) - Number(low), 0);
    assert.equal(written, rounds * 20, 'every record written once');
  } finally {
    await admin.disconnect();
  }
});
