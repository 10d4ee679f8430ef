/**
 * Message headers from MQTT 5 user properties: a name given more than once keeps its values
 * joined with ",". fromEntries defines own properties, so a property named __proto__ stays a
 * header.
 */
export function userPropertyHeaders(userProperties: Readonly<Record<string, string | string[]>> | undefined): Record<string, string> {
  if (userProperties === undefined) return {};
  return Object.fromEntries(Object.entries(userProperties).map(([name, value]) => [name, Array.isArray(value) ? value.join(',') : String(value)]));
}
