// Internals of kafkajs 2.2.4 (its last release) that cost the gateway CPU at tens of thousands
// of records per second, per byte of large payloads, or while idle, replaced before kafkajs loads
// them with functions that return exactly what the originals return (test/unit/kafka/kafkajs-patches.test.ts
// compares the encoders byte for byte, and the request queue against what it must do):
//   - producer/groupMessagesPerPartition copied the partition's array once per message
//     (`[...current, message]`): quadratic in the batch size, ~3% of the gateway's CPU at
//     batches of 500; only kafkajs' sendMessages called it, and its replacement below groups in
//     one pass (send-messages.ts groupMessagesPerPartition);
//   - protocol/recordBatch/record/v0 and protocol/recordBatch/v0 write each varint through a
//     new array and buffer, each varlong through BigInt-backed Longs, each record into a
//     zero-filled 512-byte buffer (and another per header), and copy a batch's records three
//     times on the way to its frame: each record and each batch is now written once, into a
//     buffer of its exact size (record-encoding.ts);
//   - protocol/requests/produce/v3 (which v4-v7 reuse) and protocol/request copy each batch
//     through its partition's, topic's, request's and frame's encoders, each growing from 512
//     bytes by doubling: the request and its frame are written once too (produce-encoding.ts);
//   - protocol/recordBatch/crc32C checksums each record batch a byte at a time in JavaScript
//     (~2.4 ms per MiB here, 6.5% of the gateway's CPU with 16 KiB payloads): @node-rs/crc32's
//     native CRC32C (~0.17 ms per MiB) where its binary loads, kafkajs' own elsewhere;
//   - protocol/encoder grows its buffer with Buffer.alloc, zero-filling every byte it is about to
//     overwrite (each batch is copied through four encoders on its way out): it grows with
//     Buffer.allocUnsafe, as every method writes each byte up to the offset it moves to, and
//     `buffer` never shows more;
//   - network/requestQueue checks for pending requests in a timer that, with none pending, sets
//     itself again at once, for as long as a connection is open (kafkajs issues 1556 and 1704):
//     with the handler bridges' nudge (since slowed too), an idle gateway with Kafka bridges was
//     woken about 890 times a second and used 54-61 ms of CPU a second. The check is now
//     scheduled only while requests are pending, as in the fix proposed upstream (pull request
//     1667); a method of the class's prototype, it is replaced even if kafkajs loaded before.
//     Each connection also looked for timed-out requests every 100 ms for as long as it was open,
//     ten wake-ups a second (a consumer always has a fetch out): each request in flight now has a
//     timer at its deadline instead (scheduleRequestTimeoutCheck and destroy).
//   - cluster/brokerPool's refreshMetadataIfNecessary (before every send) and cluster's
//     findTopicPartitionMetadata (for each topic of a send) looked topics up through the whole
//     cached metadata, up to T×T name comparisons a send with T topics known: by an index now
//     (topic-metadata.ts); methods of prototypes, replaced even if kafkajs loaded before.
// If kafkajs was loaded before (by another part of the process), the other originals stay in
// use: slower, never wrong, but for producer/sendMessages below. Ferry loads kafkajs in client.ts
// alone, after patchKafkajs.
// Three fixes of behaviour: consumer/consumerGroup's recoverFromOffsetOutOfRange, see
// readFromEarliestWhenOutOfRange; the produce response of Ferry's requests, which resolves
// with the partitions Kafka refused records of (and, for a producer without idempotence, those
// it failed with a retriable error) rather than throwing for the whole request, see
// returningRecordRefusals (a `protocol` read at each request, replaced even if kafkajs loaded
// before); and producer/sendMessages, which a retry after a leader moved resolved without sending
// some partitions' records again (kafkajs issue 1303), see send-messages.ts (bound by
// producer/messageProducer at its load).
import { createRequire } from 'node:module';
import { type KafkajsEncoderClass, type RecordBatchDeps, recordBatchEncoder, recordBatchWriter, recordEncoder } from './record-encoding.ts';
import { produceRequestV3, requestFrame } from './produce-encoding.ts';
import { findTopicPartitionMetadata, refreshMetadataIfNecessary } from './topic-metadata.ts';
import { returningRecordRefusals } from './produce-refusals.ts';
import { type SendMessagesDeps, sendMessages } from './send-messages.ts';

export type { RecordBatchInput, RecordInput } from './record-encoding.ts';
export { recordBatchEncoder, recordBatchWriter, recordEncoder } from './record-encoding.ts';
export { produceRequestV3, requestFrame } from './produce-encoding.ts';

const require = createRequire(import.meta.url);

const RECORD = 'kafkajs/src/protocol/recordBatch/record/v0/index.js';
const CRC32C = 'kafkajs/src/protocol/recordBatch/crc32C/crc32C.js';
const ENCODER = 'kafkajs/src/protocol/encoder.js';
const CRC32C_CHECKSUM = 'kafkajs/src/protocol/recordBatch/crc32C/index.js';
const RECORD_BATCH = 'kafkajs/src/protocol/recordBatch/v0/index.js';
const LONG = 'kafkajs/src/utils/long.js';
const COMPRESSION = 'kafkajs/src/protocol/message/compression/index.js';
const PRODUCE_V3 = 'kafkajs/src/protocol/requests/produce/v3/request.js';
const REQUEST = 'kafkajs/src/protocol/request.js';
const API_KEYS = 'kafkajs/src/protocol/requests/apiKeys.js';
const REQUEST_QUEUE = 'kafkajs/src/network/requestQueue/index.js';
const CONSUMER_GROUP = 'kafkajs/src/consumer/consumerGroup.js';
const CLUSTER = 'kafkajs/src/cluster/index.js';
const BROKER_POOL = 'kafkajs/src/cluster/brokerPool.js';
const PRODUCE = 'kafkajs/src/protocol/requests/produce/index.js';
const ERROR = 'kafkajs/src/protocol/error.js';
const SEND_MESSAGES = 'kafkajs/src/producer/sendMessages.js';
const MESSAGE_PRODUCER = 'kafkajs/src/producer/messageProducer.js';
const ERRORS = 'kafkajs/src/errors.js';

/** kafkajs' wait before it looks at pending requests again when it is not throttled (its CHECK_PENDING_REQUESTS_INTERVAL). */
const CHECK_PENDING_MS = 10;

/** What scheduleCheckPendingRequests uses of kafkajs' RequestQueue. */
export interface RequestQueueState {
  readonly pending: readonly unknown[];
  readonly throttledUntil: number;
  throttleCheckTimeoutId: NodeJS.Timeout | null;
  checkPendingRequests(): void;
}

/**
 * kafkajs' RequestQueue.scheduleCheckPendingRequests, without the idle loop: with nothing pending
 * there is nothing to check (a request pushed later is sent at once or schedules its own check,
 * and a response checks the queue itself); with requests pending, a check when the throttle ends,
 * or in 10 ms, as kafkajs does.
 */
export function scheduleCheckPendingRequests(this: RequestQueueState): void {
  if (this.pending.length === 0 || this.throttleCheckTimeoutId) return;
  const wait = this.throttledUntil - Date.now();
  this.throttleCheckTimeoutId = setTimeout(
    () => {
      this.throttleCheckTimeoutId = null;
      this.checkPendingRequests();
    },
    wait > 0 ? wait : CHECK_PENDING_MS,
  );
}

/** A request in flight, as kafkajs' SocketRequest has it (`sentAt` is set just after it goes in flight). */
interface InFlight {
  readonly sentAt: number | null;
  readonly requestTimeout: number;
  timeoutRequest(): void;
  [DEADLINE]?: NodeJS.Timeout | undefined;
}

/** What the request timeout uses of kafkajs' RequestQueue. */
export interface RequestTimeoutState {
  readonly enforceRequestTimeout: boolean;
  readonly inflight: Map<number, InFlight>;
  isConnected(): boolean;
  destroy(): void;
  /** Set while the connection is open and the timeout enforced. */
  [ENFORCED]?: boolean;
}

const DEADLINE = Symbol('ferry.requestDeadline');
const ENFORCED = Symbol('ferry.requestTimeoutEnforced');

/**
 * kafkajs' RequestQueue.scheduleRequestTimeoutCheck (called when the connection opens), which
 * looked every 100 ms for requests in flight past their timeout until the connection closed: a
 * consumer always has a fetch out, so its connection woke the process ten times a second even
 * with nothing to read. Each request in flight now has a timer at its deadline instead, cleared
 * when it leaves (`inflight` is the queue's record of them); a request past its deadline is timed
 * out as kafkajs does, then, as its look did, the queue's timers stop if the connection is gone.
 */
export function scheduleRequestTimeoutCheck(this: RequestTimeoutState): void {
  if (!this.enforceRequestTimeout) return;
  this.destroy();
  this[ENFORCED] = true;
  const { inflight } = this;
  if (inflight.set === Map.prototype.set) {
    inflight.set = (correlationId, request) => {
      Map.prototype.set.call(inflight, correlationId, request);
      if (this[ENFORCED] === true) armDeadline(this, correlationId, request);
      return inflight;
    };
    inflight.delete = (correlationId) => {
      clearTimeout(inflight.get(correlationId)?.[DEADLINE]);
      return Map.prototype.delete.call(inflight, correlationId);
    };
    inflight.clear = () => {
      clearDeadlines(inflight);
      Map.prototype.clear.call(inflight);
    };
  }
  for (const [correlationId, request] of inflight) armDeadline(this, correlationId, request);
}

/** How long before `request` is past its timeout (kafkajs': more than `requestTimeout` ms after it was sent); negative once it is. */
const timeLeft = (request: InFlight): number => (request.sentAt ?? Date.now()) + request.requestTimeout - Date.now();

/** A timer for when `request` is past its timeout: a request in flight from before is looked at as soon as it is. */
function armDeadline(queue: RequestTimeoutState, correlationId: number, request: InFlight): void {
  clearTimeout(request[DEADLINE]);
  request[DEADLINE] = setTimeout(
    () => {
      request[DEADLINE] = undefined;
      if (queue.inflight.get(correlationId) !== request) return;
      if (timeLeft(request) >= 0) {
        armDeadline(queue, correlationId, request);
        return;
      }
      request.timeoutRequest();
      if (!queue.isConnected()) queue.destroy();
    },
    Math.max(0, timeLeft(request)) + 1,
  );
}

function clearDeadlines(inflight: Map<number, InFlight>): void {
  for (const request of inflight.values()) {
    clearTimeout(request[DEADLINE]);
    request[DEADLINE] = undefined;
  }
}

/** kafkajs' RequestQueue.destroy (on a disconnect), and no request timeouts until the next connect. */
export function destroyRequestQueue(original: (this: RequestTimeoutState) => void): (this: RequestTimeoutState) => void {
  return function destroy(this: RequestTimeoutState): void {
    this[ENFORCED] = false;
    clearDeadlines(this.inflight);
    original.call(this);
  };
}

interface GrowingEncoder {
  buf: Buffer;
  offset: number;
}

/** @node-rs/crc32's CRC32C (unsigned, as kafkajs' own returns it), or undefined where its native binary does not load. */
export function nativeCrc32c(): ((buffer: Buffer) => number) | undefined {
  try {
    const { crc32c } = require('@node-rs/crc32') as { crc32c(input: Buffer): number };
    return (buffer) => crc32c(buffer);
  } catch {
    return undefined;
  }
}

/** kafkajs' Encoder.ensureAvailable, growing to the same power of two without zero-filling. */
export function ensureAvailableUnfilled(nextPowerOfTwo: (value: number) => number): (this: GrowingEncoder, length: number) => void {
  return function ensureAvailable(this: GrowingEncoder, length: number): void {
    if (this.offset + length <= this.buf.length) return;
    const grown = Buffer.allocUnsafe(nextPowerOfTwo(this.offset + length));
    this.buf.copy(grown, 0, 0, this.offset);
    this.buf = grown;
  };
}

/** What readFromEarliestWhenOutOfRange uses of kafkajs' ConsumerGroup. */
interface OutOfRangeGroup {
  readonly preferredReadReplicasPerTopicPartition: Record<string, Record<number, unknown> | undefined>;
  readonly cluster: {
    fetchTopicsOffset(
      topics: { topic: string; fromBeginning: boolean; partitions: { partition: number }[] }[],
    ): Promise<{ topic: string; partitions: { partition: number; offset: string }[] }[]>;
  };
  readonly offsetManager: {
    readonly groupId: string;
    readonly memberId: string;
    readonly generationId: number;
    getCoordinator(): Promise<{ offsetCommit(request: object): Promise<unknown> }>;
    clearOffsets(topicPartition: { topic: string; partition: number }): void;
  };
  readonly logger: { warn(message: string, extra: object): void };
}

type OutOfRange = { readonly topic: string; readonly partition: number };

/**
 * kafkajs' ConsumerGroup.recoverFromOffsetOutOfRange, resetting to the earliest offset Kafka
 * still has rather than to `fromBeginning`'s: a group's committed offset is out of range when
 * retention deleted the records up to it (a gateway offline longer than the topic's retention),
 * and kafkajs then reset a consumer without `fromBeginning` to the end of the partition, skipping
 * every record still retained after the deleted ones, unread. `fromBeginning` is for a group
 * without a committed offset. The offset is committed as a number: kafkajs reads a committed -2
 * ("earliest") with `fromBeginning` again.
 */
export function readFromEarliestWhenOutOfRange(original: (this: OutOfRangeGroup, e: OutOfRange) => Promise<void>) {
  return async function recoverFromOffsetOutOfRange(this: OutOfRangeGroup, e: OutOfRange): Promise<void> {
    // A follower out of range: kafkajs tries the leader first.
    if (typeof this.preferredReadReplicasPerTopicPartition[e.topic]?.[e.partition] === 'number') return original.call(this, e);
    const { topic, partition } = e;
    const [found] = await this.cluster.fetchTopicsOffset([{ topic, fromBeginning: true, partitions: [{ partition }] }]);
    const offset = found?.partitions.find((p) => p.partition === partition)?.offset;
    if (offset === undefined) return original.call(this, e);
    this.logger.warn('Offset out of range (retention deleted the records up to the committed offset): reading from the earliest offset Kafka has', { topic, partition, offset });
    const manager = this.offsetManager;
    const coordinator = await manager.getCoordinator();
    await coordinator.offsetCommit({
      groupId: manager.groupId,
      memberId: manager.memberId,
      groupGenerationId: manager.generationId,
      topics: [{ topic, partitions: [{ partition, offset }] }],
    });
    manager.clearOffsets({ topic, partition });
  };
}

let applied = false;
/** kafkajs' producer was loaded before patchKafkajs: it keeps kafkajs' own sendMessages. */
let producerLoadedBefore = false;

/**
 * False when kafkajs' producer had been loaded (by another part of the process) before
 * patchKafkajs: its producers then send with kafkajs' own producer/sendMessages, whose retry
 * after a leader moved can resolve without having written some records (kafkajs issue 1303).
 */
export function sendMessagesReplaced(): boolean {
  return applied && !producerLoadedBefore;
}

/** Puts the replacements in Node's module cache, where kafkajs' own requires find them. Idempotent. */
export function patchKafkajs(): void {
  if (applied) return;
  applied = true;
  producerLoadedBefore = require.cache[require.resolve(MESSAGE_PRODUCER)] !== undefined;
  const replace = (id: string, exports: unknown) => {
    const path = require.resolve(id);
    require(path);
    const cached = require.cache[path];
    if (cached !== undefined) cached.exports = exports;
  };
  const Encoder = require(ENCODER) as KafkajsEncoderClass & { nextPowerOfTwo(value: number): number; prototype: { ensureAvailable: unknown } };
  Encoder.prototype.ensureAvailable = ensureAvailableUnfilled((value) => Encoder.nextPowerOfTwo(value));
  const { KafkaJSMetadataNotLoaded } = require(ERRORS) as Pick<SendMessagesDeps, 'KafkaJSMetadataNotLoaded'>;
  const { staleMetadata } = require(ERROR) as Pick<SendMessagesDeps, 'staleMetadata'>;
  replace(SEND_MESSAGES, sendMessages({ KafkaJSMetadataNotLoaded, staleMetadata }));
  replace(RECORD, recordEncoder(Encoder));
  const crc32c = nativeCrc32c();
  // Before the record batch loads the checksum's wrapper, which binds this at its load.
  if (crc32c !== undefined) replace(CRC32C, crc32c);
  const batch = require(RECORD_BATCH) as { RecordBatch: RecordBatchDeps['original'] };
  const { lookupCodec } = require(COMPRESSION) as { lookupCodec: RecordBatchDeps['lookupCodec'] };
  const Long = require(LONG) as RecordBatchDeps['Long'];
  const batchDeps: RecordBatchDeps = { Encoder, Long, crc32c: require(CRC32C_CHECKSUM) as RecordBatchDeps['crc32c'], lookupCodec, original: batch.RecordBatch };
  replace(RECORD_BATCH, { ...batch, RecordBatch: recordBatchEncoder(batchDeps) });
  const { Produce: apiKey } = require(API_KEYS) as { Produce: number };
  replace(PRODUCE_V3, produceRequestV3({ Encoder, Long, apiKey, writeBatch: recordBatchWriter(batchDeps) }));
  replace(REQUEST, requestFrame(Encoder, require(REQUEST) as Parameters<typeof requestFrame>[1]));
  const RequestQueue = require(REQUEST_QUEUE) as {
    prototype: { scheduleCheckPendingRequests: unknown; scheduleRequestTimeoutCheck: unknown; destroy: (this: RequestTimeoutState) => void };
  };
  const { prototype: group } = require(CONSUMER_GROUP) as { prototype: { recoverFromOffsetOutOfRange: Parameters<typeof readFromEarliestWhenOutOfRange>[0] } };
  group.recoverFromOffsetOutOfRange = readFromEarliestWhenOutOfRange(group.recoverFromOffsetOutOfRange);
  RequestQueue.prototype.scheduleCheckPendingRequests = scheduleCheckPendingRequests;
  const { prototype: pool } = require(BROKER_POOL) as { prototype: { refreshMetadataIfNecessary: Parameters<typeof refreshMetadataIfNecessary>[0] } };
  pool.refreshMetadataIfNecessary = refreshMetadataIfNecessary(pool.refreshMetadataIfNecessary);
  const { prototype: cluster } = require(CLUSTER) as { prototype: { findTopicPartitionMetadata: Parameters<typeof findTopicPartitionMetadata>[0] } };
  cluster.findTopicPartitionMetadata = findTopicPartitionMetadata(cluster.findTopicPartitionMetadata);
  const produce = require(PRODUCE) as { protocol: Parameters<typeof returningRecordRefusals>[0] };
  produce.protocol = returningRecordRefusals(produce.protocol, (require(ERROR) as { createErrorFromCode(code: number): Error }).createErrorFromCode);
  if (RequestQueue.prototype.scheduleRequestTimeoutCheck !== scheduleRequestTimeoutCheck) {
    RequestQueue.prototype.scheduleRequestTimeoutCheck = scheduleRequestTimeoutCheck;
    RequestQueue.prototype.destroy = destroyRequestQueue(RequestQueue.prototype.destroy);
  }
}
