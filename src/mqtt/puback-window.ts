import { steadyNow } from '../core/steady-clock.ts';

/** The part of a connection's socket the window writes PUBACKs to. */
export interface PubackStream {
  readonly destroyed: boolean;
  readonly writable: boolean;
  write(chunk: Uint8Array): boolean;
}

/** A QoS 1 message received on `stream` that waits for its PUBACK. */
export interface PendingPuback {
  readonly stream: PubackStream;
  readonly messageId: number;
  /** When it was read (steadyNow(): a step of the wall clock does not age it). */
  readonly at: number;
  state: 'pending' | 'acked' | 'dropped';
}

/**
 * PUBACKs of the QoS 1 messages an external broker delivered, sent only once Ferry has stored
 * each message, in the order the messages arrived (MQTT 3.1.1 §4.6), and only on the
 * connection each message came in on: packet ids belong to one network connection, so an ack
 * that became due after its connection closed is dropped (the broker delivers the message
 * again on the next connection of the persistent session) rather than sent on a new
 * connection, where the same id may name another message.
 *
 * The PUBACKs that become due together (a group commit acks its messages in one go) leave in
 * one write, after the current task: one syscall instead of one per message, and the broker
 * reads them at once and sends the next messages together, so the next commit is as large.
 *
 * A PUBACK with reason code 0 and no properties is the same four bytes in MQTT 3.1.1 and 5.
 */
export class PubackWindow {
  /** Entries from `#head` on: every message not acked yet, or acked behind one that is not. */
  #queue: PendingPuback[] = [];
  #head = 0;
  #pending = 0;
  /** PUBACKs due, in order, to write at the end of the current task. */
  #due: PendingPuback[] = [];
  #flushScheduled = false;
  /** Packs `#due` into one buffer per connection; bound once. */
  readonly #flush = () => this.#write();

  /** Messages received and not yet acked or dropped. */
  get pending(): number {
    return this.#pending;
  }

  /** When the oldest message not acked yet was read; undefined when none waits. */
  get oldestAt(): number | undefined {
    return this.#pending === 0 ? undefined : (this.#queue[this.#head] as PendingPuback | undefined)?.at;
  }

  /** Tracks a message; undefined when its connection is already closed (nothing to ack on). */
  add(stream: PubackStream, messageId: number, at = steadyNow()): PendingPuback | undefined {
    if (stream.destroyed || !stream.writable) return undefined;
    const entry: PendingPuback = { stream, messageId, at, state: 'pending' };
    this.#queue.push(entry);
    this.#pending += 1;
    return entry;
  }

  /** The message is stored: its PUBACK goes out once every earlier one has. */
  ack(entry: PendingPuback): void {
    this.#settle(entry, 'acked');
  }

  /** The message was not stored: no PUBACK; the broker delivers it again after a reconnect. */
  drop(entry: PendingPuback): void {
    this.#settle(entry, 'dropped');
  }

  /** The connection closed: forget its messages, whose acks can no longer be sent. */
  closed(stream: PubackStream): void {
    const kept: PendingPuback[] = [];
    for (let i = this.#head; i < this.#queue.length; i++) {
      const entry = this.#queue[i] as PendingPuback;
      if (entry.stream !== stream) {
        kept.push(entry);
        continue;
      }
      if (entry.state === 'pending') this.#pending -= 1;
      entry.state = 'dropped';
    }
    this.#queue = kept;
    this.#head = 0;
    // Acks of another connection that waited behind this one's messages are due now.
    this.#advance();
  }

  #settle(entry: PendingPuback, state: 'acked' | 'dropped'): void {
    if (entry.state !== 'pending') return;
    entry.state = state;
    this.#pending -= 1;
    this.#advance();
  }

  /** Moves the head past settled messages; the acked ones' PUBACKs become due. */
  #advance(): void {
    const queue = this.#queue;
    let head = this.#head;
    while (head < queue.length && (queue[head] as PendingPuback).state !== 'pending') {
      const first = queue[head] as PendingPuback;
      head += 1;
      if (first.state === 'acked') this.#due.push(first);
    }
    if (head === queue.length) {
      queue.length = 0;
      head = 0;
    } else if (head > 1024 && head * 2 > queue.length) {
      queue.splice(0, head);
      head = 0;
    }
    this.#head = head;
    if (this.#due.length > 0 && !this.#flushScheduled) {
      this.#flushScheduled = true;
      queueMicrotask(this.#flush);
    }
  }

  #write(): void {
    this.#flushScheduled = false;
    const due = this.#due;
    this.#due = [];
    let from = 0;
    while (from < due.length) {
      const stream = (due[from] as PendingPuback).stream;
      let to = from + 1;
      while (to < due.length && (due[to] as PendingPuback).stream === stream) to += 1;
      // An ack of a connection that closed meanwhile is not sent (see the class comment).
      if (!stream.destroyed && stream.writable) {
        const bytes = Buffer.allocUnsafe((to - from) * 4);
        for (let i = from, at = 0; i < to; i++, at += 4) {
          const { messageId } = due[i] as PendingPuback;
          bytes[at] = 0x40;
          bytes[at + 1] = 0x02;
          bytes[at + 2] = messageId >> 8;
          bytes[at + 3] = messageId & 0xff;
        }
        stream.write(bytes);
      }
      from = to;
    }
  }
}
