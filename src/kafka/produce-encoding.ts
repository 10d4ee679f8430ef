// kafkajs 2.2.4's produce request (v3, which v4-v7 reuse) and request frame, written once into
// a buffer of their exact size. kafkajs copies each record batch into its partition's encoder,
// each partition into its topic's, each topic into the request's and the request into its frame,
// every encoder growing from 512 bytes by doubling: a batch of 500 records of 200 bytes was
// copied about eight times on its way to the socket. The output is byte for byte kafkajs' own
// (test/unit/kafka/kafkajs-patches.test.ts); kafkajs-patches.ts puts these in its module cache.
import { type BatchHeader, type EncoderShape, type KafkajsEncoderClass, encoderOf, isEncoder } from './record-encoding.ts';

interface LongClass {
  fromInt(value: number): unknown;
}

interface ProduceMessage {
  readonly key?: unknown;
  readonly value?: unknown;
  readonly headers?: Readonly<Record<string, unknown>>;
  readonly timestamp?: unknown;
}

interface PartitionData {
  readonly partition: number;
  readonly messages: readonly ProduceMessage[];
  readonly firstSequence?: number;
}

interface TopicData {
  readonly topic: string;
  readonly partitions: readonly PartitionData[];
}

export interface ProduceRequestInput {
  readonly acks: number;
  readonly timeout: number;
  readonly transactionalId?: string | null;
  readonly producerId?: unknown;
  readonly producerEpoch?: number;
  readonly compression?: number;
  readonly topicData: readonly TopicData[];
}

export interface ProduceRequest {
  readonly apiKey: number;
  readonly apiVersion: number;
  readonly apiName: string;
  expectResponse(): boolean;
  encode(): Promise<EncoderShape>;
}

export interface ProduceDeps {
  readonly Encoder: KafkajsEncoderClass;
  readonly Long: LongClass;
  /** kafkajs' API key of Produce. */
  readonly apiKey: number;
  /** A record batch written straight from its messages (recordBatchWriter). */
  readonly writeBatch: (header: BatchHeader, messages: readonly ProduceMessage[], deltas: readonly unknown[]) => Promise<EncoderShape>;
}

/** kafkajs' STRING: an int16 length (-1 for null), then UTF-8. */
const stringSize = (value: string | null | undefined): number => 2 + (value == null ? 0 : Buffer.byteLength(value, 'utf8'));

function writeString(buf: Buffer, at: number, value: string | null | undefined): number {
  if (value == null) return buf.writeInt16BE(-1, at);
  const length = Buffer.byteLength(value, 'utf8');
  const next = buf.writeInt16BE(length, at);
  return next + buf.write(value, next, length, 'utf8');
}

/** The replacement of kafkajs' protocol/requests/produce/v3/request.js. */
export function produceRequestV3(deps: ProduceDeps): (input: ProduceRequestInput) => ProduceRequest {
  const { Encoder, Long, apiKey, writeBatch } = deps;
  /** A partition's record batch, as kafkajs' partitionsEncoder makes it. */
  const encodeBatch = (compression: number, data: PartitionData, transactionalId: string | null, producerId: unknown, producerEpoch: number) => {
    const { messages, firstSequence } = data;
    const dateNow = Date.now();
    // As kafkajs sorts them (as strings): its first and last timestamps are the batch's.
    const messageTimestamps = messages
      .map((m) => m.timestamp)
      .filter((timestamp) => timestamp != null)
      .sort();
    const timestamps = messageTimestamps.length === 0 ? [dateNow] : messageTimestamps;
    const firstTimestamp = timestamps[0] as number;
    const maxTimestamp = timestamps[timestamps.length - 1];
    const deltas = new Array<number>(messages.length);
    for (let i = 0; i < messages.length; i++) deltas[i] = (((messages[i] as ProduceMessage).timestamp || dateNow) as number) - firstTimestamp;
    return writeBatch(
      {
        compression,
        firstTimestamp,
        maxTimestamp,
        producerId,
        producerEpoch,
        ...(firstSequence === undefined ? {} : { firstSequence }),
        transactional: !!transactionalId,
        lastOffsetDelta: messages.length - 1,
      },
      messages,
      deltas,
    );
  };
  return ({ acks, timeout, transactionalId = null, producerId = Long.fromInt(-1), producerEpoch = 0, compression = 0, topicData }) => ({
    apiKey,
    apiVersion: 3,
    apiName: 'Produce',
    expectResponse: () => acks !== 0,
    encode: async () => {
      // transactional_id acks timeout [topic [partition record_set]], each record_set an int32 size and its batch.
      let size = stringSize(transactionalId) + 2 + 4 + 4;
      const topics: { readonly topic: string; readonly partitions: { readonly partition: number; readonly batch: EncoderShape }[] }[] = [];
      for (const { topic, partitions } of topicData) {
        const encoded: { readonly partition: number; readonly batch: EncoderShape }[] = [];
        size += stringSize(topic) + 4;
        for (const data of partitions) {
          const batch = await encodeBatch(compression, data, transactionalId, producerId, producerEpoch);
          encoded.push({ partition: data.partition, batch });
          size += 4 + 4 + batch.offset;
        }
        topics.push({ topic, partitions: encoded });
      }
      const buf = Buffer.allocUnsafe(size);
      let at = writeString(buf, 0, transactionalId);
      at = buf.writeInt16BE(acks, at);
      at = buf.writeInt32BE(timeout, at);
      at = buf.writeInt32BE(topics.length, at);
      for (const { topic, partitions } of topics) {
        at = writeString(buf, at, topic);
        at = buf.writeInt32BE(partitions.length, at);
        for (const { partition, batch } of partitions) {
          at = buf.writeInt32BE(partition, at);
          at = buf.writeInt32BE(batch.offset, at);
          at += batch.buf.copy(buf, at, 0, batch.offset);
        }
      }
      return encoderOf(Encoder, buf);
    },
  });
}

interface FrameInput {
  readonly correlationId: number;
  readonly clientId: string | null;
  readonly request: { readonly apiKey: number; readonly apiVersion: number; encode(): Promise<unknown> };
}

/** The replacement of kafkajs' protocol/request.js: a request's size, header and payload in one buffer. */
export function requestFrame(Encoder: KafkajsEncoderClass, original: (input: FrameInput) => Promise<EncoderShape>): (input: FrameInput) => Promise<EncoderShape> {
  return async (input) => {
    const { correlationId, clientId, request } = input;
    const payload = await request.encode();
    // kafkajs' own for a payload that is not an encoder (it throws): encoded a second time there.
    if (!isEncoder(payload)) return original(input);
    const size = 2 + 2 + 4 + stringSize(clientId) + payload.offset;
    const buf = Buffer.allocUnsafe(4 + size);
    let at = buf.writeInt32BE(size, 0);
    at = buf.writeInt16BE(request.apiKey, at);
    at = buf.writeInt16BE(request.apiVersion, at);
    at = buf.writeInt32BE(correlationId, at);
    at = writeString(buf, at, clientId);
    payload.buf.copy(buf, at, 0, payload.offset);
    return encoderOf(Encoder, buf);
  };
}
