import { crc32 } from 'node:zlib';
import { steadyNow } from '../core/steady-clock.ts';

export interface ResendMemoryOptions {
  /** How long after it was taken a message is remembered. */
  readonly windowMs: number;
  /** Most messages remembered at once, over all devices: the oldest are forgotten first. */
  readonly maxEntries: number;
  readonly now?: () => number;
}

/** A noted message, as `note` returns it: settle it with `stored` or `notStored`. */
export type NotedMessage = number;

const PENDING = 0;
const STORED = 1;
const NOT_STORED = 2;
/** Stored by some of the bridges it was for, not by the others. */
const PARTLY = 3;

/** What became of a message: stored (true), not stored (false), or stored by these bridges only. */
export type ResendOutcome = boolean | ReadonlySet<string>;

/**
 * The QoS 1 and 2 messages the gateway took from devices, for a while, so that a device's
 * resend of one already stored (DUP set: it missed the PUBACK, often because its connection
 * died as the PUBACK was sent) is recognised and acknowledged without being stored twice with
 * two ids (issue 16, item 9). A resend is the same client id (and login), packet id, topic and
 * payload. A message not settled yet is found too: its resend then waits for it.
 *
 * A ring of `maxEntries` slots in typed arrays, and an index from client and packet id to slot
 * (SlotIndex): this runs for every QoS 1 and 2 message, and an object per message living for
 * minutes cost more in garbage collection than everything else here; a map per client, with an
 * entry added and one deleted per message, cost about as much as the rest of the gateway's
 * intake. A message is remembered for
 * `windowMs` after it was taken, unless `maxEntries` others were taken since, and under its
 * packet id only until the device's next message under the same id. Its topic and payload
 * are remembered as a hash, with the payload's length.
 */
export class ResendMemory {
  readonly #options: ResendMemoryOptions;
  readonly #now: () => number;
  readonly #capacity: number;
  /** Tickets are numbered from 1; a slot holds ticket t at t % capacity. */
  #nextTicket = 1;
  #slots: Slots | undefined;
  #index: SlotIndex | undefined;
  /** Each client id with messages in the ring, by a number of its own (its slots hold the number). */
  readonly #clients = new ClientNumbers();
  /** Resends waiting for a message to be settled, by its ticket. */
  readonly #waiting = new Map<number, ((outcome: ResendOutcome) => void)[]>();
  /** The bridges that stored a message the others did not take, by its ticket (while its slot holds it). */
  readonly #storedBy = new Map<number, ReadonlySet<string>>();

  constructor(options: ResendMemoryOptions) {
    this.#options = options;
    this.#now = options.now ?? steadyNow;
    this.#capacity = Math.max(1, options.maxEntries);
  }

  /** Messages remembered now (for tests). */
  get size(): number {
    return this.#index?.size ?? 0;
  }

  /** Notes a message taken from a device; settle it with `stored` or `notStored`. */
  note(clientId: string, username: string | undefined, packetId: number, topic: string, payload: Uint8Array): NotedMessage {
    const messageId = sixteenBits(packetId);
    const slots = (this.#slots ??= new Slots(this.#capacity));
    const index = (this.#index ??= new SlotIndex(this.#capacity));
    const ticket = this.#nextTicket++;
    const slot = ticket % this.#capacity;
    if (slots.ticket[slot] !== 0) this.#forget(slots, index, slot);
    const client = this.#clients.take(clientId);
    slots.ticket[slot] = ticket;
    slots.client[slot] = client;
    slots.username[slot] = username;
    slots.messageId[slot] = messageId;
    slots.digest[slot] = digest(topic, payload);
    slots.at[slot] = this.#now();
    slots.state[slot] = PENDING;
    index.set(client, messageId, slot);
    return ticket;
  }

  /** The message was stored (its PUBACK is sent). */
  stored(ticket: NotedMessage): void {
    this.#settle(ticket, true);
  }

  /** The message was not stored: its device sends it again, and that copy must be taken. */
  notStored(ticket: NotedMessage): void {
    this.#settle(ticket, false);
  }

  /** Only the bridges named stored it: its device sends it again, and that copy is for the others. */
  partlyStored(ticket: NotedMessage, by: ReadonlySet<string>): void {
    this.#settle(ticket, by.size === 0 ? false : by);
  }

  /** Resolves once the message is settled (false when it is forgotten unsettled). */
  outcome(ticket: NotedMessage): Promise<ResendOutcome> {
    const slots = this.#slots;
    const slot = ticket % this.#capacity;
    if (slots === undefined || slots.ticket[slot] !== ticket) return Promise.resolve(false);
    const state = slots.state[slot];
    if (state === PARTLY) return Promise.resolve(this.#storedBy.get(ticket) ?? false);
    if (state !== PENDING) return Promise.resolve(state === STORED);
    return new Promise<ResendOutcome>((resolve) => {
      let waiting = this.#waiting.get(ticket);
      if (waiting === undefined) this.#waiting.set(ticket, (waiting = []));
      waiting.push(resolve);
    });
  }

  /**
   * The earlier message `packetId` of this device that a resend with this topic and payload
   * repeats: one stored (by every bridge or some), or not settled yet, within the window. Undefined when there is none.
   */
  lookup(clientId: string, username: string | undefined, packetId: number, topic: string, payload: Uint8Array): NotedMessage | undefined {
    const messageId = sixteenBits(packetId);
    const slots = this.#slots;
    const client = this.#clients.numberOf(clientId);
    if (slots === undefined || client === undefined) return undefined;
    const slot = this.#index?.get(client, messageId) ?? -1;
    if (slot < 0) return undefined;
    if (slots.state[slot] === NOT_STORED || slots.username[slot] !== username) return undefined;
    if ((slots.at[slot] as number) < this.#now() - this.#options.windowMs) return undefined;
    if (slots.digest[slot] !== digest(topic, payload)) return undefined;
    return slots.ticket[slot];
  }

  #settle(ticket: number, outcome: ResendOutcome): void {
    const slots = this.#slots;
    const slot = ticket % this.#capacity;
    if (slots !== undefined && slots.ticket[slot] === ticket && slots.state[slot] === PENDING) {
      slots.state[slot] = outcome === true ? STORED : outcome === false ? NOT_STORED : PARTLY;
      if (typeof outcome !== 'boolean') this.#storedBy.set(ticket, outcome);
    }
    // Nearly always empty: no lookup per message then.
    if (this.#waiting.size === 0) return;
    const waiting = this.#waiting.get(ticket);
    if (waiting === undefined) return;
    this.#waiting.delete(ticket);
    for (const resolve of waiting) resolve(outcome);
  }

  /** Frees a slot for a new message: its packet id no longer leads to it. */
  #forget(slots: Slots, index: SlotIndex, slot: number): void {
    const client = slots.client[slot] as number;
    index.delete(client, slots.messageId[slot] as number, slot);
    this.#clients.release(client);
    // A resend still waiting for a message forgotten unsettled is taken.
    const ticket = slots.ticket[slot] as number;
    if (this.#storedBy.size > 0) this.#storedBy.delete(ticket);
    if (this.#waiting.size === 0) return;
    const waiting = this.#waiting.get(ticket);
    if (waiting !== undefined) {
      this.#waiting.delete(ticket);
      for (const resolve of waiting) resolve(false);
    }
  }
}

/** The ring's columns, allocated on the first QoS 1 or 2 message. */
class Slots {
  readonly ticket: Float64Array;
  readonly at: Float64Array;
  readonly digest: Float64Array;
  readonly messageId: Uint16Array;
  readonly state: Uint8Array;
  /** The client's number (ClientNumbers). */
  readonly client: Int32Array;
  readonly username: (string | undefined)[];

  constructor(capacity: number) {
    this.ticket = new Float64Array(capacity);
    this.at = new Float64Array(capacity);
    this.digest = new Float64Array(capacity);
    this.messageId = new Uint16Array(capacity);
    this.state = new Uint8Array(capacity);
    this.client = new Int32Array(capacity);
    this.username = new Array<string | undefined>(capacity).fill(undefined);
  }
}

/**
 * A packet id as the ring and its index keep it. A PUBLISH cut short before its packet id is
 * parsed with -1: kept as it came, its index entry would not be found to be removed, and enough
 * of them would fill the table.
 */
const sixteenBits = (packetId: number): number => packetId & 0xffff;

/**
 * Numbers for the client ids that have messages in the ring, each counted: a number is given
 * back, and may go to another client id, when its last message is forgotten. At most one per
 * slot, so they stay small.
 */
class ClientNumbers {
  readonly #numbers = new Map<string, number>();
  readonly #ids: (string | undefined)[] = [];
  readonly #counts: number[] = [];
  readonly #free: number[] = [];

  numberOf(clientId: string): number | undefined {
    return this.#numbers.get(clientId);
  }

  /** The client's number, counted once more. */
  take(clientId: string): number {
    let n = this.#numbers.get(clientId);
    if (n === undefined) {
      n = this.#free.pop() ?? this.#ids.length;
      this.#numbers.set(clientId, n);
      this.#ids[n] = clientId;
      this.#counts[n] = 0;
    }
    this.#counts[n] = (this.#counts[n] as number) + 1;
    return n;
  }

  /** Counts a message of client `n` less; the number is free once none is left. */
  release(n: number): void {
    const left = (this.#counts[n] as number) - 1;
    this.#counts[n] = left;
    if (left > 0) return;
    this.#numbers.delete(this.#ids[n] as string);
    this.#ids[n] = undefined;
    this.#free.push(n);
  }
}

/**
 * From client number and packet id to slot: an open-addressing hash table (linear probing,
 * deletion by backward shift) in typed arrays, at most half full since it holds at most one
 * entry per slot of the ring.
 */
class SlotIndex {
  /** Client number + 1 of each entry; 0 marks an empty place. */
  readonly #client: Int32Array;
  readonly #messageId: Uint16Array;
  readonly #slot: Int32Array;
  readonly #mask: number;
  size = 0;

  constructor(capacity: number) {
    let places = 16;
    while (places < capacity * 2) places *= 2;
    this.#client = new Int32Array(places);
    this.#messageId = new Uint16Array(places);
    this.#slot = new Int32Array(places);
    this.#mask = places - 1;
  }

  #home(client: number, messageId: number): number {
    return (Math.imul(client + 1, 0x9e3779b1) ^ Math.imul(messageId, 0x85ebca6b)) & this.#mask;
  }

  /** Where the entry for client and packet id is, or the empty place where it would go. */
  #find(client: number, messageId: number): number {
    let at = this.#home(client, messageId);
    for (let c = this.#client[at] as number; c !== 0; c = this.#client[at] as number) {
      if (c === client + 1 && this.#messageId[at] === messageId) return at;
      at = (at + 1) & this.#mask;
    }
    return at;
  }

  /** The slot of the client's message under this packet id, or -1. */
  get(client: number, messageId: number): number {
    const at = this.#find(client, messageId);
    return this.#client[at] === 0 ? -1 : (this.#slot[at] as number);
  }

  set(client: number, messageId: number, slot: number): void {
    const at = this.#find(client, messageId);
    if (this.#client[at] === 0) {
      this.#client[at] = client + 1;
      this.#messageId[at] = messageId;
      this.size += 1;
    }
    this.#slot[at] = slot;
  }

  /** Removes the entry if it still leads to `slot` (a later message under the same id took it over otherwise). */
  delete(client: number, messageId: number, slot: number): void {
    let at = this.#find(client, messageId);
    if (this.#client[at] === 0 || this.#slot[at] !== slot) return;
    this.size -= 1;
    // Backward shift: each entry after the hole that may move into it does, so no probe stops early.
    const mask = this.#mask;
    for (let next = (at + 1) & mask; this.#client[next] !== 0; next = (next + 1) & mask) {
      const home = this.#home((this.#client[next] as number) - 1, this.#messageId[next] as number);
      // The entry stays where it is if its home lies cyclically in (at, next].
      if (at <= next ? at < home && home <= next : at < home || home <= next) continue;
      this.#client[at] = this.#client[next] as number;
      this.#messageId[at] = this.#messageId[next] as number;
      this.#slot[at] = this.#slot[next] as number;
      at = next;
    }
    this.#client[at] = 0;
  }
}

/**
 * A hash of topic and payload with the payload's length in the high bits: CRC-32 of the
 * payload (zlib's, native) and FNV-1a of the topic's UTF-16 code units, 32 bits each.
 */
function digest(topic: string, payload: Uint8Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < topic.length; i++) h = Math.imul(h ^ topic.charCodeAt(i), 0x01000193);
  return payload.byteLength * 0x1_0000_0000 + ((crc32(payload) ^ h) >>> 0);
}
