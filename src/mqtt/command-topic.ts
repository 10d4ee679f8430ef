import type { Envelope } from '../core/envelope.ts';
import { MessageFields, TemplateError, type Template, describeField } from '../core/template.ts';

/**
 * Throws a TemplateError when a field of a command's topic template has an empty value (a Kafka
 * record with an empty key, an empty header). `devices/${key}/commands` would then render
 * `devices//commands`: a valid MQTT topic that addresses no device, which a subscriber to
 * `devices/+/commands` would still receive, and which would otherwise count as nobody being
 * subscribed rather than as bad input. Called once the topic rendered, so each field has a value.
 */
export function refuseEmptyFields(template: Template, envelope: Envelope, filters: readonly string[]): void {
  if (template.constant) return;
  // Renders each field again (a payload field parses the payload again): commands are few, and
  // this keeps the shared topic renderer of the MQTT sinks as it is.
  const fields = new MessageFields({ envelope, filters });
  for (const field of template.fields) {
    if (fields.text(field, template.source) !== '') continue;
    throw new TemplateError(
      `cannot render the topic '${template.source}': ${describeField(field)} is empty: a value from the message must not be empty (the command would address no device)`,
    );
  }
}
