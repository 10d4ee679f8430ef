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
 * A PUBACK with reason code 0 and no properties is the same four bytes in MQTT 3.1.1 and 5.
 */
export class PubackWindow {
  readonly #queue: PendingPuback[] = [];
  #pending = 0;

  /** Messages received and not yet acked or dropped. */
  get pending(): number {
    return this.#pending;
  }

  /** Tracks a message; undefined when its connection is already closed (nothing to ack on). */
  add(stream: PubackStream, messageId: number): PendingPuback | undefined {
    if (stream.destroyed || !stream.writable) return undefined;
    const entry: PendingPuback = { stream, messageId, state: 'pending' };
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
    for (let i = this.#queue.length - 1; i >= 0; i--) {
      const entry = this.#queue[i] as PendingPuback;
      if (entry.stream !== stream) continue;
      if (entry.state === 'pending') this.#pending -= 1;
      entry.state = 'dropped';
      this.#queue.splice(i, 1);
    }
  }

  #settle(entry: PendingPuback, state: 'acked' | 'dropped'): void {
    if (entry.state !== 'pending') return;
    entry.state = state;
    this.#pending -= 1;
    while (this.#queue.length > 0 && (this.#queue[0] as PendingPuback).state !== 'pending') {
      const head = this.#queue.shift() as PendingPuback;
      if (head.state === 'acked' && !head.stream.destroyed && head.stream.writable) {
        head.stream.write(Uint8Array.of(0x40, 0x02, head.messageId >> 8, head.messageId & 0xff));
      }
    }
  }
}
