import { z } from 'zod';
import { transformStepSchema } from '../core/transform-config.ts';
import { bridgeSchema, type ComponentKinds, deviceSchema, gatewaySchema } from './schema.ts';

interface JsonSchema {
  type?: string | string[];
  description?: string;
  default?: unknown;
  examples?: unknown[];
  enum?: unknown[];
  properties?: Record<string, JsonSchema>;
  required?: string[];
  items?: JsonSchema;
  anyOf?: JsonSchema[];
  additionalProperties?: JsonSchema | boolean;
  minimum?: number;
  maximum?: number;
}

/** One kind a bridge can name (a source, a sink, a transform step), as its reference page shows it. */
export interface KindReference {
  readonly kind: string;
  readonly description: string;
  /** The table of its settings, keys relative to the kind (`topics`, `tls.ca`). */
  readonly table: string;
  /**
   * A smallest config: its required settings with their schema examples (`...` where a
   * setting has none), or, when nothing is required, its first setting that has an example.
   */
  readonly example: Readonly<Record<string, unknown>>;
}

/** Where a table row links a kind to its page instead of listing its settings in place. */
export type KindLink = (list: 'from' | 'to' | 'transform', kind: string) => string;

/**
 * The config files' references in Markdown (title and table), made from the schemas so they
 * cannot drift from them. With `kindLink`, the bridge file's sources, sinks and transform
 * steps are rows linking to their own pages; without it their settings are listed in place.
 */
export function fileReferences(kinds: ComponentKinds, kindLink?: KindLink): { readonly file: 'gateway' | 'bridge' | 'device'; readonly title: string; readonly table: string }[] {
  return [
    { file: 'gateway', title: 'Gateway file (`config/gateway.yaml`)', table: schemaTable(gatewaySchema()) },
    { file: 'bridge', title: 'Bridge files (`bridges/*.yaml`)', table: schemaTable(bridgeSchema(kinds), kindLink) },
    { file: 'device', title: 'Device profiles (`devices/*.yaml`)', table: schemaTable(deviceSchema()) },
  ];
}

/** Every source, sink and transform step a bridge can name, each with the table of its settings. */
export function kindReferences(kinds: ComponentKinds): { readonly sources: KindReference[]; readonly sinks: KindReference[]; readonly transforms: KindReference[] } {
  const component = (c: { kind: string; description: string; schema: z.ZodType }): KindReference => {
    const json = jsonSchemaOf(c.schema);
    return { kind: c.kind, description: c.description, table: tableOf(collect(json, '')), example: exampleOf(json) };
  };
  // A step is a one-key map (`keep: [fields]`): its table keeps the key, which is the setting.
  const transforms = (jsonSchemaOf(transformStepSchema()).anyOf ?? []).map((step) => {
    const [kind, config] = Object.entries(step.properties ?? {})[0] as [string, JsonSchema];
    const example = config.properties === undefined ? (config.examples?.[0] ?? '...') : exampleOf(config);
    return { kind, description: step.description ?? '', table: tableOf(collect(step, '')), example: { [kind]: example } };
  });
  return { sources: kinds.sources.map(component), sinks: kinds.sinks.map(component), transforms };
}

function exampleOf(schema: JsonSchema): Record<string, unknown> {
  const properties = Object.entries(schema.properties ?? {});
  const required = properties.filter(([key, child]) => (schema.required ?? []).includes(key) && child.default === undefined);
  if (required.length > 0) return Object.fromEntries(required.map(([key, child]) => [key, child.examples?.[0] ?? '...']));
  const first = properties.find(([, child]) => child.examples !== undefined);
  return first === undefined ? {} : { [first[0]]: first[1].examples?.[0] };
}

function schemaTable(schema: z.ZodType, kindLink?: KindLink): string {
  return tableOf(collect(jsonSchemaOf(schema), '', kindLink));
}

function jsonSchemaOf(schema: z.ZodType): JsonSchema {
  return z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as JsonSchema;
}

function tableOf(rows: readonly Row[]): string {
  const lines = rows.map((r) => `| \`${r.path}\` | ${r.type} | ${r.fallback} | ${r.description.replace(/\|/g, '\\|').replace(/\n/g, ' ')} |`);
  return `| key | type | default | description |\n|---|---|---|---|\n${lines.join('\n')}\n`;
}

interface Row {
  path: string;
  type: string;
  fallback: string;
  description: string;
}

function collect(schema: JsonSchema, prefix: string, kindLink?: KindLink): Row[] {
  const rows: Row[] = [];
  for (const [key, child] of Object.entries(schema.properties ?? {})) {
    const path = prefix === '' ? key : `${prefix}.${key}`;
    const isRequired = (schema.required ?? []).includes(key) && child.default === undefined;
    const variants = child.anyOf ?? child.items?.anyOf;
    if (variants?.every((v) => v.properties !== undefined && Object.keys(v.properties).length === 1)) {
      const list = child.items !== undefined ? '[]' : '';
      rows.push({ path, type: list === '' ? 'one of the kinds below' : 'list of the kinds below', fallback: isRequired ? 'required' : '', description: child.description ?? '' });
      for (const variant of variants) {
        const [kind, config] = Object.entries(variant.properties ?? {})[0] as [string, JsonSchema];
        const description = variant.description ?? '';
        if (kindLink !== undefined && prefix === '' && (key === 'from' || key === 'to' || key === 'transform')) {
          rows.push({ path: `${path}${list}.${kind}`, type: 'map', fallback: '', description: `${description} [Settings](${kindLink(key, kind)}).` });
          continue;
        }
        rows.push({ path: `${path}${list}.${kind}`, type: 'map', fallback: '', description });
        rows.push(...collect(config, `${path}${list}.${kind}`));
      }
      continue;
    }
    if (child.properties !== undefined && child.type === 'object') {
      rows.push(...collect(child, path, kindLink));
      continue;
    }
    const entry = child.additionalProperties;
    if (prefix === '' && child.type === 'object' && typeof entry === 'object' && entry.properties !== undefined) {
      // Settings by name at the top of a file (the Redis connections): the map, then the keys of each entry.
      rows.push({
        path,
        type: 'map of names to maps',
        fallback: child.default !== undefined ? `\`${JSON.stringify(child.default)}\`` : '',
        description: [child.description ?? '', examples(child)].filter((s) => s !== '').join(' '),
      });
      rows.push(...collect(entry, `${path}.<name>`));
      continue;
    }
    if (child.type === 'array' && child.items?.properties !== undefined) {
      // A list of maps (a device profile's credentials): the list, then each entry's keys.
      rows.push({
        path,
        type: 'list of maps',
        fallback: child.default !== undefined ? `\`${JSON.stringify(child.default)}\`` : isRequired ? 'required' : '',
        description: child.description ?? '',
      });
      rows.push(...collect(child.items, `${path}[]`));
      continue;
    }
    rows.push({
      path,
      type: typeOf(child),
      fallback: child.default !== undefined ? `\`${JSON.stringify(child.default)}\`` : isRequired ? 'required' : '',
      description: [child.description ?? '', examples(child)].filter((s) => s !== '').join(' '),
    });
  }
  return rows;
}

function typeOf(schema: JsonSchema): string {
  if (schema.enum !== undefined) return schema.enum.map((v) => `\`${String(v)}\``).join(' \\| ');
  if (schema.anyOf !== undefined) return [...new Set(schema.anyOf.map(typeOf))].join(' or ');
  if (schema.type === 'array') return `list of ${schema.items === undefined ? 'values' : typeOf(schema.items)}`;
  if (schema.type === 'integer' && schema.minimum !== undefined && schema.maximum !== undefined && schema.maximum <= 65535) {
    return `integer ${schema.minimum}–${schema.maximum}`;
  }
  if (schema.type === 'object') return 'map';
  return Array.isArray(schema.type) ? schema.type.join(' or ') : (schema.type ?? 'any');
}

function examples(schema: JsonSchema): string {
  const first = schema.examples?.[0];
  if (first === undefined || (schema.default !== undefined && JSON.stringify(first) === JSON.stringify(schema.default))) return '';
  return `Example: \`${JSON.stringify(first)}\`.`;
}
