import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import type { Delivery } from '../../../src/core/delivery.ts';
import type { KafkaConsumer, KafkaConsumerHandlers } from '../../../src/kafka/client.ts';
import { consumeKafka } from '../../../src/kafka/consumption.ts';
import { CounterRegistry } from '../../../src/observability/counters.ts';
import { eventually } from '../../harness/eventually.ts';

// A fake consumer, because the fault is in the client, not the broker: between a crash and
// its restart kafkajs refuses pause() and resume() ("Consumer group was not initialized"), a
// window no real broker can be made to open on demand.
test('an ack or a stop while the consumer restarts after a crash neither throws nor skips the last commit and disconnect', async () => {
  let restarting = false;
  const calls: string[] = [];
  let handlers: KafkaConsumerHandlers | undefined;
  const refuse = (what: string) => {
    calls.push(what);
    if (restarting) throw new Error('Consumer group was not initialized, consumer#run must be called first');
  };
  const consumer: KafkaConsumer = {
    connect: async () => {},
    run: async (h: KafkaConsumerHandlers) => {
      handlers = h;
    },
    pause: () => refuse('pause'),
    resume: () => refuse('resume'),
    commit: async (offsets: readonly { readonly offset: string }[]) => {
      calls.push(`commit ${offsets.map((o) => o.offset).join(',')}`);
    },
    disconnect: async () => {
      calls.push('disconnect');
    },
  } as unknown as KafkaConsumer;
  let stopped: Promise<void> | undefined;
  const ctx = { bridge: 'b', dataDir: '.', logger: pino({ level: 'silent' }), counters: new CounterRegistry(), afterStop: (work: Promise<void>) => (stopped = work) };
  const got: Delivery[] = [];
  const subscription = consumeKafka({ topics: ['t'], maxInFlight: 2, retryBackoffMs: 10, stopTimeoutMs: 50 }, ctx, () => consumer).subscribe((d) => got.push(d));
  await eventually(() => assert.ok(!(handlers === undefined), 'still: handlers === undefined'), { timeoutMs: 5000 });
  const record = (offset: number) => ({ offset: String(offset), key: 'k', value: Buffer.from('x'), headers: {}, timestamp: Date.now() });
  void handlers?.onBatch('t', 0, [record(0), record(1), record(2)], { resolve: () => {}, active: () => true, heartbeat: async () => {} });
  await eventually(() => assert.ok(!(got.length < 2), 'still: got.length < 2'), { timeoutMs: 5000 });
  assert.equal(got.length, 2, 'the window of 2 is full: the partition is paused');
  assert.ok(calls.includes('pause'));

  handlers?.onCrash(new Error('connection lost'), true);
  restarting = true;
  assert.doesNotThrow(() => (got[0] as Delivery).ack(), 'an ack does not throw when the resume is refused');
  assert.doesNotThrow(() => subscription.unsubscribe(), 'a stop does not throw when the pause is refused');
  await stopped;
  assert.ok(calls.includes('commit 1'), `offset 0 acked: committed through it (${calls.join(' ')})`);
  assert.equal(calls.at(-1), 'disconnect');
});
