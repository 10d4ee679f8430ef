/**
 * NUL, and U+FFFD: the packet parser decodes ill-formed UTF-8 (overlong encodings, encoded
 * surrogates, stray bytes) to it, so a string with it is refused, as topics are (core/topic.ts),
 * also the rare one that held a well-formed U+FFFD.
 */
const MALFORMED = /[\u0000\ufffd]/;

/** The MQTT 5 PUBLISH properties that are UTF-8 strings (Correlation Data is binary). */
export interface StringProperties {
  readonly contentType?: string;
  readonly responseTopic?: string;
  readonly userProperties?: Readonly<Record<string, string | readonly string[]>>;
}

/**
 * Why an MQTT 5 PUBLISH's string properties make it a Malformed Packet, or undefined when they
 * do not: NUL or ill-formed UTF-8 in its Content Type, Response Topic or a User Property's name
 * or value [MQTT-1.5.4-1, MQTT-1.5.4-2]. Such text would reach the bridges' headers (Kafka
 * headers, columns) with U+FFFD in place of the device's bytes.
 */
export function malformedProperties(properties: StringProperties | undefined): string | undefined {
  if (properties === undefined) return undefined;
  const { contentType, responseTopic, userProperties } = properties;
  if (contentType !== undefined && MALFORMED.test(contentType)) return `its Content Type ${what(contentType)}`;
  if (responseTopic !== undefined && MALFORMED.test(responseTopic)) return `its Response Topic ${what(responseTopic)}`;
  if (userProperties === undefined) return undefined;
  for (const name in userProperties) {
    if (MALFORMED.test(name)) return `the name of a User Property ${what(name)}`;
    const value = userProperties[name];
    for (const v of typeof value === 'string' ? [value] : (value ?? [])) {
      if (MALFORMED.test(v)) return `User Property ${JSON.stringify(name.slice(0, 64))} ${what(v)}`;
    }
  }
  return undefined;
}

function what(text: string): string {
  return text.includes('\u0000') ? 'holds NUL' : 'is not well-formed UTF-8';
}
