import type { Envelope } from '../core/envelope.ts';
import { FerryError } from '../core/errors.ts';
import { type Template, TemplateError, compileTemplate } from '../core/template.ts';
import type { KafkaRecord } from './client.ts';

/** Kafka's own rule for topic names (and '.' and '..' are refused). */
const TOPIC = /^[A-Za-z0-9._-]{1,249}$/;
export const TOPIC_RULE = 'a Kafka topic is 1 to 249 letters, digits, ".", "_" or "-", and not "." or ".."';

/** Why `name` is not a valid Kafka topic, or undefined when it is. */
export function kafkaTopicProblem(name: string): string | undefined {
  if (TOPIC.test(name) && name !== '.' && name !== '..') return undefined;
  const bad = [...new Set(name.replace(/[A-Za-z0-9._-]/g, ''))].map((c) => JSON.stringify(c)).join(' ');
  return bad === '' ? TOPIC_RULE : `${TOPIC_RULE}; it has ${bad}`;
}

/** Why the fixed text of a topic template already makes every rendered topic invalid, or undefined. */
export function topicTemplateProblem(template: Template): string | undefined {
  // The template's fixed text: fields removed, `$${` unescaped.
  const text = template.source.replace(/\$\$\{|\$\{[^}]*\}/g, (m) => (m === '$${' ? '${' : ''));
  if (template.constant) return kafkaTopicProblem(text);
  const bad = [...new Set(text.replace(/[A-Za-z0-9._-]/g, ''))];
  if (bad.length > 0) return `${TOPIC_RULE}; the template's text has ${bad.map((c) => JSON.stringify(c)).join(' ')}`;
  return undefined;
}

/**
 * The topics an `allowedTopics` list lets through: `*` stands for one or more topic
 * characters other than "." (so `iot.*.telemetry` takes `iot.pump-7.telemetry`, not
 * `iot.a.b.telemetry`); everything else is literal.
 */
export function topicAllowList(patterns: readonly string[]): (topic: string) => boolean {
  const regexes = patterns.map(
    (p) =>
      new RegExp(
        `^${p
          .split('*')
          .map((part) => part.replace(/[.]/g, '\\.'))
          .join('[A-Za-z0-9_-]+')}$`,
      ),
  );
  return (topic) => regexes.some((r) => r.test(topic));
}

/** Why `pattern` cannot be an `allowedTopics` entry, or undefined. */
export function allowedTopicProblem(pattern: string): string | undefined {
  if (!/^[A-Za-z0-9._*-]{1,249}$/.test(pattern)) return `${TOPIC_RULE}, with "*" for any run of them but "."`;
  if (pattern.includes('**')) return '"**" is one "*"';
  return undefined;
}

export interface RecordTemplates {
  readonly topic: string;
  /** Patterns the rendered topic must match (topicAllowList); any topic when absent. */
  readonly allowedTopics?: readonly string[] | undefined;
  /** The record key; the message's key, else the device's client id, when absent. */
  readonly key?: string | undefined;
  readonly headers: Readonly<Record<string, string>>;
}

/** A record and the topic it goes to, rendered from one message. */
export interface RenderedRecord {
  readonly topic: string;
  readonly record: KafkaRecord;
}

/**
 * Renders messages into Kafka records: topic, key and headers from their templates. The
 * message's own headers (MQTT 5 user properties, `traceparent`/`tracestate`) pass through;
 * the envelope id travels as `ferry-id` and the MQTT topic as `mqtt-topic`. A message whose
 * template field has no value, or whose topic renders to an invalid Kafka topic name, throws
 * a non-retryable MESSAGE_INVALID FerryError saying why: no retry can write it.
 */
export function recordRenderer(templates: RecordTemplates, filters: readonly string[], component: string): (envelope: Envelope) => RenderedRecord {
  const topic = compileTemplate(templates.topic);
  const allowed = templates.allowedTopics === undefined ? undefined : topicAllowList(templates.allowedTopics);
  const key = templates.key === undefined ? undefined : compileTemplate(templates.key);
  const headers = Object.entries(templates.headers).map(([name, source]) => [name, compileTemplate(source)] as const);
  // Made only for a message refused, not a closure for each message.
  const reject = (envelope: Envelope, reason: string, cause?: unknown) => unwritable(component, envelope, reason, cause);
  // The last topic rendered that passed the checks: most messages go to the topic the one
  // before went to, and the name's regular expression was a per-message cost.
  let lastTopic: string | undefined;
  return (envelope) => {
    const input = { envelope, filters };
    try {
      const name = topic.render(input);
      if (name !== lastTopic) {
        const problem = kafkaTopicProblem(name);
        if (problem !== undefined) throw reject(envelope, `topic '${name}' (from '${templates.topic}') is invalid: ${problem}`);
        if (allowed !== undefined && !allowed(name))
          throw reject(envelope, `topic '${name}' (from '${templates.topic}') is not in allowedTopics (${templates.allowedTopics?.join(', ')})`);
        lastTopic = name;
      }
      const rendered: Record<string, string> = { ...envelope.headers };
      for (const [header, template] of headers) rendered[header] = template.render(input);
      rendered['ferry-id'] = envelope.id;
      rendered['mqtt-topic'] = envelope.topic;
      return {
        topic: name,
        record: {
          key: key === undefined ? (envelope.key ?? envelope.origin.clientId ?? null) : key.render(input),
          value: envelope.payload,
          headers: rendered,
          timestamp: envelope.timestamp,
        },
      };
    } catch (error) {
      if (error instanceof TemplateError) throw reject(envelope, error.message, error);
      throw error;
    }
  };
}

/**
 * The error of a message that no retry can write, for its sink to refuse it alone (it is
 * dead-lettered with this reason while the rest of its batch is written).
 */
export function unwritable(component: string, envelope: Envelope, reason: string, cause?: unknown): FerryError {
  return new FerryError('MESSAGE_INVALID', `${component}: message ${envelope.id} (MQTT topic '${envelope.topic}') cannot be written: ${reason}`, {
    component,
    retryable: false,
    cause,
  });
}
