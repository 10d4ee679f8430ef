import { crc32 } from 'node:zlib';

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
 * A ring of `maxEntries` slots in typed arrays, and per client id a map from packet id to slot:
 * this runs for every QoS 1 and 2 message, and an object per message living for minutes
 * cost more in garbage collection than everything else here. A message is remembered for
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
  /** Client id to packet id to slot. */
  readonly #byClient = new Map<string, Map<number, number>>();
  /** Resends waiting for a message to be settled, by its ticket. */
  readonly #waiting = new Map<number, ((outcome: ResendOutcome) => void)[]>();
  /** The bridges that stored a message the others did not take, by its ticket (while its slot holds it). */
  readonly #storedBy = new Map<number, ReadonlySet<string>>();

  constructor(options: ResendMemoryOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#capacity = Math.max(1, options.maxEntries);
  }

  /** Messages remembered now (for tests). */
  get size(): number {
    let n = 0;
    for (const byId of this.#byClient.values()) n += byId.size;
    return n;
  }

  /** Notes a message taken from a device; settle it with `stored` or `notStored`. */
  note(clientId: string, username: string | undefined, messageId: number, topic: string, payload: Uint8Array): NotedMessage {
    const slots = (this.#slots ??= new Slots(this.#capacity));
    const ticket = this.#nextTicket++;
    const slot = ticket % this.#capacity;
    if (slots.ticket[slot] !== 0) this.#forget(slots, slot);
    slots.ticket[slot] = ticket;
    slots.clientId[slot] = clientId;
    slots.username[slot] = username;
    slots.messageId[slot] = messageId;
    slots.digest[slot] = digest(topic, payload);
    slots.at[slot] = this.#now();
    slots.state[slot] = PENDING;
    let byId = this.#byClient.get(clientId);
    if (byId === undefined) this.#byClient.set(clientId, (byId = new Map()));
    byId.set(messageId, slot);
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
   * The earlier message `messageId` of this device that a resend with this topic and payload
   * repeats: one stored (by every bridge or some), or not settled yet, within the window. Undefined when there is none.
   */
  lookup(clientId: string, username: string | undefined, messageId: number, topic: string, payload: Uint8Array): NotedMessage | undefined {
    const slots = this.#slots;
    const slot = this.#byClient.get(clientId)?.get(messageId);
    if (slots === undefined || slot === undefined) return undefined;
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
  #forget(slots: Slots, slot: number): void {
    const clientId = slots.clientId[slot] as string;
    const byId = this.#byClient.get(clientId);
    if (byId !== undefined && byId.get(slots.messageId[slot] as number) === slot) {
      byId.delete(slots.messageId[slot] as number);
      if (byId.size === 0) this.#byClient.delete(clientId);
    }
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
  readonly clientId: (string | undefined)[];
  readonly username: (string | undefined)[];

  constructor(capacity: number) {
    this.ticket = new Float64Array(capacity);
    this.at = new Float64Array(capacity);
    this.digest = new Float64Array(capacity);
    this.messageId = new Uint16Array(capacity);
    this.state = new Uint8Array(capacity);
    this.clientId = new Array<string | undefined>(capacity).fill(undefined);
    this.username = new Array<string | undefined>(capacity).fill(undefined);
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
