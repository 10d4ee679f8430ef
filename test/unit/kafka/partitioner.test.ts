import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Partitioners, type PartitionMetadata } from 'kafkajs';
import { memoizedDefaultPartitioner } from '../../../src/kafka/partitioner.ts';

const metadata = (count: number): PartitionMetadata[] => Array.from({ length: count }, (_, i) => ({ partitionId: i, leader: 0, partitionErrorCode: 0, replicas: [0], isr: [0] }));

test('records go to the partitions the DefaultPartitioner picks', () => {
  const ours = memoizedDefaultPartitioner(Partitioners.DefaultPartitioner)();
  const theirs = Partitioners.DefaultPartitioner();
  const keys = [...Array.from({ length: 300 }, (_, i) => `device-${i}`), '', 'é-ü-漢字', 'a', 'ab', 'abc', 'abcd'];
  for (const count of [1, 3, 12, 64]) {
    const partitionMetadata = metadata(count);
    for (const key of [...keys, ...keys]) {
      const args = { topic: 't', partitionMetadata, message: { key, value: 'v' } };
      assert.equal(ours(args), theirs(args), `key '${key}', ${count} partitions`);
    }
  }
});

test('a record with its own partition keeps it; records without a key are spread', () => {
  const ours = memoizedDefaultPartitioner(Partitioners.DefaultPartitioner)();
  const partitionMetadata = metadata(4);
  assert.equal(ours({ topic: 't', partitionMetadata, message: { key: 'k', value: 'v', partition: 3 } }), 3);
  const seen = new Set(Array.from({ length: 40 }, (_, i) => ours({ topic: 't', partitionMetadata, message: { key: null, value: 'v', headers: { 'ferry-id': `id-${i}` } } })));
  assert.equal(seen.size, 4);
});

// An idempotent sink sends a failed batch again as it went: Kafka drops a batch it had appended
// by producer id and sequence numbers alone, so each record must land where it went the first
// time. Dealt round robin, a record without a key went elsewhere the second time, and other
// records took the appended one's numbers on its partition: dropped as duplicates, never written.
test('a record without a key goes to the same partition each time it is sent, by its message id', () => {
  const partitionMetadata = metadata(6);
  const ours = memoizedDefaultPartitioner(Partitioners.DefaultPartitioner)();
  const again = memoizedDefaultPartitioner(Partitioners.DefaultPartitioner)();
  for (let i = 0; i < 50; i++) {
    const message = { key: null, value: 'v', headers: { 'ferry-id': `0193c0de-0000-7000-8000-${String(i).padStart(12, '0')}` } };
    const first = ours({ topic: 't', partitionMetadata, message });
    assert.equal(ours({ topic: 't', partitionMetadata, message }), first, `record ${i} sent again`);
    assert.equal(again({ topic: 't', partitionMetadata, message }), first, `record ${i} sent again by a new producer`);
  }
});
