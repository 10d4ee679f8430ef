import type { Envelope } from '../core/envelope.ts';
import type { StoredMessage } from './rows.ts';

/**
 * Messages kept at most, over all bridges; older ones are read from the database again. A sink
 * that keeps up needs about its window; a gateway of many bridges whose sinks are all down
 * (nothing released, every bridge's last messages kept) holds no more than this.
 */
const MAX_MESSAGES = 4096;
/** Payload bytes kept at most, over all bridges (a device's payload is a view of what its connection read with it, which stays in memory as long). */
const MAX_BYTES = 4 * 1024 * 1024;

/** Dropped messages at the front of a bridge's array before it is compacted (and then at least half of it). */
const COMPACT_AFTER = 1024;
/** How close to a paused bridge's newest row a read must come for the bridge to be kept again. */
const RESUME_WITHIN = 1024;

interface Recent {
  /** Every row of the bridge with a seq above this is kept. */
  floor: number;
  /**
   * In seq order, from `head` on; the slots before it were dropped. A queue rather than
   * `shift()`, which moved every element each time: at the bound, with a sink behind, each
   * append dropped one (7% of the gateway's CPU in a QoS 0 flood).
   */
  messages: (StoredMessage | undefined)[];
  head: number;
  bytes: number;
  /** The highest seq a read answered from here. */
  readThrough: number;
  /**
   * Set while nothing is kept for the bridge: its messages were let go at the bound before any
   * read took them, so no sink of it reads from memory. `floor` is then its newest row's seq.
   */
  paused: boolean;
}

const kept = (recent: Recent): number => recent.messages.length - recent.head;

/**
 * The messages the buffer's own connection appended last, by bridge, so that a sink that keeps
 * up reads them from memory instead of the database (the read, the rows' decoding and JSON,
 * about 5% of the gateway's CPU in the end-to-end benchmark). What it answers is what the
 * database would: it holds, for a bridge, every row above its `floor` and nothing else, and
 * the log forgets a bridge whenever that may not hold any more (a deletion other than the
 * release of what every sink is past, an append inside an outer transaction that may still roll
 * back, a failed transaction, a commit of another connection). A read it cannot answer goes to
 * the database, as before.
 */
export class RecentMessages {
  readonly #bridges = new Map<string, Recent>();
  /** Messages and payload bytes kept, over all bridges. */
  #messages = 0;
  #bytes = 0;
  /** PRAGMA data_version when the kept messages were last trusted: another connection's commit changes it. */
  #dataVersion: unknown;
  /** Calls of forget and clear so far: an append that saw one during its transaction keeps nothing. */
  forgotten = 0;

  /** `dataVersion`: PRAGMA data_version now. */
  constructor(dataVersion: unknown) {
    this.#dataVersion = dataVersion;
  }

  /** Rows appended by a transaction that committed: `seqs[i]` is the seq of `entries[i]` (0: a dead letter, not in the log). */
  add(entries: readonly { readonly bridge: string; readonly envelope: Envelope }[], seqs: readonly number[]): void {
    for (let i = 0; i < entries.length; i++) {
      const entry = entries[i] as (typeof entries)[number];
      const seq = seqs[i] as number;
      if (seq === 0) continue;
      let recent = this.#bridges.get(entry.bridge);
      // Every row of the bridge above this one's seq is this one: seqs only grow.
      if (recent === undefined) {
        recent = { floor: seq - 1, messages: [], head: 0, bytes: 0, readThrough: seq - 1, paused: false };
        this.#bridges.set(entry.bridge, recent);
      }
      if (recent.paused) {
        recent.floor = seq;
        continue;
      }
      // A row read back gives a Buffer: so does this, the message's own when it is one (nothing
      // writes into a payload; a device's is a view of the bytes its connection read), else a
      // view of its bytes.
      const { payload } = entry.envelope;
      const envelope = Buffer.isBuffer(payload) ? entry.envelope : { ...entry.envelope, payload: Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength) };
      recent.messages.push({ seq, bridge: entry.bridge, envelope });
      recent.bytes += envelope.payload.byteLength;
      this.#messages += 1;
      this.#bytes += envelope.payload.byteLength;
      while (this.#messages > MAX_MESSAGES) this.#letGo(this.#largest(kept));
      while (this.#bytes > MAX_BYTES) this.#letGo(this.#largest((r) => r.bytes));
    }
  }

  /**
   * Up to `limit` messages of the bridge after `afterSeq`, or undefined when not all of them are
   * here. `dataVersion`: PRAGMA data_version now; when another connection committed since the
   * last read (`ferry buffer redrive`, `purge`), nothing kept is trusted any more.
   */
  read(bridge: string, afterSeq: number, limit: number, dataVersion: unknown): StoredMessage[] | undefined {
    if (dataVersion !== this.#dataVersion) {
      this.#dataVersion = dataVersion;
      this.clear();
      return undefined;
    }
    const recent = this.#bridges.get(bridge);
    if (recent === undefined) return undefined;
    if (recent.paused) {
      // A reader near the newest row: keep the bridge's messages again from its next append on.
      if (recent.floor - afterSeq <= RESUME_WITHIN) this.#bridges.delete(bridge);
      return undefined;
    }
    if (afterSeq < recent.floor) return undefined;
    const { messages } = recent;
    let lo = recent.head;
    let hi = messages.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((messages[mid] as StoredMessage).seq <= afterSeq) lo = mid + 1;
      else hi = mid;
    }
    const found = messages.slice(lo, lo + limit) as StoredMessage[];
    if (found.length > 0) recent.readThrough = Math.max(recent.readThrough, (found[found.length - 1] as StoredMessage).seq);
    return found;
  }

  /** Every sink of the bridge is past `seq` and its rows up to it are deleted. */
  release(bridge: string, seq: number): void {
    const recent = this.#bridges.get(bridge);
    if (recent === undefined) return;
    while (kept(recent) > 0 && (recent.messages[recent.head] as StoredMessage).seq <= seq) this.#dropOldest(recent);
    recent.floor = Math.max(recent.floor, seq);
  }

  /** What is kept of the bridge may differ from its rows now. */
  forget(bridge: string): void {
    this.forgotten += 1;
    const recent = this.#bridges.get(bridge);
    if (recent === undefined) return;
    this.#messages -= kept(recent);
    this.#bytes -= recent.bytes;
    this.#bridges.delete(bridge);
  }

  clear(): void {
    this.forgotten += 1;
    this.#bridges.clear();
    this.#messages = 0;
    this.#bytes = 0;
  }

  /** The bridge keeping the most (messages, or bytes): the first to give some up. */
  #largest(size: (recent: Recent) => number): Recent {
    let largest: Recent | undefined;
    for (const recent of this.#bridges.values()) if (largest === undefined || size(recent) > size(largest)) largest = recent;
    return largest as Recent;
  }

  /**
   * Lets the bridge's oldest message go at the bound. When no read took it from here, no sink of
   * the bridge reads from memory: what is kept would only be let go unread in turn, each message
   * held long enough to be promoted and collected as old (a sink far behind, a QoS 0 flood
   * outrunning its sink). The bridge then keeps nothing until a reader comes near its newest row.
   */
  #letGo(recent: Recent): void {
    const oldest = recent.messages[recent.head] as StoredMessage;
    if (oldest.seq <= recent.readThrough) {
      this.#dropOldest(recent);
      return;
    }
    recent.floor = (recent.messages[recent.messages.length - 1] as StoredMessage).seq;
    this.#messages -= kept(recent);
    this.#bytes -= recent.bytes;
    recent.messages = [];
    recent.head = 0;
    recent.bytes = 0;
    recent.paused = true;
  }

  #dropOldest(recent: Recent): void {
    const oldest = recent.messages[recent.head] as StoredMessage;
    recent.messages[recent.head] = undefined;
    recent.head += 1;
    if (recent.head >= COMPACT_AFTER && recent.head * 2 >= recent.messages.length) {
      recent.messages = recent.messages.slice(recent.head);
      recent.head = 0;
    }
    recent.bytes -= oldest.envelope.payload.byteLength;
    recent.floor = oldest.seq;
    this.#messages -= 1;
    this.#bytes -= oldest.envelope.payload.byteLength;
  }
}
