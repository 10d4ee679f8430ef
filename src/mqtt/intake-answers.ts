import type { Duplex } from 'node:stream';
import type { Client, PublishPacket } from 'aedes';
import type { NotedMessage } from './resend-memory.ts';

// What the MQTT intake (publish-intake.ts) answers devices with, and what it keeps of a message
// until the message is settled.

/** A QoS 1 or 2 message in flight: what its settlement needs (the context of its delivery). */
export interface Acknowledged {
  readonly client: Client | null;
  readonly packet: PublishPacket;
  readonly callback: (error?: Error | null) => void;
  readonly noted: NotedMessage | undefined;
  /** From a live connection: abandoned once that connection closes before its PUBACK. */
  readonly abandonable: boolean;
}

/** MQTT 5 DISCONNECT reason codes for a message the gateway could not take. */
export const SERVER_BUSY = 0x89;
export const QUOTA_EXCEEDED = 0x97;
export const SERVER_SHUTTING_DOWN = 0x8b;
/** MQTT 5 DISCONNECT reason code for a packet that breaks the protocol's encoding (ill-formed UTF-8, NUL). */
export const MALFORMED_PACKET = 0x81;

/** The counters' labels of a message by its QoS, one object each (see CounterRegistry). */
export const QOS_LABELS: readonly Readonly<Record<string, string>>[] = [{ qos: '0' }, { qos: '1' }, { qos: '2' }];

/** MQTT 5 PUBACK reason code for a topic name that is not valid. */
export const TOPIC_NAME_INVALID = 0x90;

/** What happens to a client whose publish is refused (for the log line). */
export function refusalOutcome(client: Client | null, qos: number, invalidTopic = false): string {
  // MQTT 3.1.1 has no negative PUBACK; aedes closes the connection. MQTT 5 has one.
  if (client === null || client.version !== 5) return 'closing the connection';
  if (qos === 0) return 'dropped (QoS 0)';
  return invalidTopic ? 'answered with reason code 0x90 (topic name invalid)' : 'answered with reason code 0x87 (not authorized)';
}

/**
 * Answers a message Ferry did not store so that its device sends it again. MQTT 3.1.1 has no
 * negative acknowledgement: aedes closes the connection. For MQTT 5 aedes would answer with
 * PUBACK/PUBREC 0x87 and keep the connection, which a device takes as final: so the
 * connection goes first, with a DISCONNECT saying why, and the refusal reaches aedes only
 * once the connection is down, when nothing it writes reaches the device any more (another
 * refusal of the same connection waits for the same close).
 */
export class UnstoredRefusals {
  /** MQTT 5 clients sent a DISCONNECT (aedes marks them closed only after it is written). */
  readonly #disconnecting = new WeakSet<Client>();

  refuse(client: Client, error: Error, reasonCode: number, callback: (error?: Error | null) => void, reasonString = 'message not stored; send it again'): void {
    if (client.version !== 5) {
      callback(error);
      return;
    }
    if (!client.closed && !this.#disconnecting.has(client)) {
      this.#disconnecting.add(client);
      client.disconnect({ reasonCode, properties: { reasonString } }, () => {});
    }
    const conn: Duplex = client.conn;
    if (conn.destroyed) callback(error);
    else conn.once('close', () => callback(error));
  }
}
