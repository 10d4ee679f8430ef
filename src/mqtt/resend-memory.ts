import { hash } from 'node:crypto';

export interface ResendMemoryOptions {
  /** How long after its PUBACK a stored message is remembered. */
  readonly windowMs: number;
  /** Most stored messages remembered at once, over all devices: the oldest are forgotten first. */
  readonly maxEntries: number;
  readonly now?: () => number;
}

/** What is remembered of one message: enough to tell a resend of it, not the message. */
export interface NotedMessage {
  /** Resolves true once the message is stored (its PUBACK sent), false when it is not. */
  outcome(): Promise<boolean>;
  /** The message was stored: remember it for `windowMs` from now. */
  stored(): void;
  /** The message was not stored: its device sends it again, and that copy must be taken. */
  notStored(): void;
}

/**
 * One message (a class, not closures: one is made per QoS 1 and 2 message, and a promise only
 * when a resend waits for it).
 */
class Entry implements NotedMessage {
  readonly clientId: string;
  readonly username: string | undefined;
  readonly messageId: number;
  readonly topic: string;
  readonly digest: number | string;
  /** Undefined until settled. */
  result: boolean | undefined;
  at = 0;
  #waiting: ((stored: boolean) => void)[] | undefined;
  readonly #memory: ResendMemory;

  constructor(memory: ResendMemory, clientId: string, username: string | undefined, messageId: number, topic: string, digest: number | string) {
    this.#memory = memory;
    this.clientId = clientId;
    this.username = username;
    this.messageId = messageId;
    this.topic = topic;
    this.digest = digest;
  }

  outcome(): Promise<boolean> {
    if (this.result !== undefined) return Promise.resolve(this.result);
    return new Promise<boolean>((resolve) => (this.#waiting ??= []).push(resolve));
  }

  stored(): void {
    this.#settle(true);
  }

  notStored(): void {
    this.#settle(false);
  }

  #settle(stored: boolean): void {
    if (this.result !== undefined) return;
    this.result = stored;
    this.#memory.settled(this);
    const waiting = this.#waiting;
    this.#waiting = undefined;
    if (waiting !== undefined) for (const resolve of waiting) resolve(stored);
  }
}

/** Payloads up to this size are hashed here (FNV-1a, no allocation); larger ones by SHA-1. */
const INLINE_HASH_BYTES = 4096;

/**
 * The QoS 1 and 2 messages the gateway took from devices, for a while after they were stored,
 * so that a device's resend of one (DUP set: it missed the PUBACK, often because its connection
 * died as the PUBACK was sent) is recognised and acknowledged without being stored twice with
 * two ids (issue 16, item 9). A resend is the same client id (and login), packet id, topic and
 * payload. Messages not yet settled are looked up too: a resend then waits for its original.
 *
 * Memory is bounded by `maxEntries` whatever the devices do: stored messages sit in two
 * generations, each holding at most half of `maxEntries` and spanning at most `windowMs`; when
 * the current one is full or that old it becomes the previous one, and the previous one is
 * dropped. So a message is remembered for `windowMs`, unless more than `maxEntries / 2` others
 * were stored since. It is remembered by its topic, payload length and a hash of the payload.
 */
export class ResendMemory {
  readonly #options: ResendMemoryOptions;
  readonly #now: () => number;
  /** Taken and not settled yet, by client id then packet id. */
  readonly #pending = new Map<string, Map<number, Entry>>();
  #current = new Map<string, Map<number, Entry>>();
  #previous = new Map<string, Map<number, Entry>>();
  #currentSize = 0;
  #currentSince: number;

  constructor(options: ResendMemoryOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#currentSince = this.#now();
  }

  /** Stored messages remembered now (for tests and status). */
  get size(): number {
    let n = 0;
    for (const generation of [this.#current, this.#previous]) for (const byId of generation.values()) n += byId.size;
    return n;
  }

  /** Notes a message taken from a device; settle the result with `stored` or `notStored`. */
  note(clientId: string, username: string | undefined, messageId: number, topic: string, payload: Uint8Array): NotedMessage {
    const entry = new Entry(this, clientId, username, messageId, topic, digest(payload));
    put(this.#pending, entry);
    return entry;
  }

  /** Called by an entry once it is settled: a stored one is remembered for the window. */
  settled(entry: Entry): void {
    const byId = this.#pending.get(entry.clientId);
    if (byId?.get(entry.messageId) === entry) {
      byId.delete(entry.messageId);
      if (byId.size === 0) this.#pending.delete(entry.clientId);
    }
    if (!entry.result) return;
    entry.at = this.#now();
    this.#remember(entry);
  }

  /**
   * The earlier message `messageId` of this device that a resend with this topic and payload
   * repeats: one not settled yet, or one stored within the window. Undefined when there is none.
   */
  lookup(clientId: string, username: string | undefined, messageId: number, topic: string, payload: Uint8Array): NotedMessage | undefined {
    const candidates = [this.#pending.get(clientId)?.get(messageId), this.#current.get(clientId)?.get(messageId), this.#previous.get(clientId)?.get(messageId)];
    let hashed: number | string | undefined;
    const since = this.#now() - this.#options.windowMs;
    for (const entry of candidates) {
      if (entry === undefined || entry.username !== username || entry.topic !== topic) continue;
      if (entry.result === true && entry.at < since) continue;
      hashed ??= digest(payload);
      if (entry.digest === hashed) return entry;
    }
    return undefined;
  }

  #remember(entry: Entry): void {
    const half = Math.max(1, Math.floor(this.#options.maxEntries / 2));
    if (this.#currentSize >= half || entry.at - this.#currentSince >= this.#options.windowMs) {
      this.#previous = this.#current;
      this.#current = new Map();
      this.#currentSize = 0;
      this.#currentSince = entry.at;
    }
    if (put(this.#current, entry) === undefined) this.#currentSize += 1;
  }
}

/** Adds an entry under its client and packet id; returns the one it replaced. */
function put(generation: Map<string, Map<number, Entry>>, entry: Entry): Entry | undefined {
  let byId = generation.get(entry.clientId);
  if (byId === undefined) generation.set(entry.clientId, (byId = new Map()));
  const replaced = byId.get(entry.messageId);
  byId.set(entry.messageId, entry);
  return replaced;
}

/** The payload's length and hash: FNV-1a (32 bits) for small payloads, SHA-1 for large ones. */
function digest(payload: Uint8Array): number | string {
  if (payload.byteLength > INLINE_HASH_BYTES) return `${payload.byteLength}:${hash('sha1', payload, 'base64')}`;
  let h = 0x811c9dc5;
  for (let i = 0; i < payload.byteLength; i++) h = Math.imul(h ^ (payload[i] as number), 0x01000193);
  // The length in the high bits: a number that a payload of another length cannot share.
  return payload.byteLength * 0x1_0000_0000 + (h >>> 0);
}
