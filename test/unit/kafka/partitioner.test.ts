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
  const seen = new Set(Array.from({ length: 8 }, () => ours({ topic: 't', partitionMetadata, message: { key: null, value: 'v' } })));
  assert.equal(seen.size, 4);
});
