import { z } from 'zod';
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
  minimum?: number;
  maximum?: number;
}

/** The config reference in Markdown, made from the schemas so it cannot drift from them. */
export function configReference(kinds: ComponentKinds): string {
  const sections: [string, z.ZodType][] = [
    ['Gateway file (`config/gateway.yaml`)', gatewaySchema],
    ['Bridge files (`bridges/*.yaml`)', bridgeSchema(kinds)],
    ['Device profiles (`devices/*.yaml`)', deviceSchema],
  ];
  return sections
    .map(([title, schema]) => {
      const json = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as JsonSchema;
      const rows = collect(json, '').map(
        (r) => `| \`${r.path}\` | ${r.type} | ${r.fallback} | ${r.description.replace(/\|/g, '\\|').replace(/\n/g, ' ')} |`,
      );
      return `### ${title}\n\n| key | type | default | description |\n|---|---|---|---|\n${rows.join('\n')}\n`;
    })
    .join('\n');
}

interface Row {
  path: string;
  type: string;
  fallback: string;
  description: string;
}

function collect(schema: JsonSchema, prefix: string): Row[] {
  const rows: Row[] = [];
  for (const [key, child] of Object.entries(schema.properties ?? {})) {
    const path = prefix === '' ? key : `${prefix}.${key}`;
    const isRequired = (schema.required ?? []).includes(key) && child.default === undefined;
    const variants = child.anyOf ?? child.items?.anyOf;
    if (variants !== undefined && variants.every((v) => v.properties !== undefined && Object.keys(v.properties).length === 1)) {
      const list = child.items !== undefined ? '[]' : '';
      rows.push({ path, type: list === '' ? 'one of the kinds below' : 'list of the kinds below', fallback: isRequired ? 'required' : '', description: child.description ?? '' });
      for (const variant of variants) {
        const [kind, config] = Object.entries(variant.properties ?? {})[0] as [string, JsonSchema];
        rows.push({ path: `${path}${list}.${kind}`, type: 'map', fallback: '', description: variant.description ?? '' });
        rows.push(...collect(config, `${path}${list}.${kind}`));
      }
      continue;
    }
    if (child.properties !== undefined && child.type === 'object') {
      rows.push(...collect(child, path));
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
