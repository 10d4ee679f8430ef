/** Times a message must be the only one awaiting acknowledgement when the broker closed the connection before the sink refuses it. */
export const CLOSES_TO_REFUSE = 2;

/** Most messages remembered; past it the oldest is forgotten (it is then sent with others again). */
const MAX_REMEMBERED = 10_000;

/**
 * MQTT 5 DISCONNECT reason codes a broker may send for one PUBLISH: unspecified error, malformed
 * packet, protocol error, implementation specific error, not authorized, topic name invalid,
 * packet too large, payload format invalid, retain not supported, QoS not supported. Any other
 * (server shutting down, session taken over, keep alive timeout, server busy, quota exceeded...)
 * says that the connection, not a message, was the matter.
 */
const MESSAGE_CODES: ReadonlySet<number> = new Set([0x80, 0x81, 0x82, 0x83, 0x87, 0x90, 0x95, 0x99, 0x9a, 0x9b]);

/** What the sink does with a batch's messages before publishing it. */
export interface Triage {
  /** Indexes of messages to refuse now, without sending them. */
  readonly refuse: readonly number[];
  /** Index of a message held back from this write, to be refused once the broker acknowledged one of the others. */
  readonly setAside: number | undefined;
}

/** A message that awaited its acknowledgement when the broker closed the connection. */
interface Suspect {
  /** Times the broker closed the connection while it was the only message awaiting acknowledgement. */
  closesAlone: number;
  /** The acknowledgements counted when it became a suspect. */
  readonly since: number;
}

/**
 * Which messages the broker of an mqttClient sink closes the connection for. Under MQTT 3.1.1 a
 * broker has no other way to refuse a message (Mosquitto closes the connection for a PUBLISH over
 * its `max_packet_size` or `message_size_limit`), and nothing says which message it was: the
 * whole batch failed on every retry, and one such message held the sink up for good. Now the
 * messages that awaited their acknowledgement when the connection closed become suspects, and
 * each is sent alone, after the ones before it were answered and before any after it is sent.
 * A suspect the broker acknowledges is cleared; one it closed the connection for CLOSES_TO_REFUSE
 * times while it was alone is refused for good (dead-lettered) and the rest of its batch is
 * published, but only once the broker has acknowledged another message since the first close:
 * a broker that closes the connection for every message (the sink's QoS above its maximum,
 * retain not available, a broker going up and down) refuses the sink, not a message. Until then
 * the message is held back while the next one is tried; with no other message, or a second one
 * in the same state, it is sent alone again, and the sink holds as it did before.
 *
 * Memory: at most MAX_REMEMBERED suspects. Ids are envelope ids, which the buffer keeps across
 * retries. Only QoS 1 and 2 messages are judged: at QoS 0 nothing is acknowledged.
 */
export class CloseSuspects {
  /** By envelope id, oldest first. */
  readonly #suspects = new Map<string, Suspect>();
  /** Acknowledgements so far. */
  #acks = 0;

  /** Whether the message must be sent alone. */
  isSuspect(id: string): boolean {
    return this.#suspects.has(id);
  }

  /** Whether the broker closed the connection for the message often enough, and took another message since it came under suspicion. */
  isProven(id: string): boolean {
    const suspect = this.#suspects.get(id);
    return suspect !== undefined && suspect.closesAlone >= CLOSES_TO_REFUSE && this.#acks > suspect.since;
  }

  /** Sorts a batch's messages (by envelope id, in order) into those refused now, held back, and sent. */
  triage(ids: readonly string[]): Triage {
    const refuse: number[] = [];
    const unproven: number[] = [];
    ids.forEach((id, i) => {
      if (this.isProven(id)) refuse.push(i);
      else if ((this.#suspects.get(id)?.closesAlone ?? 0) >= CLOSES_TO_REFUSE) unproven.push(i);
    });
    const others = ids.length - refuse.length - unproven.length;
    return { refuse, setAside: unproven.length === 1 && others > 0 ? unproven[0] : undefined };
  }

  /** The broker acknowledged the message. */
  acked(id: string): void {
    this.#suspects.delete(id);
    this.#acks += 1;
  }

  /** The message was refused for good (here, or by an MQTT 5 PUBACK): it is not sent again. */
  forget(id: string): void {
    this.#suspects.delete(id);
  }

  /**
   * The connection closed while `unacked` (envelope ids, in the order they were sent) awaited
   * their acknowledgement; `reasonCode` is the broker's MQTT 5 DISCONNECT reason, if it sent one.
   */
  closed(unacked: readonly string[], reasonCode: number | undefined): void {
    if (unacked.length === 0 || (reasonCode !== undefined && !MESSAGE_CODES.has(reasonCode))) return;
    for (const id of unacked) {
      const suspect = this.#suspects.get(id) ?? { closesAlone: 0, since: this.#acks };
      if (unacked.length === 1) suspect.closesAlone += 1;
      this.#suspects.delete(id);
      this.#suspects.set(id, suspect);
    }
    while (this.#suspects.size > MAX_REMEMBERED) this.#suspects.delete(this.#suspects.keys().next().value as string);
  }
}
