import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import { groupMessagesPerPartition, patchKafkajs, recordEncoder, type RecordInput } from '../../../src/kafka/kafkajs-patches.ts';

// The originals, loaded before the patch replaces them in the module cache.
const require = createRequire(import.meta.url);
const Encoder = require('kafkajs/src/protocol/encoder.js');
const originalRecord = require('kafkajs/src/protocol/recordBatch/record/v0/index.js') as (input: RecordInput) => { buffer: Buffer };
const originalGroup = require('kafkajs/src/producer/groupMessagesPerPartition.js') as typeof groupMessagesPerPartition;
const record = recordEncoder(Encoder) as unknown as (input: RecordInput) => { buffer: Buffer };

test('records are encoded byte for byte as kafkajs encodes them', () => {
  const long = 'é'.repeat(300);
  const inputs: RecordInput[] = [
    {
      key: 'device-1',
      value: Buffer.alloc(200, 7),
      headers: { 'ferry-id': '0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b', 'mqtt-topic': 'devices/d1/telemetry' },
      timestampDelta: 12,
      offsetDelta: 3,
    },
    { key: null, value: Buffer.alloc(0), headers: {} },
    { key: Buffer.from('k'), value: Buffer.alloc(5000, 1), headers: { a: ['1', '2'], b: Buffer.from('raw'), traceparent: long }, timestampDelta: 2 ** 40, offsetDelta: 499 },
    { value: 'text value', headers: { empty: '' } },
    { key: long, value: null },
  ];
  for (const input of inputs) assert.deepEqual(record(input).buffer, originalRecord(input).buffer);
});

test('messages are grouped per partition as kafkajs groups them, in order', () => {
  const messages = Array.from({ length: 50 }, (_, i) => ({ key: `k${i % 7}`, value: String(i) }));
  const partitioner = ({ message }: { message: unknown }) => Number((message as { key: string }).key.slice(1)) % 3;
  const args = { topic: 't', partitionMetadata: [{}, {}, {}], messages, partitioner };
  assert.deepEqual(groupMessagesPerPartition(args), originalGroup(args));
  assert.deepEqual(groupMessagesPerPartition({ ...args, partitionMetadata: [] }), originalGroup({ ...args, partitionMetadata: [] }));
});

test('after patching, kafkajs requires the replacements', () => {
  patchKafkajs();
  assert.equal(require('kafkajs/src/producer/groupMessagesPerPartition.js'), groupMessagesPerPartition);
  const patched = require('kafkajs/src/protocol/recordBatch/record/v0/index.js') as typeof originalRecord;
  assert.notEqual(patched, originalRecord);
  const input = { key: 'k', value: Buffer.from('v'), headers: { h: 'x' } };
  assert.deepEqual(patched(input).buffer, originalRecord(input).buffer);
});
