// kafkajs 2.2.4's encoding of produced records, each record and each batch written once into a
// buffer of its exact size. kafkajs writes every varint through a new array and Buffer.from,
// every varlong through a dozen BigInt-backed Longs, each record into a zero-filled 512-byte
// encoder, and then copies a batch's records into a body, the body into the batch and the batch
// into its frame, each growing by powers of two: a sixth of the gateway's CPU end to end
// (docs/benchmarks.md). The producer's batches are written straight from their messages
// (recordBatchWriter): each record sized, then written in its place in the batch. The output
// is byte for byte kafkajs' own (test/unit/kafka/kafkajs-patches.test.ts); kafkajs-patches.ts
// puts these in its module cache.

import { NO_HEADERS } from '../core/envelope.ts';

/** kafkajs' Encoder as these functions use it: `buf` holds the bytes up to `offset`. */
export interface EncoderShape {
  buf: Buffer;
  offset: number;
}

interface KafkajsEncoder extends EncoderShape {
  writeVarLong(value: unknown): unknown;
}

export interface KafkajsEncoderClass {
  new (initialSize?: number): KafkajsEncoder;
  sizeOfVarLong(value: unknown): number;
  prototype: object;
}

export interface RecordInput {
  readonly offsetDelta?: number;
  readonly timestampDelta?: unknown;
  readonly key?: unknown;
  readonly value?: unknown;
  readonly headers?: Readonly<Record<string, unknown>>;
}

export interface RecordBatchInput {
  readonly compression?: number;
  readonly firstOffset?: unknown;
  readonly firstTimestamp?: unknown;
  readonly maxTimestamp?: unknown;
  readonly partitionLeaderEpoch?: number;
  readonly lastOffsetDelta?: number;
  readonly transactional?: boolean;
  readonly producerId?: unknown;
  readonly producerEpoch?: number;
  readonly firstSequence?: number;
  readonly records?: readonly unknown[];
}

interface LongClass {
  fromValue(value: unknown): { getHighBits(): number; getLowBits(): number };
  fromInt(value: number): unknown;
}

interface Codec {
  compress(encoder: EncoderShape & { readonly buffer: Buffer }): Promise<Buffer>;
}

export interface RecordBatchDeps {
  readonly Encoder: KafkajsEncoderClass;
  readonly Long: LongClass;
  readonly crc32c: (buffer: Buffer) => number;
  readonly lookupCodec: (compression: number) => Codec | null;
  /** kafkajs' own RecordBatch, for records that are not encoders (never from its producer). */
  readonly original: (input: RecordBatchInput) => Promise<EncoderShape>;
}

const MAGIC_BYTE = 2;
const COMPRESSION_CODEC_MASK = 0x07;
const TRANSACTIONAL_MASK = 16;
/** A varlong is written from a number below this in magnitude (its zigzag stays exact); Longs and larger go through kafkajs. */
const EXACT_VARLONG = 2 ** 52;

/** kafkajs' zigzag of a 32-bit varint, as an unsigned 32-bit number. */
const zigzag = (value: number): number => ((value << 1) ^ (value >> 31)) >>> 0;

function varIntSize(value: number): number {
  let v = zigzag(value);
  let size = 1;
  while (v >= 0x80) {
    size += 1;
    v >>>= 7;
  }
  return size;
}

function writeVarInt(buf: Buffer, at: number, value: number): number {
  let v = zigzag(value);
  while (v >= 0x80) {
    buf[at++] = (v & 0x7f) | 0x80;
    v >>>= 7;
  }
  buf[at++] = v;
  return at;
}

const exactVarLong = (value: unknown): value is number => typeof value === 'number' && Number.isInteger(value) && Math.abs(value) < EXACT_VARLONG;

function varLongSize(Encoder: KafkajsEncoderClass, value: unknown): number {
  if (!exactVarLong(value)) return Encoder.sizeOfVarLong(value);
  let v = value >= 0 ? value * 2 : -value * 2 - 1;
  let size = 1;
  while (v >= 0x80) {
    size += 1;
    v = Math.floor(v / 0x80);
  }
  return size;
}

function writeVarLong(Encoder: KafkajsEncoderClass, buf: Buffer, at: number, value: unknown): number {
  if (!exactVarLong(value)) {
    const encoder = new Encoder(16);
    encoder.writeVarLong(value);
    encoder.buf.copy(buf, at, 0, encoder.offset);
    return at + encoder.offset;
  }
  let v = value >= 0 ? value * 2 : -value * 2 - 1;
  while (v >= 0x80) {
    buf[at++] = (v % 0x80) | 0x80;
    v = Math.floor(v / 0x80);
  }
  buf[at++] = v;
  return at;
}

/**
 * kafkajs' varint-prefixed bytes: null as -1, a Buffer as is, anything else as its string in
 * UTF-8. Sized, then written: no object per field (a record has six or more of them).
 */
function bytesSize(value: unknown): number {
  if (value == null) return 1;
  const length = Buffer.isBuffer(value) ? value.length : Buffer.byteLength(String(value), 'utf8');
  return varIntSize(length) + length;
}

function writeBytes(buf: Buffer, at: number, value: unknown): number {
  if (value == null) return writeVarInt(buf, at, -1);
  if (Buffer.isBuffer(value)) {
    const next = writeVarInt(buf, at, value.length);
    return next + value.copy(buf, next);
  }
  const text = String(value);
  const length = Buffer.byteLength(text, 'utf8');
  const next = writeVarInt(buf, at, length);
  return next + buf.write(text, next, length, 'utf8');
}

/** An encoder of kafkajs' class holding exactly `buf`. */
export function encoderOf(Encoder: KafkajsEncoderClass, buf: Buffer): EncoderShape {
  const encoder = Object.create(Encoder.prototype) as EncoderShape;
  encoder.buf = buf;
  encoder.offset = buf.length;
  return encoder;
}

/** The fields of one record: what kafkajs' Record v0 takes, without the defaults applied. */
interface RecordFields {
  readonly key?: unknown;
  readonly value?: unknown;
  readonly headers?: Readonly<Record<string, unknown>> | undefined;
}

/** The size of a record's headers: their count's varint and each name and value. */
function headersSize(headers: Readonly<Record<string, unknown>>): number {
  let count = 0;
  let size = 0;
  for (const name in headers) {
    if (!Object.hasOwn(headers, name)) continue; // kafkajs takes Object.keys: own names only
    const given = headers[name];
    const nameSize = bytesSize(name);
    if (Array.isArray(given)) {
      for (const v of given as unknown[]) size += nameSize + bytesSize(v);
      count += given.length;
    } else {
      size += nameSize + bytesSize(given);
      count += 1;
    }
  }
  return size + varIntSize(count);
}

function writeHeaders(buf: Buffer, at: number, headers: Readonly<Record<string, unknown>>): number {
  let count = 0;
  for (const name in headers) {
    if (!Object.hasOwn(headers, name)) continue;
    const given = headers[name];
    count += Array.isArray(given) ? given.length : 1;
  }
  let next = writeVarInt(buf, at, count);
  for (const name in headers) {
    if (!Object.hasOwn(headers, name)) continue;
    const given = headers[name];
    if (Array.isArray(given)) for (const v of given as unknown[]) next = writeBytes(buf, writeBytes(buf, next, name), v);
    else next = writeBytes(buf, writeBytes(buf, next, name), given);
  }
  return next;
}

/** The length of a record's body (all but the varint of that length, which comes first). */
export function recordBodySize(Encoder: KafkajsEncoderClass, fields: RecordFields, offsetDelta: number, timestampDelta: unknown): number {
  return 1 + varLongSize(Encoder, timestampDelta) + varIntSize(offsetDelta) + bytesSize(fields.key) + bytesSize(fields.value) + headersSize(fields.headers ?? NO_HEADERS);
}

/** Writes a record of body length `body` (recordBodySize) at `at`; returns where it ends. */
export function writeRecord(Encoder: KafkajsEncoderClass, buf: Buffer, at: number, fields: RecordFields, offsetDelta: number, timestampDelta: unknown, body: number): number {
  let next = writeVarInt(buf, at, body);
  buf[next++] = 0; // attributes: none used
  next = writeVarLong(Encoder, buf, next, timestampDelta);
  next = writeVarInt(buf, next, offsetDelta);
  next = writeBytes(buf, next, fields.key);
  next = writeBytes(buf, next, fields.value);
  return writeHeaders(buf, next, fields.headers ?? NO_HEADERS);
}

/** The replacement of kafkajs' Record v0 encoder (protocol/recordBatch/record/v0). */
export function recordEncoder(Encoder: KafkajsEncoderClass): (input: RecordInput) => EncoderShape {
  return (input) => {
    const { offsetDelta = 0, timestampDelta = 0 } = input;
    const body = recordBodySize(Encoder, input, offsetDelta, timestampDelta);
    const buf = Buffer.allocUnsafe(varIntSize(body) + body);
    writeRecord(Encoder, buf, 0, input, offsetDelta, timestampDelta, body);
    return encoderOf(Encoder, buf);
  };
}

/** Whether `record` has the fields of kafkajs' Encoder that these functions use. */
export const isEncoder = (record: unknown): record is EncoderShape =>
  typeof record === 'object' && record !== null && Buffer.isBuffer((record as EncoderShape).buf) && typeof (record as EncoderShape).offset === 'number';

function writeInt64(Long: LongClass, buf: Buffer, at: number, value: unknown): number {
  const long = Long.fromValue(value);
  buf.writeInt32BE(long.getHighBits(), at);
  buf.writeInt32BE(long.getLowBits(), at + 4);
  return at + 8;
}

/** A record batch's fields but its records: what kafkajs' RecordBatch takes besides them. */
export type BatchHeader = Omit<RecordBatchInput, 'records'>;

/**
 * A record batch of `count` records whose bytes (`recordsSize` of them) `fill` writes into a
 * buffer at an offset: after the batch's header, or into the buffer that is compressed. Undefined
 * for a codec kafkajs lacks (the caller then goes through kafkajs' own, for its error).
 */
async function writeBatch(
  deps: RecordBatchDeps,
  header: BatchHeader,
  count: number,
  recordsSize: number,
  fill: (buf: Buffer, at: number) => void,
): Promise<EncoderShape | undefined> {
  const { Encoder, Long, crc32c, lookupCodec } = deps;
  const {
    compression = 0,
    firstOffset = Long.fromInt(0),
    firstTimestamp = Date.now(),
    maxTimestamp = Date.now(),
    partitionLeaderEpoch = 0,
    lastOffsetDelta = 0,
    transactional = false,
    producerId = Long.fromValue(-1),
    producerEpoch = 0,
    firstSequence = 0,
  } = header;
  const codec = compression & COMPRESSION_CODEC_MASK;
  let compressed: Buffer | undefined;
  if (codec !== 0) {
    const found = lookupCodec(compression);
    if (found === null) return undefined;
    const joined = Buffer.allocUnsafe(recordsSize);
    fill(joined, 0);
    // Its class's `buffer` getter shows the joined records.
    compressed = await found.compress(encoderOf(Encoder, joined) as EncoderShape & { readonly buffer: Buffer });
  }
  // FirstOffset int64, Length int32, PartitionLeaderEpoch int32, Magic int8, CRC uint32, then
  // the checksummed body: Attributes int16, LastOffsetDelta int32, FirstTimestamp, MaxTimestamp,
  // ProducerId int64, ProducerEpoch int16, FirstSequence int32, the record count int32, records.
  const bodyStart = 8 + 4 + 4 + 1 + 4;
  const total = bodyStart + 2 + 4 + 8 + 8 + 8 + 2 + 4 + 4 + (compressed?.length ?? recordsSize);
  const buf = Buffer.allocUnsafe(total);
  let at = writeInt64(Long, buf, 0, firstOffset);
  at = buf.writeInt32BE(total - 12, at);
  at = buf.writeInt32BE(partitionLeaderEpoch, at);
  at = buf.writeInt8(MAGIC_BYTE, at);
  at += 4; // the CRC, once the body is written
  at = buf.writeInt16BE(codec | (transactional ? TRANSACTIONAL_MASK : 0), at);
  at = buf.writeInt32BE(lastOffsetDelta, at);
  at = writeInt64(Long, buf, at, firstTimestamp);
  at = writeInt64(Long, buf, at, maxTimestamp);
  at = writeInt64(Long, buf, at, producerId);
  at = buf.writeInt16BE(producerEpoch, at);
  at = buf.writeInt32BE(firstSequence, at);
  at = buf.writeInt32BE(count, at);
  if (compressed !== undefined) compressed.copy(buf, at);
  else fill(buf, at);
  buf.writeUInt32BE(crc32c(buf.subarray(bodyStart)), bodyStart - 4);
  return encoderOf(Encoder, buf);
}

/** The replacement of kafkajs' RecordBatch v0 (protocol/recordBatch/v0): FirstOffset, Length, then the batch. */
export function recordBatchEncoder(deps: RecordBatchDeps): (input: RecordBatchInput) => Promise<EncoderShape> {
  return async (input) => {
    const { records = [], ...header } = input;
    if (!records.every(isEncoder)) return deps.original(input);
    let recordsSize = 0;
    for (const record of records) recordsSize += record.offset;
    const fill = (buf: Buffer, from: number) => {
      let at = from;
      for (const record of records) at += record.buf.copy(buf, at, 0, record.offset);
    };
    return (await writeBatch(deps, header, records.length, recordsSize, fill)) ?? deps.original(input);
  };
}

/**
 * A record batch written straight from its messages: each record sized, then written in place
 * (no buffer and encoder per record, no copy of them into the batch). The records are those
 * kafkajs' Record makes of `{ key, value, headers, offsetDelta: i, timestampDelta: deltas[i] }`.
 */
export function recordBatchWriter(deps: RecordBatchDeps): (header: BatchHeader, messages: readonly RecordFields[], deltas: readonly unknown[]) => Promise<EncoderShape> {
  const { Encoder } = deps;
  return async (header, messages, deltas) => {
    const bodies = new Array<number>(messages.length);
    let recordsSize = 0;
    for (let i = 0; i < messages.length; i++) {
      const body = recordBodySize(Encoder, messages[i] as RecordFields, i, deltas[i]);
      bodies[i] = body;
      recordsSize += varIntSize(body) + body;
    }
    const fill = (buf: Buffer, from: number) => {
      let at = from;
      for (let i = 0; i < messages.length; i++) at = writeRecord(Encoder, buf, at, messages[i] as RecordFields, i, deltas[i], bodies[i] as number);
    };
    const written = await writeBatch(deps, header, messages.length, recordsSize, fill);
    if (written !== undefined) return written;
    // A codec kafkajs lacks: its own RecordBatch, for its error.
    const record = recordEncoder(Encoder);
    const records = messages.map((m, i) => record({ ...m, headers: m.headers ?? {}, offsetDelta: i, timestampDelta: deltas[i] }));
    return deps.original({ ...header, records });
  };
}
