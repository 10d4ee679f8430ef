import type { Envelope } from './envelope.ts';
import { isRawJson, parseExactJson } from './exact-json.ts';
import { FerryError } from './errors.ts';
import { sharedCaptures, type TopicCaptures } from './topic-captures.ts';

/**
 * Message templates: text with `${...}` fields rendered per message, for Kafka topics, keys
 * and headers, for MQTT topics of commands and for the column values of Postgres rows.
 *
 * | field | value |
 * |---|---|
 * | `${1}`, `${2}`, ... | the level matched by the 1st, 2nd, ... `+` of the source's topic filter |
 * | `${#}` | the levels matched by the filter's trailing `#`, joined by `/` |
 * | `${topic}` | the whole MQTT topic |
 * | `${clientId}`, `${username}` | the publishing device's identity |
 * | `${key}` | the message key (a Kafka record's key) |
 * | `${header.NAME}` | a header (Kafka header, MQTT 5 user property) |
 * | `${payload.a.b}` | a field of the JSON payload (`a.b` is a path; `0` indexes arrays) |
 * | `${payload}` | the whole payload (as UTF-8 text when rendered into text) |
 * | `${id}` | the message's id (its UUIDv7, assigned at ingress; made from a Kafka record or an outbox row) |
 * | `${timestamp}` | when the message arrived, in milliseconds since the epoch |
 *
 * `$${` is a literal `${`. Environment variables (upper-case names) are replaced when the
 * config is loaded, before templates are compiled.
 *
 * Rendered as an MQTT topic (`renderTopic`), a field's value stays within the topic level it
 * stands in: device data (a payload field, a header, a key) must not add levels, wildcards or
 * control characters to the topic an MQTT sink publishes to (issue 16, item 4), nor be empty.
 */
export type TemplateField =
  | { readonly kind: 'capture'; readonly index: number }
  | { readonly kind: 'rest' }
  | { readonly kind: 'topic' | 'clientId' | 'username' | 'key' | 'id' | 'timestamp' }
  | { readonly kind: 'header'; readonly name: string }
  /** A field of the JSON payload; an empty path is the whole payload, as it arrived. */
  | { readonly kind: 'payload'; readonly path: readonly string[] };

type Part = string | TemplateField;

export interface Template {
  readonly source: string;
  readonly fields: readonly TemplateField[];
  /** True when the template has no fields: it renders the same text for every message. */
  readonly constant: boolean;
  /**
   * The field when the template is that one field and no text (`${payload.celsius}`), so that
   * a caller can take the field's value with its type (MessageFields.raw) instead of text.
   */
  readonly single: TemplateField | undefined;
  /**
   * Renders the template for one message; throws a TemplateError when a field has no value.
   * Templates rendered for the same message can share a MessageFields, which parses the
   * payload once.
   */
  render(message: TemplateInput | MessageFields): string;
  /**
   * Renders the template as an MQTT topic. Each field's value must stay one topic level: a `/`,
   * `+`, `#`, NUL or control character (U+0001-U+001F, U+007F-U+009F) in it is refused with a
   * TemplateError, or with `escape` percent-encoded (as is `%`, so the encoding can be undone).
   * `${topic}` and `${#}` are MQTT topic levels already and keep their `/`; the rest applies.
   * An empty value is refused with a TemplateError, also with `escape`.
   */
  renderTopic(message: TemplateInput | MessageFields, unsafe: UnsafeTopicValues): string;
}

/** What an MQTT sink does with a field value that would not stay within its topic level. */
export type UnsafeTopicValues = 'refuse' | 'escape';

/** What a template reads from a message: its envelope and the source's topic filters. */
export interface TemplateInput {
  readonly envelope: Envelope;
  /** The filters of the source; captures come from the first one matching the topic. */
  readonly filters: readonly string[];
}

export class TemplateError extends Error {
  override readonly name = 'TemplateError';
}

const decoder = new TextDecoder();
const FIELD = /\$\$\{|\$\{([^}]*)\}/g;

/** Compiles a template; throws a FerryError (CONFIG_INVALID) naming the bad field. */
export function compileTemplate(source: string): Template {
  const parts: Part[] = [];
  let last = 0;
  for (const match of source.matchAll(FIELD)) {
    const text = source.slice(last, match.index);
    last = match.index + match[0].length;
    if (match[0] === '$${') {
      parts.push(`${text}\${`);
      continue;
    }
    if (text !== '') parts.push(text);
    parts.push(parseField(match[1] as string, source));
  }
  if (source.includes('${', last)) throw invalid(source, 'a `${` is not closed by `}`');
  if (last < source.length) parts.push(source.slice(last));
  const merged = mergeText(parts);
  const fields = merged.filter((p): p is TemplateField => typeof p !== 'string');
  const render = (message: TemplateInput | MessageFields, unsafe?: UnsafeTopicValues) => {
    if (fields.length === 0) return merged.length === 0 ? '' : (merged[0] as string);
    const context = message instanceof MessageFields ? message : new MessageFields(message);
    let out = '';
    for (const part of merged) {
      if (typeof part === 'string') out += part;
      else if (unsafe === undefined) out += context.text(part, source);
      else out += topicValue(part, context.text(part, source), unsafe, source);
    }
    return out;
  };
  return {
    source,
    fields,
    constant: fields.length === 0,
    single: merged.length === 1 && typeof merged[0] !== 'string' ? merged[0] : undefined,
    render: (message) => render(message),
    renderTopic: (message, unsafe) => render(message, unsafe),
  };
}

/** Characters a field value may not bring into a topic level: separators, wildcards, NUL and control characters. */
const NOT_IN_LEVEL = /[/+#\u0000-\u001f\u007f-\u009f]/;
/** The same, without `/`, for `${topic}` and `${#}`, which span levels. */
const NOT_IN_LEVELS = /[+#\u0000-\u001f\u007f-\u009f]/;
const ESCAPE_LEVEL = /[%/+#\u0000-\u001f\u007f-\u009f]/g;
const ESCAPE_LEVELS = /[+#\u0000-\u001f\u007f-\u009f]/g;

function topicValue(field: TemplateField, value: string, unsafe: UnsafeTopicValues, source: string): string {
  // `devices/${key}/commands` with an empty key is `devices//commands`: a valid topic that
  // addresses nothing (and that a subscriber of `devices/+/commands` still gets). Escaping
  // cannot give an empty value a meaning, so it is refused either way.
  if (value === '') {
    throw new TemplateError(`template '${source}': ${describeField(field)} is empty: a value from the message must not be empty (the topic would address nothing)`);
  }
  const levels = field.kind === 'topic' || field.kind === 'rest';
  if (unsafe === 'escape') return value.replace(levels ? ESCAPE_LEVELS : ESCAPE_LEVEL, (c) => encodeURIComponent(c));
  const bad = (levels ? NOT_IN_LEVELS : NOT_IN_LEVEL).exec(value);
  if (bad === null) return value;
  throw new TemplateError(
    `template '${source}': ${describeField(field)} is ${JSON.stringify(value.length > 100 ? `${value.slice(0, 100)}...` : value)}, which has ${describeCharacter(bad[0])}: a value from the message must stay within its topic level`,
  );
}

function describeCharacter(c: string): string {
  if (c === '/') return "'/' (it would add topic levels)";
  if (c === '+' || c === '#') return `'${c}' (a wildcard)`;
  if (c === '\u0000') return 'NUL';
  return `a control character (U+${c.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')})`;
}

/** The part of a zod refinement context that `refineTemplate` reports to. */
export interface TemplateIssues {
  addIssue(issue: { code: 'custom'; message: string }): void;
}

/**
 * Compiles a template inside a zod `superRefine` of a sink's schema: a template that does not
 * compile becomes an issue at the field's path and the result is undefined, so the caller can
 * check more of a template that compiled. Only FerryErrors are config problems; anything
 * else is a bug and is thrown.
 */
export function refineTemplate(source: string, ctx: TemplateIssues): Template | undefined {
  try {
    return compileTemplate(source);
  } catch (error) {
    if (!(error instanceof FerryError)) throw error;
    ctx.addIssue({ code: 'custom', message: error.message });
    return undefined;
  }
}

/**
 * Why `template` cannot be rendered for messages of the topic filters `filters`, or
 * undefined when it can: `${2}` needs a second `+` in every filter, `${#}` a trailing `#`.
 */
export function templateFilterProblem(template: Template, filters: readonly string[]): string | undefined {
  for (const field of template.fields) {
    for (const filter of filters) {
      const levels = filter.split('/');
      if (field.kind === 'capture') {
        const pluses = levels.filter((l) => l === '+').length;
        if (field.index > pluses) {
          return `\${${field.index}} needs a ${ordinal(field.index)} '+' wildcard, but the filter '${filter}' has ${pluses === 0 ? 'none' : pluses}`;
        }
      }
      if (field.kind === 'rest' && levels.at(-1) !== '#') return `\${#} needs a filter ending in '#', but '${filter}' does not`;
    }
  }
  return undefined;
}

/** Names a field as written, for messages. */
export function describeField(field: TemplateField): string {
  switch (field.kind) {
    case 'capture':
      return `\${${field.index}}`;
    case 'rest':
      return '${#}';
    case 'header':
      return `\${header.${field.name}}`;
    case 'payload':
      return field.path.length === 0 ? '${payload}' : `\${payload.${field.path.join('.')}}`;
    default:
      return `\${${field.kind}}`;
  }
}

function parseField(body: string, source: string): TemplateField {
  const name = body.trim();
  if (/^[1-9][0-9]*$/.test(name)) return { kind: 'capture', index: Number(name) };
  if (name === '#') return { kind: 'rest' };
  if (name === 'topic' || name === 'clientId' || name === 'username' || name === 'key' || name === 'id' || name === 'timestamp') return { kind: name };
  if (name === 'payload') return { kind: 'payload', path: [] };
  if (name.startsWith('header.') && name.length > 'header.'.length) return { kind: 'header', name: name.slice('header.'.length) };
  if (name.startsWith('payload.')) {
    const path = name.slice('payload.'.length).split('.');
    if (path.every((p) => p !== '')) return { kind: 'payload', path };
  }
  throw invalid(
    source,
    `unknown field \${${body}}: use \${1}..\${n} (the filter's + wildcards), \${#}, \${topic}, \${clientId}, \${username}, \${key}, \${header.NAME}, \${payload.FIELD}, \${payload}, \${id} or \${timestamp}` +
      (/^[A-Z_][A-Z0-9_]*$/.test(name) ? ` (an environment variable \${${name}} is replaced at load time, so this one was not set)` : ''),
  );
}

function invalid(source: string, reason: string): FerryError {
  return new FerryError('CONFIG_INVALID', `template '${source}': ${reason}`);
}

function mergeText(parts: readonly Part[]): Part[] {
  const out: Part[] = [];
  for (const part of parts) {
    const prev = out.at(-1);
    if (typeof part === 'string' && typeof prev === 'string') out[out.length - 1] = prev + part;
    else out.push(part);
  }
  return out;
}

function ordinal(n: number): string {
  const suffix = n % 100 >= 11 && n % 100 <= 13 ? 'th' : (['th', 'st', 'nd', 'rd'][n % 10] ?? 'th');
  return `${n}${suffix}`;
}

/** A JSON value as JSON.parse makes it. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** A field's value with its type kept (MessageFields.raw); undefined when the message has none. */
export type RawFieldValue = string | number | Uint8Array | JsonValue | undefined;

/**
 * One message's field values for templates, computed when first asked and kept: wildcard
 * captures and the parsed payload. Templates rendered for the same message share one.
 */
export class MessageFields {
  readonly #input: TemplateInput;
  #levels: TopicCaptures | undefined;
  #json: { value: unknown } | undefined;

  constructor(input: TemplateInput) {
    this.#input = input;
  }

  /**
   * A field's value with its type: the timestamp as a number, the whole payload as its bytes,
   * a payload field as its JSON value (any JSON type), the others as strings. Undefined when
   * the message has no value for it (no client id, no such header or payload field). Throws
   * a TemplateError when a payload field is asked of a payload that is not JSON.
   */
  raw(field: TemplateField): RawFieldValue {
    const { envelope } = this.#input;
    switch (field.kind) {
      case 'topic':
        return envelope.topic;
      case 'id':
        return envelope.id;
      case 'timestamp':
        return envelope.timestamp;
      case 'clientId':
      case 'username':
        return envelope.origin[field.kind];
      case 'key':
        return envelope.key;
      case 'header':
        return envelope.headers[field.name];
      case 'capture':
        return this.#captures().captures[field.index - 1];
      case 'rest':
        return this.#captures().rest;
      case 'payload': {
        if (field.path.length === 0) return envelope.payload;
        let value = this.#payload();
        for (const step of field.path) {
          if (value === null || typeof value !== 'object') return undefined;
          value = (value as Record<string, unknown>)[step];
        }
        return value as JsonValue | undefined;
      }
    }
  }

  /** A field as text in a template's output; throws a TemplateError when it has no value. */
  text(field: TemplateField, source: string): string {
    const { envelope } = this.#input;
    const missing = (what: string) => new TemplateError(`template '${source}': ${describeField(field)} has no value: ${what}`);
    switch (field.kind) {
      case 'topic':
      case 'id':
        return envelope[field.kind];
      case 'timestamp':
        return String(envelope.timestamp);
      case 'clientId':
      case 'username': {
        const value = envelope.origin[field.kind];
        if (value === undefined) throw missing(`the message has no ${field.kind}`);
        return value;
      }
      case 'key':
        if (envelope.key === undefined) throw missing('the message has no key');
        return envelope.key;
      case 'header': {
        const value = envelope.headers[field.name];
        if (value === undefined) throw missing(`the message has no header '${field.name}'`);
        return value;
      }
      case 'capture': {
        const value = this.#captures().captures[field.index - 1];
        if (value === undefined) throw missing(`topic '${envelope.topic}' matches no filter with ${field.index} '+' wildcards`);
        return value;
      }
      case 'rest': {
        const value = this.#captures().rest;
        if (value === undefined) throw missing(`topic '${envelope.topic}' matches no filter ending in '#'`);
        return value;
      }
      case 'payload': {
        if (field.path.length === 0) return decoder.decode(envelope.payload);
        const value = this.raw(field);
        // A number a double cannot hold, as the device wrote it.
        if (isRawJson(value)) return value.rawJSON;
        if (value === undefined || value === null || typeof value === 'object') {
          throw missing(`the payload field '${field.path.join('.')}' is ${value === undefined ? 'absent' : 'not a string, number or boolean'}`);
        }
        return String(value);
      }
    }
  }

  #payload(): unknown {
    if (this.#json === undefined) {
      try {
        // Numbers a double cannot hold (a 64-bit serial, a nanosecond timestamp) keep their
        // source text: a field renders as the device wrote it, not rounded.
        this.#json = { value: parseExactJson(decoder.decode(this.#input.envelope.payload)).value };
      } catch (error) {
        throw new TemplateError(`the payload is not JSON (${(error as Error).message}), so payload fields cannot be rendered`);
      }
    }
    return this.#json.value;
  }

  #captures(): TopicCaptures {
    return (this.#levels ??= sharedCaptures(this.#input.filters, this.#input.envelope.topic));
  }
}
