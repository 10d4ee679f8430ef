import { z } from 'zod';
import type { Envelope } from '../core/envelope.ts';
import { type Template, TemplateError, type UnsafeTopicValues, compileTemplate } from '../core/template.ts';
import { type TopicLimits, invalidFilterReason, invalidTopicReason, topicMatches } from '../core/topic.ts';

/**
 * The topic options the MQTT sinks (`devices`, `mqttClient`) share: which topics they may
 * publish to, and what a field value that would leave its topic level does. A message template
 * that takes device data (`${payload.x}`, `${header.x}`, `${key}`) would otherwise let a device
 * choose where the gateway publishes, past every device ACL (issue 16, item 4).
 */
export const sinkTopicFields = () => ({
  allowedTopics: z
    .array(
      z.string().superRefine((filter, ctx) => {
        const reason = invalidFilterReason(filter);
        if (reason !== undefined) ctx.addIssue({ code: 'custom', message: `allowed topic '${filter}': ${reason}` });
      }),
    )
    .min(1)
    .optional()
    .meta({
      description:
        'The only topics this sink publishes to, as MQTT topic filters (`+` one level, a trailing `#` any levels). A message whose topic renders to another is refused. Set it when the topic template takes message data (`${key}`, `${header.NAME}`, `${payload.x}`). Any topic when absent.',
      examples: [['devices/+/commands/#']],
    }),
  onUnsafeTopicValue: z
    .enum(['refuse', 'escape'])
    .default('refuse')
    .meta({
      description:
        'A template field whose value would not stay one topic level (it has `/`, `+`, `#`, NUL or a control character): `refuse` the message, or `escape` the value, percent-encoded like a URI component (`/` as `%2F`, `%` as `%25`). `${topic}` and `${#}` keep their `/`. A message with an empty field value is refused either way.',
      examples: ['refuse'],
    }),
});

export interface SinkTopicConfig {
  readonly topic: string;
  readonly allowedTopics?: readonly string[] | undefined;
  readonly onUnsafeTopicValue: UnsafeTopicValues;
}

/**
 * Why every topic a template renders would be invalid because of its own text (fields taken
 * out): a wildcard, NUL or a control character there. Undefined when the text is fine.
 */
export function topicTextProblem(source: string): string | undefined {
  const text = source.replace(/\$\$\{|\$\{[^}]*\}/g, (m) => (m === '$${' ? '${' : ''));
  const bad = /[+#\u0000-\u001f\u007f-\u009f]/.exec(text);
  if (bad === null) return undefined;
  return `topic '${source}' has ${JSON.stringify(bad[0])} in its own text: a PUBLISH topic has no wildcards, NUL or control characters`;
}

/**
 * Why a config's topic can never be published: its own text makes it invalid, or it is
 * constant and not within its own `allowedTopics` (a config error, like the Kafka sink's).
 * Undefined otherwise.
 */
export function constantTopicProblem(config: SinkTopicConfig): string | undefined {
  const text = topicTextProblem(config.topic);
  if (text !== undefined) return text;
  if (config.allowedTopics === undefined || config.topic.includes('${')) return undefined;
  if (config.allowedTopics.some((filter) => topicMatches(filter, config.topic))) return undefined;
  return `topic '${config.topic}' is not in allowedTopics (${config.allowedTopics.join(', ')}): no message could be published`;
}

/**
 * Unicode noncharacters (U+FDD0-U+FDEF, and the last two code points of every plane: U+FFFE,
 * U+FFFF, U+1FFFE...): MQTT says a topic should not hold them, and Mosquitto closes the
 * connection of a client that publishes one. Device topics may have them (the embedded broker
 * takes them), so an upstream sink checks what it would send.
 */
const NONCHARACTER = new RegExp(
  `[\\uFDD0-\\uFDEF${Array.from({ length: 17 }, (_, plane) => `\\u{${(plane * 0x10000 + 0xfffe).toString(16)}}\\u{${(plane * 0x10000 + 0xffff).toString(16)}}`).join('')}]`,
  'u',
);

/** Why a topic would be refused upstream for a noncharacter in it; undefined when it has none. */
export function noncharacterReason(topic: string): string | undefined {
  const found = NONCHARACTER.exec(topic);
  if (found === null) return undefined;
  return `it has the Unicode noncharacter U+${(found[0].codePointAt(0) as number).toString(16).toUpperCase()}, which a broker such as Mosquitto refuses`;
}

/**
 * Renders a message's topic for an MQTT sink; throws a TemplateError saying why a message has
 * none it may publish to: a field without a value, with an empty one or one that leaves its level, a topic
 * that is no valid MQTT topic, one starting with `$` (unless `dollarText` and the template's
 * own text starts with it: `$aws/things/...` on AWS IoT), or one outside `allowedTopics`.
 * With `upstream` (a sink publishing to an external broker), also one with a noncharacter.
 */
export function sinkTopicRenderer(config: SinkTopicConfig, filters: readonly string[], limits: TopicLimits, dollarText: boolean, upstream = false): (envelope: Envelope) => string {
  const template: Template = compileTemplate(config.topic);
  const reservedByText = dollarText && config.topic.startsWith('$') && !config.topic.startsWith('${');
  const allowed = config.allowedTopics;
  return (envelope) => {
    let topic: string;
    try {
      topic = template.renderTopic({ envelope, filters }, config.onUnsafeTopicValue);
    } catch (error) {
      if (!(error instanceof TemplateError)) throw error;
      const prefix = `template '${config.topic}': `;
      throw new TemplateError(`cannot render the topic '${config.topic}': ${error.message.startsWith(prefix) ? error.message.slice(prefix.length) : error.message}`);
    }
    const invalid =
      invalidTopicReason(topic, limits) ??
      (topic.startsWith('$') && !reservedByText ? "topics starting with '$' are reserved" : undefined) ??
      (upstream ? noncharacterReason(topic) : undefined);
    if (invalid !== undefined) throw new TemplateError(`the topic '${config.topic}' rendered to an invalid MQTT topic ${JSON.stringify(topic.slice(0, 200))}: ${invalid}`);
    if (allowed !== undefined && !allowed.some((filter) => topicMatches(filter, topic))) {
      throw new TemplateError(`the topic '${config.topic}' rendered to ${JSON.stringify(topic.slice(0, 200))}, which is not in allowedTopics (${allowed.join(', ')})`);
    }
    return topic;
  };
}
