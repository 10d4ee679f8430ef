import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import { randomBytes } from 'node:crypto';
import {
  ensureAvailableUnfilled,
  nativeCrc32c,
  patchKafkajs,
  type RecordBatchInput,
  produceRequestV3,
  recordBatchEncoder,
  recordBatchWriter,
  recordEncoder,
  type RecordInput,
  requestFrame,
} from '../../../src/kafka/kafkajs-patches.ts';
import { groupMessagesPerPartition } from '../../../src/kafka/send-messages.ts';

// The originals, loaded before the patch replaces them in the module cache.
const require = createRequire(import.meta.url);
const Encoder = require('kafkajs/src/protocol/encoder.js');
const originalRecord = require('kafkajs/src/protocol/recordBatch/record/v0/index.js') as (input: RecordInput) => { buffer: Buffer };
const originalGroup = require('kafkajs/src/producer/groupMessagesPerPartition.js') as typeof groupMessagesPerPartition;
const originalSendMessages = require('kafkajs/src/producer/sendMessages.js') as unknown;
const record = recordEncoder(Encoder) as unknown as (input: RecordInput) => { buffer: Buffer };
const originalCrc32c = require('kafkajs/src/protocol/recordBatch/crc32C/crc32C.js') as (buffer: Buffer) => number;
const originalEnsureAvailable = Encoder.prototype.ensureAvailable as (length: number) => void;
type Request = { apiKey: number; apiVersion: number; expectResponse(): boolean; encode(): Promise<{ buffer: Buffer }> };
type Frame = (input: { correlationId: number; clientId: string | null; request: Request }) => Promise<{ buffer: Buffer }>;
const originalProduceV3 = require('kafkajs/src/protocol/requests/produce/v3/request.js') as (input: unknown) => Request;
const originalProduceV7 = require('kafkajs/src/protocol/requests/produce/v7/request.js') as (input: unknown) => Request;
const originalFrame = require('kafkajs/src/protocol/request.js') as Frame;

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
    // Only its own names, as Object.keys gives them to kafkajs.
    { value: 'v', headers: Object.assign(Object.create({ inherited: 'no' }) as Record<string, string>, { own: 'yes' }) },
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

test('the native CRC32C gives the checksum kafkajs computes, at every length', () => {
  const crc32c = nativeCrc32c();
  assert.ok(crc32c !== undefined, "@node-rs/crc32's binary loads on this platform");
  const bytes = randomBytes(70_000);
  for (const length of [0, 1, 3, 7, 8, 9, 15, 16, 17, 255, 4096, 65_537, 70_000]) {
    const buffer = bytes.subarray(0, length);
    assert.equal(crc32c(buffer), originalCrc32c(buffer), `${length} bytes`);
  }
});

test('an encoder grown without zero-filling holds the same bytes as kafkajs grows it to', () => {
  const text = 'ütf-8 ✓ '.repeat(40);
  const write = (ensureAvailable: (length: number) => void) => {
    const encoder = new Encoder(1);
    encoder.ensureAvailable = ensureAvailable;
    // Every kind of write, each growing the buffer past what the last one left.
    for (let i = 0; i < 40; i++) {
      encoder
        .writeInt8(i)
        .writeInt16(-i)
        .writeInt32(i * 1_000)
        .writeUInt32(2 ** 31 + i)
        .writeInt64(2 ** 40 + i)
        .writeBoolean(i % 2 === 0)
        .writeString(text.slice(0, i * 7))
        .writeVarIntString(text.slice(i))
        .writeBytes(randomBytesOf(i))
        .writeBytes(text.slice(0, i))
        .writeVarInt(-i * 300)
        .writeVarIntBytes(i % 3 === 0 ? null : randomBytesOf(i * 50))
        .writeUVarIntString(text.slice(0, i * 3))
        .writeArray([i, i + 1], 'int32');
    }
    return encoder.buffer as Buffer;
  };
  const seeded = new Map<number, Buffer>();
  const randomBytesOf = (n: number) => {
    if (!seeded.has(n)) seeded.set(n, randomBytes(n));
    return seeded.get(n) as Buffer;
  };
  const expected = write(originalEnsureAvailable);
  assert.deepEqual(write(ensureAvailableUnfilled((n) => Encoder.nextPowerOfTwo(n))), expected);
});

test('after patching, kafkajs requires the replacements', async () => {
  patchKafkajs();
  assert.notEqual(require('kafkajs/src/producer/sendMessages.js'), originalSendMessages, 'the send, which alone groups messages, is replaced');
  const patched = require('kafkajs/src/protocol/recordBatch/record/v0/index.js') as typeof originalRecord;
  assert.notEqual(patched, originalRecord);
  const input = { key: 'k', value: Buffer.from('v'), headers: { h: 'x' } };
  assert.deepEqual(patched(input).buffer, originalRecord(input).buffer);
  assert.notEqual(require('kafkajs/src/protocol/recordBatch/crc32C/crc32C.js'), originalCrc32c);
  // Produce v7 (what the sink's producer sends to Kafka 4) loads v3 now, and so the replacement.
  const patchedV7 = require('kafkajs/src/protocol/requests/produce/v7/request.js') as typeof originalProduceV7;
  assert.notEqual(require('kafkajs/src/protocol/requests/produce/v3/request.js'), originalProduceV3);
  assert.notEqual(require('kafkajs/src/protocol/request.js'), originalFrame);
  const produce = {
    acks: -1,
    timeout: 30_000,
    producerId: Long.fromValue(42),
    producerEpoch: 1,
    topicData: [
      { topic: 't', partitions: [{ partition: 0, firstSequence: 9, messages: [{ key: 'k', value: Buffer.from('v'), headers: { h: 'x' }, timestamp: 1_700_000_000_000 }] }] },
    ],
  };
  const patchedFrame = require('kafkajs/src/protocol/request.js') as Frame;
  assert.deepEqual(
    (await patchedFrame({ correlationId: 3, clientId: 'ferry', request: patchedV7(produce) })).buffer,
    (await originalFrame({ correlationId: 3, clientId: 'ferry', request: originalProduceV7(produce) })).buffer,
  );
  const patchedBatch = require('kafkajs/src/protocol/recordBatch/v0/index.js') as typeof originalBatch;
  assert.notEqual(patchedBatch.RecordBatch, originalBatch.RecordBatch);
  assert.equal(patchedBatch.MAGIC_BYTE, originalBatch.MAGIC_BYTE, 'the fetch decoder still finds the magic byte');
  assert.notEqual(Encoder.prototype.ensureAvailable, originalEnsureAvailable);
});

/** What sendMessagesReplaced() says in a new process that runs `before` and then patches kafkajs. */
function replacedAfter(before: string): string {
  const patches = new URL('../../../src/kafka/kafkajs-patches.ts', import.meta.url).href;
  const code = `${before}\nconst { patchKafkajs, sendMessagesReplaced } = await import(${JSON.stringify(patches)});\npatchKafkajs();\nprocess.stdout.write(String(sendMessagesReplaced()));`;
  return execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { encoding: 'utf8' });
}

test("kafkajs loaded before the patches is told apart: its producers keep kafkajs' sendMessages", () => {
  assert.equal(replacedAfter(''), 'true');
  assert.equal(replacedAfter("await import('kafkajs');"), 'false', 'kafkajs loaded first: its producer bound its own sendMessages');
});

type Queue = {
  pending: { send(): void; expectResponse: boolean; correlationId: number }[];
  throttledUntil: number;
  throttleCheckTimeoutId: NodeJS.Timeout | null;
  checkPendingRequests(): void;
  scheduleCheckPendingRequests(): void;
  destroy(): void;
};
const newQueue = (): Queue => {
  const RequestQueue = require('kafkajs/src/network/requestQueue/index.js') as new (options: object) => Queue;
  const logger = { debug() {}, info() {}, warn() {}, error() {} };
  return new RequestQueue({ maxInFlightRequests: null, requestTimeout: 30_000, enforceRequestTimeout: false, clientId: 'ferry', broker: 'b:9092', logger });
};

test("kafkajs' request queue, patched, sets no timer with nothing pending (its own looped on one for as long as the connection was open)", async () => {
  patchKafkajs();
  const queue = newQueue();
  let checks = 0;
  const check = queue.checkPendingRequests.bind(queue);
  queue.checkPendingRequests = () => {
    checks += 1;
    check();
  };
  try {
    queue.checkPendingRequests(); // what a response does
    assert.equal(queue.throttleCheckTimeoutId, null);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(checks, 1, 'no check ran by itself in 100 ms');
  } finally {
    queue.destroy();
  }
});

test("kafkajs' request queue, patched, sends a request held by a throttle when the throttle ends", async () => {
  patchKafkajs();
  const queue = newQueue();
  let sentAt = 0;
  const started = Date.now();
  try {
    queue.throttledUntil = started + 60;
    queue.pending.push({ send: () => void (sentAt = Date.now()), expectResponse: true, correlationId: 1 });
    queue.scheduleCheckPendingRequests(); // what a push kafkajs cannot send at once does
    assert.notEqual(queue.throttleCheckTimeoutId, null);
    await new Promise((resolve) => setTimeout(resolve, 400));
    assert.ok(sentAt >= started + 55, `sent ${sentAt - started} ms after the throttle began, not before its end`);
    assert.equal(queue.pending.length, 0);
  } finally {
    queue.destroy();
  }
});

type TimedQueue = {
  inflight: Map<number, { sentAt: number; requestTimeout: number; timeoutRequest(): void }>;
  scheduleRequestTimeoutCheck(): void;
  destroy(): void;
};
const timedQueue = (connected: () => boolean = () => true): TimedQueue => {
  const RequestQueue = require('kafkajs/src/network/requestQueue/index.js') as new (options: object) => TimedQueue;
  const logger = { debug() {}, info() {}, warn() {}, error() {} };
  return new RequestQueue({ maxInFlightRequests: null, requestTimeout: 30_000, enforceRequestTimeout: true, clientId: 'ferry', broker: 'b:9092', logger, isConnected: connected });
};
/** Timers that keep the process up now. */
const timers = () => process.getActiveResourcesInfo().filter((kind) => kind === 'Timeout').length;

test("kafkajs' request queue, patched, times a request in flight out at its deadline and holds no timer with none in flight (its own looked every 100 ms while the connection was open)", async () => {
  patchKafkajs();
  const queue = timedQueue();
  const before = timers();
  try {
    queue.scheduleRequestTimeoutCheck(); // what a connect does
    assert.equal(timers(), before, 'no timer with nothing in flight');
    const sent = Date.now();
    let timedOutAfter = -1;
    queue.inflight.set(7, {
      sentAt: sent,
      requestTimeout: 150,
      timeoutRequest: () => {
        timedOutAfter = Date.now() - sent;
        queue.inflight.delete(7);
      },
    });
    assert.equal(timers(), before + 1, 'a timer for the request in flight');
    await new Promise((resolve) => setTimeout(resolve, 400));
    assert.ok(timedOutAfter > 150 && timedOutAfter < 300, `timed out ${timedOutAfter} ms after it was sent (timeout 150 ms)`);
    assert.equal(timers(), before);
    // A response in time takes its timer with it.
    queue.inflight.set(8, { sentAt: Date.now(), requestTimeout: 30_000, timeoutRequest: () => assert.fail('not timed out') });
    queue.inflight.delete(8);
    assert.equal(timers(), before);
  } finally {
    queue.destroy();
  }
});

test("kafkajs' request queue, patched, times nothing out once the connection is destroyed, and again after the next connect", async () => {
  patchKafkajs();
  let connected = true;
  const queue = timedQueue(() => connected);
  const before = timers();
  try {
    queue.scheduleRequestTimeoutCheck();
    queue.destroy(); // what a disconnect does
    queue.inflight.set(1, { sentAt: Date.now() - 60_000, requestTimeout: 10, timeoutRequest: () => assert.fail('timed out after a destroy') });
    assert.equal(timers(), before);
    queue.inflight.clear();
    queue.scheduleRequestTimeoutCheck(); // the next connect
    let timedOut = 0;
    queue.inflight.set(2, { sentAt: Date.now(), requestTimeout: 20, timeoutRequest: () => void (timedOut += 1) });
    queue.inflight.set(3, { sentAt: Date.now(), requestTimeout: 60_000, timeoutRequest: () => assert.fail('not due') });
    await new Promise((resolve) => setTimeout(resolve, 150));
    assert.equal(timedOut, 1);
    // The connection lost meanwhile: after a timeout the queue's timers stop, as kafkajs' look did.
    connected = false;
    queue.inflight.set(4, { sentAt: Date.now(), requestTimeout: 20, timeoutRequest: () => void (timedOut += 1) });
    await new Promise((resolve) => setTimeout(resolve, 150));
    assert.equal(timedOut, 2);
    assert.equal(timers(), before, "request 3's timer went with the destroy");
  } finally {
    queue.destroy();
  }
});

const Long = require('kafkajs/src/utils/long.js');
const originalBatch = require('kafkajs/src/protocol/recordBatch/v0/index.js') as {
  RecordBatch: (input: RecordBatchInput) => Promise<{ buf: Buffer; offset: number; buffer: Buffer }>;
  MAGIC_BYTE: number;
};
const compression = require('kafkajs/src/protocol/message/compression/index.js');
const crc32cChecksum = require('kafkajs/src/protocol/recordBatch/crc32C/index.js') as (buffer: Buffer) => number;

test('records are encoded as kafkajs encodes them whatever their timestamps, keys and headers', () => {
  const inputs: RecordInput[] = [
    { key: 'k', value: Buffer.from('v'), timestampDelta: -1 },
    { key: 'k', value: Buffer.from('v'), timestampDelta: -(2 ** 45) - 7, offsetDelta: 2 ** 20 },
    { key: 'k', value: Buffer.from('v'), timestampDelta: 2 ** 53 + 2 }, // beyond the exact path: kafkajs' own
    { key: 'k', value: Buffer.from('v'), timestampDelta: Long.fromValue(-300) },
    { key: '12345', value: '3.5', headers: { 'ünï ✓': ['x', '', Buffer.from([0, 1])], n: '7' } },
    { value: Buffer.alloc(0x4000, 3), timestampDelta: 63, offsetDelta: 64 },
    { value: Buffer.alloc(1), timestampDelta: 64, offsetDelta: -65 },
  ];
  for (const input of inputs) assert.deepEqual(record(input).buffer, originalRecord(input).buffer, JSON.stringify(input.timestampDelta));
});

test('record batches are encoded byte for byte as kafkajs encodes them, compressed or not', async () => {
  const batch = recordBatchEncoder({
    Encoder,
    Long,
    crc32c: crc32cChecksum,
    lookupCodec: compression.lookupCodec,
    original: originalBatch.RecordBatch,
  });
  const messages = Array.from({ length: 40 }, (_, i) => ({
    key: i % 5 === 0 ? null : `device-${i}`,
    value: Buffer.from(JSON.stringify({ i, t: 'é'.repeat(i) })),
    headers: i % 2 === 0 ? { 'ferry-id': `id-${i}` } : {},
    timestampDelta: i * 3,
    offsetDelta: i,
  }));
  const inputs: RecordBatchInput[] = [
    { records: messages.map((m) => originalRecord(m)), firstTimestamp: 1_700_000_000_000, maxTimestamp: 1_700_000_000_117, lastOffsetDelta: 39 },
    { records: messages.map((m) => record(m)), firstTimestamp: 1_700_000_000_000, maxTimestamp: 1_700_000_000_117, lastOffsetDelta: 39 },
    {
      records: messages.slice(0, 3).map((m) => record(m)),
      firstOffset: Long.fromInt(5),
      producerId: Long.fromValue(123_456_789_012),
      producerEpoch: 2,
      firstSequence: 77,
      partitionLeaderEpoch: 4,
      transactional: true,
      firstTimestamp: 1,
      maxTimestamp: 2,
    },
    { records: messages.map((m) => record(m)), compression: compression.Types.GZIP, firstTimestamp: 10, maxTimestamp: 20, lastOffsetDelta: 39 },
    { records: [], firstTimestamp: 10, maxTimestamp: 10 },
  ];
  for (const [i, input] of inputs.entries())
    assert.deepEqual(((await batch(input)) as unknown as { buffer: Buffer }).buffer, (await originalBatch.RecordBatch(input)).buffer, `batch ${i}`);
});

test('produce requests and their frames are encoded byte for byte as kafkajs encodes them', async (t) => {
  const batchDeps = { Encoder, Long, crc32c: crc32cChecksum, lookupCodec: compression.lookupCodec, original: originalBatch.RecordBatch };
  const produce = produceRequestV3({ Encoder, Long, apiKey: 0, writeBatch: recordBatchWriter(batchDeps) });
  const frame = requestFrame(Encoder, originalFrame as never);
  const messages = (n: number, from: number) =>
    Array.from({ length: n }, (_, i) => ({
      key: i % 4 === 0 ? null : `device-${from + i}`,
      value: Buffer.from(`{"n":${from + i},"t":"${'ü'.repeat(i % 9)}"}`),
      headers: { 'ferry-id': `id-${from + i}`, 'mqtt-topic': `devices/d${i}/telemetry` },
      timestamp: String(1_700_000_000_000 + ((i * 37) % 11)),
    }));
  const inputs = [
    { acks: -1, timeout: 30_000, topicData: [{ topic: 'readings', partitions: [{ partition: 0, messages: messages(30, 0) }] }] },
    {
      acks: 1,
      timeout: 5_000,
      transactionalId: 'tx-é',
      producerId: Long.fromValue(7_000_000_000),
      producerEpoch: 3,
      compression: compression.Types.GZIP,
      topicData: [
        {
          topic: 'a',
          partitions: [
            { partition: 2, firstSequence: 100, messages: messages(5, 10) },
            { partition: 0, firstSequence: 4, messages: messages(1, 20) },
          ],
        },
        { topic: 'bb', partitions: [{ partition: 1, messages: messages(12, 30) }] },
      ],
    },
    { acks: 0, timeout: 1, topicData: [] },
  ];
  for (const [i, input] of inputs.entries()) {
    const ours = produce(input);
    const theirs = originalProduceV3(input);
    assert.equal(ours.expectResponse(), theirs.expectResponse());
    assert.deepEqual([ours.apiKey, ours.apiVersion, ours.apiName], [theirs.apiKey, theirs.apiVersion, 'Produce']);
    const framed = (await frame({ correlationId: 77 + i, clientId: i === 1 ? null : 'ferry', request: ours as never })) as unknown as { buffer: Buffer };
    const expected = await originalFrame({ correlationId: 77 + i, clientId: i === 1 ? null : 'ferry', request: theirs });
    assert.deepEqual(framed.buffer, expected.buffer, `request ${i}`);
  }
  // A codec kafkajs lacks fails as kafkajs fails it.
  const zstd = { ...inputs[0], compression: compression.Types.ZSTD } as (typeof inputs)[0];
  const ourError = await produce(zstd)
    .encode()
    .then(
      () => undefined,
      (error: Error) => error.message,
    );
  const theirError = await originalProduceV3(zstd)
    .encode()
    .then(
      () => undefined,
      (error: Error) => error.message,
    );
  assert.ok(theirError !== undefined);
  assert.equal(ourError, theirError);
  // Messages without a timestamp take the time of encoding, as kafkajs' do.
  t.mock.method(Date, 'now', () => 1_800_000_000_123);
  const untimed = { acks: -1, timeout: 30_000, topicData: [{ topic: 't', partitions: [{ partition: 0, messages: messages(3, 0).map(({ timestamp: _t, ...m }) => m) }] }] };
  assert.deepEqual(((await produce(untimed).encode()) as unknown as { buffer: Buffer }).buffer, (await originalProduceV3(untimed).encode()).buffer);
});
