/**
 * Message headers from MQTT 5 user properties: a name given more than once keeps its values
 * joined with ",". fromEntries defines own properties, so a property named __proto__ stays a
 * header.
 */
export function userPropertyHeaders(userProperties: Readonly<Record<string, string | string[]>> | undefined): Record<string, string> {
  if (userProperties === undefined) return {};
  return Object.fromEntries(Object.entries(userProperties).map(([name, value]) => [name, Array.isArray(value) ? value.join(',') : String(value)]));
}

/** The header a PUBLISH's Response Topic is kept in, and a command's Response Topic taken from. */
export const RESPONSE_TOPIC_HEADER = 'response-topic';
/** The header a PUBLISH's Correlation Data is kept in, base64-encoded (it is bytes; headers are text), and a command's taken from. */
export const CORRELATION_DATA_HEADER = 'correlation-data';

/**
 * What a UTF-8 string in an MQTT 5 packet must not hold (U+0000 [MQTT-1.5.4-2]), what a receiver
 * may take for a Malformed Packet (control characters and non-characters [MQTT-1.5.4-3]:
 * libmosquitto does, and closes the connection), and lone surrogates, which UTF-8 cannot encode.
 * A Kafka header holding bytes (a binary id, say) turns into such text.
 */
const UNSENDABLE = /[\p{Cc}\p{Noncharacter_Code_Point}\p{Cs}]/u;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** The MQTT 5 properties a message's headers give a PUBLISH sent to devices. */
export interface SentProperties {
  readonly userProperties: Record<string, string>;
  readonly responseTopic?: string;
  readonly correlationData?: Buffer;
  /** Names of the headers left out, with why: text a device may refuse, or a `response-topic` or `correlation-data` that is not one. */
  readonly dropped: readonly { readonly name: string; readonly reason: string }[];
}

/**
 * A message's headers as the properties of a PUBLISH to MQTT 5 devices: `response-topic` and
 * `correlation-data` (base64) as Response Topic and Correlation Data (the answer to a device's
 * request carries them back), the others as user properties. A header a device could refuse
 * the whole packet for is left out, so that the message still reaches it.
 */
export function sentProperties(headers: Readonly<Record<string, string>>): SentProperties {
  const userProperties: Record<string, string> = {};
  const dropped: { name: string; reason: string }[] = [];
  let responseTopic: string | undefined;
  let correlationData: Buffer | undefined;
  for (const [name, value] of Object.entries(headers)) {
    if (UNSENDABLE.test(name) || UNSENDABLE.test(value)) {
      dropped.push({ name, reason: 'a control character, a non-character or NUL, which MQTT 5 devices may refuse the whole message for' });
    } else if (name === RESPONSE_TOPIC_HEADER) {
      if (value === '' || value.includes('+') || value.includes('#')) dropped.push({ name, reason: 'not a topic name (empty, or with a wildcard)' });
      else responseTopic = value;
    } else if (name === CORRELATION_DATA_HEADER) {
      if (BASE64.test(value)) correlationData = Buffer.from(value, 'base64');
      else dropped.push({ name, reason: 'not base64' });
    } else {
      userProperties[name] = value;
    }
  }
  return {
    userProperties,
    ...(responseTopic === undefined ? {} : { responseTopic }),
    ...(correlationData === undefined ? {} : { correlationData }),
    dropped,
  };
}
