import type { PublishPacket } from 'aedes';
import { CORRELATION_DATA_HEADER, RESPONSE_TOPIC_HEADER, userPropertyHeaders } from './user-properties.ts';

/** A PUBLISH's payload as bytes. */
export function payloadBytes(packet: PublishPacket): Buffer {
  return typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
}

/** Whether two payloads (bytes or strings) are the same bytes. */
export function samePayload(a: unknown, b: unknown): boolean {
  const bytes = (x: unknown) => (typeof x === 'string' ? Buffer.from(x) : x instanceof Uint8Array ? x : undefined);
  const [x, y] = [bytes(a), bytes(b)];
  return x !== undefined && y !== undefined && Buffer.compare(x, y) === 0;
}

/**
 * Message headers from an MQTT 5 PUBLISH: its user properties, and its content type as
 * `content-type`, its Response Topic as `response-topic` and its Correlation Data, base64, as
 * `correlation-data` (so that the answer to a request can carry them back), each unless a user
 * property already has that name.
 */
export function propertyHeaders(properties: NonNullable<PublishPacket['properties']>): Record<string, string> {
  const headers = userPropertyHeaders(properties.userProperties);
  const { contentType, responseTopic, correlationData } = properties;
  if (contentType !== undefined && !Object.hasOwn(headers, 'content-type')) headers['content-type'] = contentType;
  if (responseTopic !== undefined && !Object.hasOwn(headers, RESPONSE_TOPIC_HEADER)) headers[RESPONSE_TOPIC_HEADER] = responseTopic;
  if (correlationData !== undefined && !Object.hasOwn(headers, CORRELATION_DATA_HEADER)) headers[CORRELATION_DATA_HEADER] = Buffer.from(correlationData).toString('base64');
  return headers;
}
