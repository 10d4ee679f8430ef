import type { Client } from 'aedes';
import type { Counters } from '../core/component.ts';
import { clientInternals } from './aedes-internals.ts';
import type { PacketRefusalReason } from './packet-scanner.ts';
import type { RefusalLog } from './refusal-log.ts';

/** MQTT 5 reason code 0x95, Packet too large (CONNACK, DISCONNECT). */
const PACKET_TOO_LARGE = 0x95;

/**
 * MQTT 5 Receive Maximum the embedded broker tells in CONNACK: aedes keeps at most this many
 * QoS 2 messages per client awaiting PUBREL (GHSA-p8r9-qf8w-p73r) and ends a connection past
 * it with DISCONNECT 0x93 (MQTT 3.1.1: closes it). QoS 1 messages are not counted against
 * it, so a client that does not hold to it (mqtt.js 5 does not) is not slowed at QoS 1.
 */
export const RECEIVE_MAXIMUM = 1000;

/**
 * The MQTT 5 reason codes with which the broker ends a connection for a protocol error, as
 * the patched aedes reports them (its error's `reasonCode`, on 'clientError' or, before
 * CONNACK, 'connectionError'), and the `mqtt.connections.refused` reason each is counted as.
 * None of them is a PUBACK or PUBREC code, so a refused publish (0x87, 0x90, 0x97), which
 * aedes reports the same way, is never taken for one.
 */
const REFUSALS = {
  130: 'protocol_error',
  147: 'receive_maximum_exceeded',
  148: 'topic_alias_invalid',
  [PACKET_TOO_LARGE]: 'packet_too_large',
} as const;

export type ProtocolRefusal = (typeof REFUSALS)[keyof typeof REFUSALS];

/** The refusal an error aedes reported stands for; undefined for any other error. */
export function protocolRefusal(error: Error): ProtocolRefusal | undefined {
  const code = (error as Error & { reasonCode?: unknown }).reasonCode;
  return typeof code === 'number' && Object.hasOwn(REFUSALS, code) ? REFUSALS[code as keyof typeof REFUSALS] : undefined;
}

/** Whether the broker may end the client's connection with a DISCONNECT packet: MQTT 5, after a CONNACK that accepted it. */
export function mayDisconnect(client: Client): boolean {
  return client.version === 5 && (client.connected || clientInternals(client)._connackAccepted) && !client.closed;
}

/**
 * When `error` (from aedes' 'clientError', or 'connectionError' before a login) is a protocol
 * error that ended the connection: counts it in `mqtt.connections.refused` and logs it through
 * the broker's refusal log (the first line per client and reason, then a summary per
 * interval: a client repeating the error cannot fill the log). False for any other error.
 */
export function countProtocolRefusal(counters: Counters, log: RefusalLog, client: Client, error: Error, beforeLogin: boolean): boolean {
  const reason = protocolRefusal(error);
  if (reason === undefined) return false;
  counters.count('mqtt.connections.refused', { reason });
  const code = `0x${(error as Error & { reasonCode: number }).reasonCode.toString(16)}`;
  const { connackSent, _connackAccepted: accepted } = clientInternals(client);
  const answer = connackSent && !accepted ? `refused with CONNACK ${code}` : client.version === 5 && accepted ? `disconnected with DISCONNECT ${code}` : 'connection closed';
  const who = beforeLogin ? { address: (client.conn as { remoteAddress?: string } | undefined)?.remoteAddress } : { clientId: client.id };
  log.refused({ who, reason, message: `protocol error: ${answer}`, detail: { detail: error.message } });
  return true;
}

/**
 * The packet guard's farewell (packet-guard.ts) for a connection refused a packet: an MQTT 5
 * client past its CONNACK is sent DISCONNECT 0x95 before the connection closes (§4.13 says it
 * SHOULD be); other connections are closed at once.
 */
export function packetTooLargeFarewell(client: Client | undefined, reason: PacketRefusalReason): (() => void) | undefined {
  if (reason !== 'packet_too_large' || client === undefined || !mayDisconnect(client)) return undefined;
  return () => client.disconnect({ reasonCode: PACKET_TOO_LARGE }, () => {});
}
