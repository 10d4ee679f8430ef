import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { z } from 'zod';
import { type BufferPolicy, bufferPolicySchema } from '../buffer/config.ts';
import { type BridgeDefinition, isBridgeDefinition } from '../handler/define.ts';
import type { ConfigIssue } from './issues.ts';
import { type BridgeConfig, type ComponentKinds, bridgeName, oneOf } from './schema.ts';
import { issuesFromZod } from './zod-issues.ts';

/** A bridge defined in TypeScript (`bridges/*.ts`): named sinks and a handler instead of a list of sinks. */
export interface HandlerBridgeConfig {
  readonly name: string;
  readonly description?: string;
  readonly enabled: boolean;
  readonly from: Readonly<Record<string, unknown>>;
  /** Sinks by the name the handler routes outputs to. */
  readonly to: Readonly<Record<string, Readonly<Record<string, unknown>>>>;
  readonly buffer: BufferPolicy;
  readonly file: string;
  readonly handle: BridgeDefinition['handle'];
}

export type AnyBridgeConfig = BridgeConfig | HandlerBridgeConfig;

export function isHandlerBridge(config: AnyBridgeConfig): config is HandlerBridgeConfig {
  return typeof (config as Partial<HandlerBridgeConfig>).handle === 'function';
}

/** Default `buffer.windowSize` of a TypeScript bridge: the most messages its handler holds unacknowledged. */
export const HANDLER_WINDOW = 10_000;

/** The checks a YAML bridge gets, on what `defineBridge` was given. */
export function handlerBridgeSchema(kinds: ComponentKinds) {
  return z.strictObject({
    name: bridgeName,
    description: z.string().optional(),
    enabled: z.boolean().default(true),
    from: oneOf(kinds.sources),
    to: z
      .record(z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'a sink name uses letters, digits, ".", "_" and "-", starting with a letter or digit'), oneOf(kinds.sinks))
      .refine((to) => Object.keys(to).length > 0, 'name at least one sink: to: { name: { kind: {...} } }'),
    // A handler holds messages until the garbage collector finds them released: a deeper
    // window than a YAML bridge's keeps it from waiting on each collection.
    buffer: z.preprocess(
      (value) => (value === undefined || (typeof value === 'object' && value !== null && !Array.isArray(value)) ? { windowSize: HANDLER_WINDOW, ...value } : value),
      bufferPolicySchema.refine((policy) => policy.replay === 'fifo', { path: ['replay'], message: 'a TypeScript bridge reads its buffer in arrival order: use replay: fifo' }),
    ),
    handle: z.custom<BridgeDefinition['handle']>((value) => typeof value === 'function', 'expected a function: handle(messages, tools) { return ... }'),
  });
}

/**
 * Imports a TypeScript bridge and checks its definition with the same schemas as YAML
 * bridges. Problems go to `issues` under the file's name, with the key path and, where it
 * can be found in the text, its line; returns undefined when there are any.
 */
export async function loadBridgeModule(path: string, displayPath: string, kinds: ComponentKinds, issues: ConfigIssue[]): Promise<HandlerBridgeConfig | undefined> {
  const issue = (message: string, keyPath = '') => issues.push({ file: displayPath, line: 0, column: 0, path: keyPath, message });
  let module: { default?: unknown };
  try {
    // The URL names the file's contents: an unchanged file is the module already loaded (a
    // reload keeps its bridge running), an edited one is imported afresh.
    const version = createHash('sha256').update(readFileSync(path)).digest('hex').slice(0, 16);
    module = (await import(`${pathToFileURL(path).href}?v=${version}`)) as { default?: unknown };
  } catch (error) {
    issue(`cannot load this TypeScript bridge: ${describeImportError(error)}`);
    return undefined;
  }
  const definition = module.default;
  if (!isBridgeDefinition(definition)) {
    issue("the default export is not a bridge: write `export default defineBridge({ name, from, to, handle })` with defineBridge from 'ferry'");
    return undefined;
  }
  const result = handlerBridgeSchema(kinds).safeParse(definition);
  if (!result.success) {
    let text = '';
    try {
      text = readFileSync(path, 'utf8');
    } catch {
      // Imported a moment ago; without its text, problems are named without a line.
    }
    const file = { path: displayPath, value: definition as unknown, locate: (keys: readonly PropertyKey[]) => locateKey(text, keys) };
    issues.push(...issuesFromZod(result.error.issues, file));
    return undefined;
  }
  const { name, description, enabled, from, to, buffer, handle } = result.data;
  return {
    name,
    ...(description === undefined ? {} : { description }),
    enabled,
    from: from as HandlerBridgeConfig['from'],
    to: to as HandlerBridgeConfig['to'],
    buffer,
    handle,
    file: displayPath,
  };
}

/**
 * Where a key path of the definition is written in the module's text: each key is looked for
 * after the previous one, as `key:`, `'key':` or `key(`. A best effort for a literal
 * definition (a value built elsewhere has no place); line 0 when the first key is not found.
 */
export function locateKey(text: string, keys: readonly PropertyKey[]): { line: number; column: number } {
  let at = -1;
  let from = text.search(/\bdefineBridge\s*(<[^(]*>)?\s*\(/);
  if (from < 0) from = 0;
  for (const key of keys) {
    if (typeof key !== 'string') continue;
    const escaped = key.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    const pattern = new RegExp(`(?<![\\w$])(['"\`]?)${escaped}\\1\\s*[:(]`, 'g');
    pattern.lastIndex = from;
    const match = pattern.exec(text);
    if (match === null) break;
    at = match.index;
    from = match.index + match[0].length;
  }
  if (at < 0) return { line: 0, column: 0 };
  const before = text.slice(0, at).split('\n');
  return { line: before.length, column: (before.at(-1) as string).length + 1 };
}

function describeImportError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  // Where in the file a syntax error is, when the loader says.
  const where = /\.ts:(\d+)(?::(\d+))?/.exec(error.stack ?? '');
  return where === null || error.name !== 'SyntaxError' ? `${error.name}: ${error.message}` : `${error.name}: ${error.message} (line ${where[1]})`;
}
