// Internals of kafkajs 2.2.4 (its last release) that cost the gateway CPU at tens of thousands
// of records per second, or per byte of large payloads, replaced before kafkajs loads them with
// functions that return exactly what the originals return (test/unit/kafka/kafkajs-patches.test.ts
// compares them byte for byte):
//   - producer/groupMessagesPerPartition copies the partition's array once per message
//     (`[...current, message]`): quadratic in the batch size, ~3% of the gateway's CPU at
//     batches of 500;
//   - protocol/recordBatch/record/v0 allocates a zero-filled 512-byte buffer per record and
//     another per header, then copies the headers' into the record's: the record is now
//     encoded into one buffer of its own size;
//   - protocol/recordBatch/crc32C checksums each record batch a byte at a time in JavaScript
//     (~2.4 ms per MiB here, 6.5% of the gateway's CPU with 16 KiB payloads): @node-rs/crc32's
//     native CRC32C (~0.17 ms per MiB) where its binary loads, kafkajs' own elsewhere;
//   - protocol/encoder grows its buffer with Buffer.alloc, zero-filling every byte it is about to
//     overwrite (each batch is copied through four encoders on its way out): it grows with
//     Buffer.allocUnsafe, as every method writes each byte up to the offset it moves to, and
//     `buffer` never shows more.
// If kafkajs was loaded before (by another part of the process), the originals stay in use:
// slower, never wrong.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

interface KafkajsEncoder {
  writeVarInt(value: number): KafkajsEncoder;
  writeInt8(value: number): KafkajsEncoder;
  writeVarLong(value: unknown): KafkajsEncoder;
  writeVarIntBytes(value: unknown): KafkajsEncoder;
  writeVarIntString(value: string): KafkajsEncoder;
}

interface KafkajsEncoderClass {
  new (initialSize?: number): KafkajsEncoder;
  sizeOfVarInt(value: number): number;
  sizeOfVarLong(value: unknown): number;
  sizeOfVarIntBytes(value: unknown): number;
}

export interface RecordInput {
  readonly offsetDelta?: number;
  readonly timestampDelta?: unknown;
  readonly key?: unknown;
  readonly value?: unknown;
  readonly headers?: Readonly<Record<string, unknown>>;
}

interface GroupInput {
  readonly topic: string;
  readonly partitionMetadata: readonly unknown[];
  readonly messages: readonly unknown[];
  readonly partitioner: (args: { topic: string; partitionMetadata: readonly unknown[]; message: unknown }) => number;
}

const GROUP = 'kafkajs/src/producer/groupMessagesPerPartition.js';
const RECORD = 'kafkajs/src/protocol/recordBatch/record/v0/index.js';
const CRC32C = 'kafkajs/src/protocol/recordBatch/crc32C/crc32C.js';
const ENCODER = 'kafkajs/src/protocol/encoder.js';

interface GrowingEncoder {
  buf: Buffer;
  offset: number;
}

/** The replacement of kafkajs' groupMessagesPerPartition: the same result in one pass. */
export function groupMessagesPerPartition({ topic, partitionMetadata, messages, partitioner }: GroupInput): Record<number, unknown[]> {
  const result: Record<number, unknown[]> = {};
  if (partitionMetadata.length === 0) return result;
  for (const message of messages) {
    const partition = partitioner({ topic, partitionMetadata, message });
    (result[partition] ??= []).push(message);
  }
  return result;
}

/** The replacement of kafkajs' Record v0 encoder (see the file's comment). */
export function recordEncoder(Encoder: KafkajsEncoderClass): (input: RecordInput) => KafkajsEncoder {
  return ({ offsetDelta = 0, timestampDelta = 0, key, value, headers = {} }) => {
    const pairs: (readonly [string, unknown])[] = [];
    for (const name of Object.keys(headers)) {
      const values = headers[name];
      if (Array.isArray(values)) for (const v of values as unknown[]) pairs.push([name, v]);
      else pairs.push([name, values]);
    }
    let headersSize = Encoder.sizeOfVarInt(pairs.length);
    for (const [name, v] of pairs) {
      const nameSize = Buffer.byteLength(name);
      headersSize += Encoder.sizeOfVarInt(nameSize) + nameSize + Encoder.sizeOfVarIntBytes(v);
    }
    const body = 1 + Encoder.sizeOfVarLong(timestampDelta) + Encoder.sizeOfVarInt(offsetDelta) + Encoder.sizeOfVarIntBytes(key) + Encoder.sizeOfVarIntBytes(value) + headersSize;
    const encoder = new Encoder(body + Encoder.sizeOfVarInt(body))
      .writeVarInt(body)
      .writeInt8(0)
      .writeVarLong(timestampDelta)
      .writeVarInt(offsetDelta)
      .writeVarIntBytes(key)
      .writeVarIntBytes(value)
      .writeVarInt(pairs.length);
    for (const [name, v] of pairs) encoder.writeVarIntString(name).writeVarIntBytes(v);
    return encoder;
  };
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

let applied = false;

/** Puts the replacements in Node's module cache, where kafkajs' own requires find them. Idempotent. */
export function patchKafkajs(): void {
  if (applied) return;
  applied = true;
  const replace = (id: string, exports: unknown) => {
    const path = require.resolve(id);
    require(path);
    const cached = require.cache[path];
    if (cached !== undefined) cached.exports = exports;
  };
  const Encoder = require(ENCODER) as KafkajsEncoderClass & { nextPowerOfTwo(value: number): number; prototype: { ensureAvailable: unknown } };
  Encoder.prototype.ensureAvailable = ensureAvailableUnfilled((value) => Encoder.nextPowerOfTwo(value));
  replace(GROUP, groupMessagesPerPartition);
  replace(RECORD, recordEncoder(Encoder));
  const crc32c = nativeCrc32c();
  if (crc32c !== undefined) replace(CRC32C, crc32c);
}
