import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { z } from 'zod';
import { type BufferPolicy, bufferPolicySchema } from '../buffer/config.ts';
import { lazySchema } from '../core/lazy-schema.ts';
import { type BridgeDefinition, isBridgeDefinition } from '../handler/define.ts';
import type { RedisConnections } from '../redis/connection-config.ts';
import { cacheStrippedBridges } from './bridge-cache.ts';
import { ensureTypeScriptLoader, resolveBridgeImportsFromFerry } from './bridge-resolve.ts';
import type { FileDigests } from './file-digests.ts';
import type { ConfigIssue } from './issues.ts';
import { type BridgeConfig, type ComponentKinds, bridgeName, oneOf } from './schema.ts';
import { ONE_SHOT_PARSE, issuesFromZod } from './zod-issues.ts';

/** A bridge defined in TypeScript (`bridges/*.ts`): named sinks and a handler instead of a list of sinks. */
export interface HandlerBridgeConfig {
  readonly name: string;
  readonly description?: string;
  readonly enabled: boolean;
  readonly from: Readonly<Record<string, unknown>>;
  /** Sinks by the name the handler routes outputs to. */
  readonly to: Readonly<Record<string, Readonly<Record<string, unknown>>>>;
  readonly buffer: BufferPolicy;
  /** How long the handler may hold a message before `onHoldTimeout` applies. */
  readonly maxHoldMs: number;
  readonly onHoldTimeout: 'warn' | 'ack' | 'deadLetter';
  readonly file: string;
  readonly handle: BridgeDefinition['handle'];
  /** As a YAML bridge's: the contents of the files its source and sinks name, so that a reload sees one replaced in place. */
  readonly fileDigests?: FileDigests;
  /**
   * The Redis connections of gateway.yaml (`tools.redis(name)`), set by the loader; part of
   * the config so that a reload changing them restarts the bridge with the new settings.
   */
  readonly redis?: RedisConnections;
}

export type AnyBridgeConfig = BridgeConfig | HandlerBridgeConfig;

export function isHandlerBridge(config: AnyBridgeConfig): config is HandlerBridgeConfig {
  return typeof (config as Partial<HandlerBridgeConfig>).handle === 'function';
}

/** Whether an enabled handler bridge is among `bridges`: handlers are the only bridges that reach databases (tools.database), so Kysely is loaded only then. */
export function runsHandlers(bridges: readonly AnyBridgeConfig[]): boolean {
  return bridges.some((bridge) => bridge.enabled && isHandlerBridge(bridge));
}

/** Default `buffer.windowSize` of a TypeScript bridge: the most messages its handler holds unacknowledged. */
export const HANDLER_WINDOW = 10_000;

/** Default `maxHoldMs` of a TypeScript bridge. */
export const DEFAULT_MAX_HOLD_MS = 60_000;

/**
 * One schema per set of kinds while it is in use: a start checks every TypeScript bridge with
 * it (about 50 zod schemas each built anew), then lets it go with the rest of the config's
 * schemas (see src/core/lazy-schema.ts).
 */
const handlerBridgeSchemas = new WeakMap<ComponentKinds, () => ReturnType<typeof buildHandlerBridgeSchema>>();

/** The checks a YAML bridge gets, on what `defineBridge` was given. */
export function handlerBridgeSchema(kinds: ComponentKinds) {
  let schema = handlerBridgeSchemas.get(kinds);
  if (schema === undefined) handlerBridgeSchemas.set(kinds, (schema = lazySchema(() => buildHandlerBridgeSchema(kinds))));
  return schema();
}

function buildHandlerBridgeSchema(kinds: ComponentKinds) {
  return z.strictObject({
    name: bridgeName,
    description: z.string().optional(),
    enabled: z.boolean().default(true),
    from: oneOf(kinds.sources),
    to: z
      .record(z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'a sink name uses letters, digits, ".", "_" and "-", starting with a letter or digit'), oneOf(kinds.sinks))
      // None is allowed: a handler that writes through `tools.database` acks its messages itself (`done()`).
      .default({}),
    // A handler holds messages for a while (windows, caches): the window counts only the
    // messages it holds, and a deeper one than a YAML bridge's leaves room for windows.
    buffer: z.preprocess(
      (value) => (value === undefined || (typeof value === 'object' && value !== null && !Array.isArray(value)) ? { windowSize: HANDLER_WINDOW, ...value } : value),
      bufferPolicySchema().refine((policy) => policy.replay === 'fifo', { path: ['replay'], message: 'a TypeScript bridge reads its buffer in arrival order: use replay: fifo' }),
    ),
    maxHoldMs: z.int().min(100).default(DEFAULT_MAX_HOLD_MS),
    onHoldTimeout: z.enum(['warn', 'ack', 'deadLetter']).default('warn'),
    handle: z.custom<BridgeDefinition['handle']>((value) => typeof value === 'function', 'expected a function: handle(messages, tools) { return ... }'),
  });
}

/**
 * Imports a TypeScript bridge and checks its definition with the same schemas as YAML
 * bridges. Problems go to `issues` under the file's name, with the key path and, where it
 * can be found in the text, its line; returns undefined when there are any.
 */
export async function loadBridgeModule(path: string, displayPath: string, kinds: ComponentKinds, issues: ConfigIssue[]): Promise<HandlerBridgeConfig | undefined> {
  const issue = (message: string, keyPath = '', at = { line: 0, column: 0 }) => issues.push({ file: displayPath, ...at, path: keyPath, message });
  let module: { default?: unknown };
  resolveBridgeImportsFromFerry();
  cacheStrippedBridges();
  try {
    await ensureTypeScriptLoader();
    // The URL names the file's contents: an unchanged file is the module already loaded (a
    // reload keeps its bridge running), an edited one is imported afresh.
    const version = createHash('sha256').update(readFileSync(path)).digest('hex').slice(0, 16);
    module = (await import(`${pathToFileURL(path).href}?v=${version}`)) as { default?: unknown };
  } catch (error) {
    issue(`cannot load this TypeScript bridge: ${describeImportError(error)}`, '', importErrorPlace(error, path));
    return undefined;
  }
  const definition = module.default;
  if (!isBridgeDefinition(definition)) {
    issue("the default export is not a bridge: write `export default defineBridge({ name, from, to, handle })` with defineBridge from 'ferry'");
    return undefined;
  }
  const result = handlerBridgeSchema(kinds).safeParse(definition, ONE_SHOT_PARSE);
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
  const { name, description, enabled, from, to, buffer, maxHoldMs, onHoldTimeout, handle } = result.data;
  const unknownSinks = unknownSinkLiterals(readText(path), Object.keys(to));
  for (const { sink, line, column } of unknownSinks) {
    issue(`'${sink}' names no sink of this bridge (a key of \`to\`): its sinks are ${Object.keys(to).join(', ')}`, 'handle', { line, column });
  }
  if (unknownSinks.length > 0) return undefined;
  return {
    name,
    ...(description === undefined ? {} : { description }),
    enabled,
    from: from as HandlerBridgeConfig['from'],
    to: to as HandlerBridgeConfig['to'],
    buffer,
    maxHoldMs,
    onHoldTimeout,
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

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

/**
 * Sink names written as string literals in `tools.to('x', ...)` or `message.to('x')` that are
 * not sinks of the bridge, with their place: such a typo would otherwise fail only when the
 * first message reaches that line (issue 18). Names built at run time are not checked here.
 */
export function unknownSinkLiterals(text: string, sinks: readonly string[]): { sink: string; line: number; column: number }[] {
  const found: { sink: string; line: number; column: number }[] = [];
  for (const match of text.matchAll(/\.to\(\s*(['"`])([^'"`$\n]*)\1/g)) {
    const sink = match[2] as string;
    if (sinks.includes(sink)) continue;
    const at = (match.index ?? 0) + match[0].indexOf(match[1] as string);
    const before = text.slice(0, at).split('\n');
    found.push({ sink, line: before.length, column: (before.at(-1) as string).length + 1 });
  }
  return found;
}

/** Names `ferry` exports as types only: importing one as a value fails when the module links. */
const TYPE_EXPORTS = ['BridgeDefinition', 'BridgeTools', 'ComponentSpec', 'Message', 'Output', 'OutputInit'];

function describeImportError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const missing = /does not provide an export named '([^']+)'/.exec(error.message)?.[1];
  const hint =
    missing !== undefined && TYPE_EXPORTS.includes(missing) ? ` (${missing} is a type: import it with \`import type { ${missing} }\` or \`import { type ${missing} }\`)` : '';
  return `${error.name}: ${error.message}${hint}`;
}

/**
 * Where in the bridge's own file an import failed, when the loader says (Node puts the file,
 * line and a caret under the place first in a SyntaxError's stack); line 0 otherwise, never
 * a line of Ferry's own code (issue 18).
 */
export function importErrorPlace(error: unknown, path: string): { line: number; column: number } {
  const stack = error instanceof Error ? (error.stack ?? '') : '';
  const lines = stack.split('\n');
  const url = pathToFileURL(path).href;
  for (let i = 0; i < lines.length; i++) {
    const text = lines[i] as string;
    for (const name of [url, path]) {
      const at = text.indexOf(name);
      if (at < 0) continue;
      // The module was imported with a ?v=<content hash> query (see above).
      const match = /^(?:\?[^:\s]*)?:(\d+)(?::(\d+))?/.exec(text.slice(at + name.length));
      if (match === null) continue;
      // A caret line two below the file line marks the column.
      const caret = text === lines[0] ? (lines[i + 2] ?? '').indexOf('^') : -1;
      const column = match[2] !== undefined ? Number(match[2]) : caret >= 0 ? caret + 1 : 0;
      return { line: Number(match[1]), column };
    }
  }
  return { line: 0, column: 0 };
}
