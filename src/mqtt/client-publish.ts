import type { IClientPublishOptions, MqttClient, Packet } from 'mqtt';
import type { Delivery } from '../core/delivery.ts';
import { describeReasonCode } from './client-connection.ts';
import type { CloseSuspects } from './client-suspects.ts';

/**
 * MQTT 5 PUBACK (PUBREC) reason codes that refuse one message for good: no retry publishes it
 * (0x87 not authorized, 0x90 topic name invalid, 0x95 packet too large, 0x99 payload format
 * invalid). Others (0x97 quota exceeded, 0x89 server busy, 0x80 unspecified...) fail the batch,
 * which is tried again.
 */
const REFUSING_CODES: ReadonlySet<number> = new Set([0x87, 0x90, 0x95, 0x99]);

/** The connection of an mqttClient sink, as publishing uses it. */
export interface PublishConnection {
  readonly client: MqttClient;
  /** Why the broker last disconnected this client (MQTT 5 DISCONNECT). */
  readonly disconnect: { reasonCode?: number | undefined };
  /** The connection's PINGREQs and PINGRESPs so far (countPings). */
  readonly pings: PingCount;
}

export interface PingCount {
  sent: number;
  received: number;
}

/**
 * Counts a new client's PINGREQs (mqtt.js' keepalive's and the fences') and PINGRESPs from the
 * start of its connection: a broker answers PINGREQs in order, so the n-th PINGRESP answers the
 * n-th PINGREQ. Call it before the client connects.
 */
export function countPings(client: MqttClient): PingCount {
  const pings: PingCount = { sent: 0, received: 0 };
  client.on('packetsend', (packet: Packet) => {
    if (packet.cmd === 'pingreq') pings.sent += 1;
  });
  client.on('packetreceive', (packet: Packet) => {
    if (packet.cmd === 'pingresp') pings.received += 1;
  });
  return pings;
}

/**
 * Publishes a batch with at most `limit` unacknowledged at once; resolves with the messages the
 * broker refused alone (MQTT 5 reason codes in REFUSING_CODES), by index. Rejects on any other
 * failed publish, or when the connection closes before every acknowledgement arrived (mqtt.js
 * would keep those publishes for a reconnect that this sink never makes: it opens a new client).
 *
 * With `suspects` (QoS 1 and 2), a close names to them the messages it may have been for: those
 * not answered yet, and the last one answered (Mosquitto acknowledges a PUBLISH over its
 * `message_size_limit`, then closes the connection). A suspect is sent alone, between two fences:
 * a PINGREQ whose PINGRESP shows that the broker read everything sent before it without closing
 * the connection (it answers packets in order). So a close between the fences is the suspect's.
 */
export function publishAll(
  { client, disconnect, pings }: PublishConnection,
  batch: readonly Delivery[],
  topics: readonly string[],
  limit: number,
  options: (delivery: Delivery) => IClientPublishOptions,
  suspects?: CloseSuspects,
): Promise<Map<number, number>> {
  return new Promise((resolve, reject) => {
    const refused = new Map<number, number>();
    /** Indexes sent and not answered yet, in the order they were sent. */
    const unanswered = new Set<number>();
    /** The last message answered since the last fence. */
    let lastAnswered: number | undefined;
    /** The suspect being sent alone, until the fence after it; `aloneAcked` once the broker acknowledged it. */
    let alone: number | undefined;
    let aloneAcked = false;
    /** The number of the PINGRESP the current fence waits for; `fenced` while nothing was sent since the last one (the previous write may have ended with a message the broker closes the connection for). */
    let fenceAt: number | undefined;
    let fenced = false;
    let next = 0;
    let done = false;
    const id = (i: number) => (batch[i] as Delivery).envelope.id;
    const onReceive = (packet: Packet) => {
      if (packet.cmd !== 'pingresp' || fenceAt === undefined || pings.received < fenceAt) return;
      fenceAt = undefined;
      fenced = true;
      lastAnswered = undefined;
      if (alone !== undefined && aloneAcked) suspects?.acked(id(alone));
      alone = undefined;
      pump();
    };
    const fence = () => {
      client.sendPing();
      fenceAt = pings.sent;
    };
    const finish = (error?: Error) => {
      if (done) return;
      done = true;
      client.off('close', onClose);
      client.off('packetreceive', onReceive);
      if (error === undefined) resolve(refused);
      else reject(error);
    };
    const onClose = () => {
      const code = disconnect.reasonCode;
      const blamed = new Set(lastAnswered === undefined ? unanswered : [lastAnswered, ...unanswered]);
      suspects?.closed([...blamed].map(id), code);
      // Under MQTT 3.1.1 a broker refuses a message by closing the connection: nothing says which one.
      const why = code === undefined ? '' : `: the broker disconnected with ${describeReasonCode(code)}`;
      const isolating = suspects === undefined || blamed.size < 2 ? '' : ` (the ${blamed.size} it may have been for are sent one at a time next)`;
      finish(new Error(`connection closed before the broker acknowledged every message${why}${isolating}`));
    };
    client.on('close', onClose);
    if (suspects !== undefined) client.on('packetreceive', onReceive);
    const pump = () => {
      if (done || fenceAt !== undefined || alone !== undefined) return;
      if (next === batch.length && unanswered.size === 0) {
        finish();
        return;
      }
      while (unanswered.size < limit && next < batch.length) {
        const i = next;
        if (suspects?.isSuspect(id(i)) === true) {
          if (unanswered.size > 0) return; // sent once the messages before it are answered...
          if (!fenced) {
            fence(); // ...and the broker read past them
            return;
          }
          alone = i;
          aloneAcked = false;
        }
        next += 1;
        fenced = false;
        unanswered.add(i);
        const { payload } = (batch[i] as Delivery).envelope;
        client.publish(topics[i] as string, Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength), options(batch[i] as Delivery), (error) => answered(i, error));
        if (alone !== undefined) return;
      }
    };
    const answered = (i: number, error: Error | undefined) => {
      unanswered.delete(i);
      const code = (error as { code?: unknown } | undefined)?.code;
      if (error !== undefined && error !== null && !(typeof code === 'number' && REFUSING_CODES.has(code))) {
        finish(error);
        return;
      }
      lastAnswered = i;
      if (typeof code === 'number') refused.set(i, code);
      if (i === alone) {
        aloneAcked = typeof code !== 'number';
        fence(); // a suspect is cleared once the broker read past it
        return;
      }
      if (typeof code !== 'number') suspects?.acked(id(i));
      pump();
    };
    pump();
  });
}
