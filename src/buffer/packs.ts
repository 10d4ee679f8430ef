import { type Envelope, NO_HEADERS } from '../core/envelope.ts';
import { type StoredMessage, parseOrigin } from './rows.ts';

export const headersJson = (e: Envelope): string => (noHeaders(e) ? '{}' : JSON.stringify(e.headers));

const noHeaders = (e: Envelope): boolean => e.headers === NO_HEADERS || isEmpty(e.headers);

/** Whether an object has no enumerable property, without the array Object.keys makes. */
function isEmpty(object: object): boolean {
  for (const _ in object) return false;
  return true;
}

/** Origins are shared between a device's messages (see the MQTT broker): their JSON is kept. */
const originJsons = new WeakMap<object, string>();
export function originJson(origin: Envelope['origin']): string {
  let json = originJsons.get(origin);
  if (json === undefined) {
    json = JSON.stringify(origin);
    originJsons.set(origin, json);
  }
  return json;
}

/**
 * The log's packs: a run of one bridge's messages with consecutive seqs, stored as one row
 * (schema.ts) with two blobs. The body holds the messages, each a record of fixed fields and
 * then its bytes:
 *
 *   payload length u32, created_at f64, id length u32, topic length u32, origin length u32,
 *   key length i32 (-1: no key), headers length u32 (0: no headers), then the id, topic,
 *   origin JSON, key, headers JSON and payload, in that order.
 *
 * The meta blob has, for each message, its record's length u32, its payload's length u32 and
 * its created_at f64: what counting part of a pack, finding where a record starts and a
 * message's age need, without reading the body.
 *
 * Encoded and decoded here in JavaScript: a row a message cost SQLite a row and an index entry
 * to write, the WAL's copy of both, the checkpoint's and the delete's, 2.0-2.8 times the CPU of
 * a row a commit to write and 5 times to read back and delete (`npm run bench -- packing`).
 */
const HEAD = 32;
const META = 16;

/** Messages at most in one pack. */
export const PACK_MESSAGES = 1024;
/** Bytes of body after which a pack is closed (a larger message gets a pack of its own). */
export const PACK_BYTES = 1024 * 1024;

const SCRATCH = 64 * 1024;
/** A scratch buffer grown past this for a large message is let go once its pack is written. */
const SCRATCH_KEPT = 4 * 1024 * 1024;
let scratch = Buffer.allocUnsafe(SCRATCH);
const metaScratch = Buffer.allocUnsafe(PACK_MESSAGES * META);

function reserve(at: number, more: number): void {
  if (at + more <= scratch.length) return;
  const grown = Buffer.allocUnsafe(Math.max(scratch.length * 2, at + more));
  scratch.copy(grown, 0, 0, at);
  scratch = grown;
}

/** One pack being written, in scratch buffers shared by all (one pack is written at a time). */
export class PackWriter {
  #at = 0;
  #count = 0;
  #bytes = 0;

  get count(): number {
    return this.#count;
  }

  /** Payload bytes of the messages added. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Whether the pack is full: its next message goes into a new one. */
  get full(): boolean {
    return this.#count >= PACK_MESSAGES || this.#at >= PACK_BYTES;
  }

  add(e: Envelope): void {
    const origin = originJson(e.origin);
    const headers = headersJson(e);
    const { key, payload } = e;
    // UTF-8 takes at most three bytes per UTF-16 unit.
    reserve(this.#at, HEAD + 3 * (e.id.length + e.topic.length + origin.length + (key?.length ?? 0) + headers.length) + payload.byteLength);
    const at = this.#at;
    let end = at + HEAD;
    const idLength = scratch.write(e.id, end);
    end += idLength;
    const topicLength = scratch.write(e.topic, end);
    end += topicLength;
    const originLength = scratch.write(origin, end);
    end += originLength;
    const keyLength = key === undefined ? -1 : scratch.write(key, end);
    if (keyLength > 0) end += keyLength;
    const headersLength = headers === '{}' ? 0 : scratch.write(headers, end);
    end += headersLength;
    scratch.set(payload, end);
    end += payload.byteLength;
    scratch.writeUInt32LE(payload.byteLength, at);
    scratch.writeDoubleLE(e.timestamp, at + 4);
    scratch.writeUInt32LE(idLength, at + 12);
    scratch.writeUInt32LE(topicLength, at + 16);
    scratch.writeUInt32LE(originLength, at + 20);
    scratch.writeInt32LE(keyLength, at + 24);
    scratch.writeUInt32LE(headersLength, at + 28);
    const m = this.#count * META;
    metaScratch.writeUInt32LE(end - at, m);
    metaScratch.writeUInt32LE(payload.byteLength, m + 4);
    metaScratch.writeDoubleLE(e.timestamp, m + 8);
    this.#at = end;
    this.#count += 1;
    this.#bytes += payload.byteLength;
  }

  /** The body so far: a view of the scratch buffer, valid until the next add or reset (bind it at once). */
  body(): Buffer {
    return scratch.subarray(0, this.#at);
  }

  /** The meta blob so far, like body(). */
  meta(): Buffer {
    return metaScratch.subarray(0, this.#count * META);
  }

  reset(): void {
    if (scratch.length > SCRATCH_KEPT) scratch = Buffer.allocUnsafe(SCRATCH);
    this.#at = 0;
    this.#count = 0;
    this.#bytes = 0;
  }
}

/** Messages in a pack, by its meta blob. */
export const countOf = (meta: Buffer): number => meta.length / META;

/** Payload bytes of messages [from, to) of a pack. */
export function payloadBytes(meta: Buffer, from: number, to: number): number {
  let bytes = 0;
  for (let i = from; i < to; i++) bytes += meta.readUInt32LE(i * META + 4);
  return bytes;
}

/** created_at of the pack's `index`th message. */
export const timeAt = (meta: Buffer, index: number): number => meta.readDoubleLE(index * META + 8);

/** Where the pack's `index`th record starts in its body. */
function offsetOf(meta: Buffer, index: number): number {
  let at = 0;
  for (let i = 0; i < index; i++) at += meta.readUInt32LE(i * META);
  return at;
}

/**
 * The messages of a pack whose first seq is `first`, from its `from`th on, `limit` at most,
 * pushed onto `out`; the seqs in `skip` are left out. Payloads are views of the body; the
 * strings are copies.
 */
export function decode(out: StoredMessage[], bridge: string, first: number, meta: Buffer, body: Buffer, from: number, limit: number, skip?: ReadonlySet<number>): void {
  const count = countOf(meta);
  let at = offsetOf(meta, from);
  for (let i = from; i < count && limit > 0; i++) {
    if (skip?.has(first + i) !== true) {
      limit -= 1;
      out.push(decodeRecord(bridge, first + i, body, at));
    }
    at += meta.readUInt32LE(i * META);
  }
}

/** Where each record of a pack starts in its body. */
export function offsets(meta: Buffer): number[] {
  const count = countOf(meta);
  const starts = new Array<number>(count);
  let at = 0;
  for (let i = 0; i < count; i++) {
    starts[i] = at;
    at += meta.readUInt32LE(i * META);
  }
  return starts;
}

/** The message (seq `seq` of `bridge`) whose record starts at `at` of a pack's body. */
export function decodeRecord(bridge: string, seq: number, body: Buffer, at: number): StoredMessage {
  const payloadLength = body.readUInt32LE(at);
  const timestamp = body.readDoubleLE(at + 4);
  const idLength = body.readUInt32LE(at + 12);
  const topicLength = body.readUInt32LE(at + 16);
  const originLength = body.readUInt32LE(at + 20);
  const keyLength = body.readInt32LE(at + 24);
  const headersLength = body.readUInt32LE(at + 28);
  let p = at + HEAD;
  const id = body.toString('utf8', p, (p += idLength));
  const topic = body.toString('utf8', p, (p += topicLength));
  const origin = parseOrigin(body.toString('utf8', p, (p += originLength)));
  const key = keyLength < 0 ? undefined : body.toString('utf8', p, (p += keyLength));
  const headers = headersLength === 0 ? NO_HEADERS : (JSON.parse(body.toString('utf8', p, (p += headersLength))) as Record<string, string>);
  const payload = body.subarray(p, p + payloadLength);
  const envelope: Envelope = key === undefined ? { id, topic, payload, headers, timestamp, origin } : { id, topic, payload, headers, timestamp, origin, key };
  return { seq, bridge, envelope };
}

/** Whether the topic of the record at `at` begins with `prefix` (its UTF-8 bytes), compared without decoding it. */
export function topicStartsWith(body: Buffer, at: number, prefix: Buffer): boolean {
  if (body.readUInt32LE(at + 16) < prefix.length) return false;
  const start = at + HEAD + body.readUInt32LE(at + 12);
  return body.compare(prefix, 0, prefix.length, start, start + prefix.length) === 0;
}

/** The ids of a pack's messages, read from their records without decoding the rest. */
export function idsOf(meta: Buffer, body: Buffer): string[] {
  return offsets(meta).map((at) => body.toString('utf8', at + HEAD, at + HEAD + body.readUInt32LE(at + 12)));
}

/** A pack's bridge and the seqs of its first and last message, as a pack's row keeps them. */
export interface PackSpan {
  readonly bridge: string;
  readonly first: number;
  readonly last: number;
}

/**
 * Packs rows that earlier versions kept a message a row, in seq order: each run of one bridge's
 * rows with consecutive seqs becomes packs (a new one when the last is full), each handed to
 * `write` with the rows in it and its span. For the conversions of the buffer's and the history's tables.
 */
export function packRuns<R extends { readonly bridge: string; readonly seq: number }>(
  rows: readonly R[],
  envelopeOf: (row: R) => Envelope,
  write: (pack: PackWriter, run: readonly R[], span: PackSpan) => void,
): void {
  const pack = new PackWriter();
  let run: R[] = [];
  const close = () => {
    const [head] = run;
    if (head !== undefined) write(pack, run, { bridge: head.bridge, first: head.seq, last: (run.at(-1) as R).seq });
    pack.reset();
    run = [];
  };
  try {
    for (const row of rows) {
      const last = run.at(-1);
      if (last !== undefined && (row.bridge !== last.bridge || row.seq !== last.seq + 1 || pack.full)) close();
      pack.add(envelopeOf(row));
      run.push(row);
    }
    close();
  } finally {
    pack.reset();
  }
}
