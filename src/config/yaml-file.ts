import { readFileSync, statSync } from 'node:fs';
import { type Alias, type Document, LineCounter, Scalar, isAlias, isMap, isPair, isScalar, isSeq, parse, parseDocument, visit } from 'yaml';
import type { Node } from 'yaml';
import { type Env, hasInterpolation, interpolate, variablesOf } from './interpolate.ts';
import type { ConfigIssue } from './issues.ts';
import { formatPath } from './issues.ts';

/** A parsed YAML file that can say where any key path stands in it. */
export interface YamlFile {
  readonly path: string;
  readonly value: unknown;
  /**
   * The plain (unquoted) values that an interpolated `${VAR}` made a number, a boolean or null,
   * with the text they were interpolated to: a field that takes a string gets that text
   * instead (`validateFile`).
   */
  readonly typedTexts?: readonly TypedText[];
  /**
   * The values an interpolated `${VAR}` left a string (quoted, `port: "${PORT}"`, or text YAML
   * reads as no number, boolean or null): a number or boolean setting takes the number or
   * boolean the text reads as (`validateFile`).
   */
  readonly interpolatedTexts?: readonly TypedText[];
  /** Position of a key path: the value's position, or the key's when `atKey`. */
  locate(path: readonly PropertyKey[], atKey?: boolean): { line: number; column: number };
}

export interface TypedText {
  readonly path: readonly (string | number)[];
  readonly text: string;
  /** The variables the value was made from, in order: a setting that refuses it names them (not their values, which may be secret). */
  readonly variables: readonly string[];
}

export interface YamlLoadResult {
  readonly file?: YamlFile;
  readonly issues: readonly ConfigIssue[];
}

/** The largest config file (gateway, bridge, device profile) read: a larger one is a config error, not a parse that takes the gateway's memory. */
export const MAX_CONFIG_BYTES = 4 * 1024 * 1024;

/**
 * yaml's `maxAliasCount` (its default, set here so it cannot change unnoticed): an alias bomb
 * (anchors of lists of aliases of anchors...) is refused as a config error instead of expanding.
 */
const MAX_ALIAS_COUNT = 100;

/**
 * Reads and parses a YAML file, interpolating `${VAR}` in values (not keys). A plain
 * (unquoted) scalar that is interpolated is typed again as if its result had been written
 * there (so `port: ${PORT:-1883}` is a number), and its text is kept in `typedTexts` for the
 * fields that take a string; a quoted one stays a string, kept in `interpolatedTexts` for the
 * fields that take a number or boolean.
 */
export function loadYamlFile(path: string, displayPath: string, env: Env): YamlLoadResult {
  const whole = (message: string): YamlLoadResult => ({ issues: [{ file: displayPath, line: 0, column: 0, path: '', message }] });
  let text: string;
  try {
    const size = statSync(path).size;
    if (size > MAX_CONFIG_BYTES) return whole(`the file is ${size} bytes; a config file may have at most ${MAX_CONFIG_BYTES} (4 MiB)`);
    text = readFileSync(path, 'utf8');
  } catch (error) {
    return whole((error as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : String(error));
  }
  if (Buffer.byteLength(text) > MAX_CONFIG_BYTES) return whole(`the file has more than ${MAX_CONFIG_BYTES} bytes (4 MiB), the most a config file may have`);
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const issues: ConfigIssue[] = [];
  const position = (offset: number) => {
    const { line, col } = lineCounter.linePos(offset);
    return { line, column: col };
  };
  for (const error of doc.errors) {
    const firstLine = error.message.split('\n')[0] ?? error.message;
    issues.push({ file: displayPath, ...position(error.pos[0]), path: '', message: `YAML: ${firstLine}` });
  }
  if (issues.length > 0) return { issues };

  const typedTexts: TypedText[] = [];
  const interpolatedTexts: TypedText[] = [];
  // Each interpolated scalar, for the aliases that repeat it elsewhere (`b: *id`).
  const interpolated = new Map<Node, Omit<TypedText, 'path'> & { readonly typed: boolean }>();
  const aliases: { readonly alias: Alias; readonly path: (string | number)[] }[] = [];
  visit(doc, {
    Alias(key, node, ancestry) {
      // A key is not interpolated: an alias used as one is no place of the value it repeats.
      if (key !== 'key') aliases.push({ alias: node, path: pathOf([...ancestry, node]) });
    },
    Scalar(key, node, ancestry) {
      if (key === 'key' || typeof node.value !== 'string' || !hasInterpolation(node.value)) return;
      const written = node.value;
      const { value, missing } = interpolate(written, env);
      const at = position(node.range?.[0] ?? 0);
      const path = pathOf([...ancestry, node]);
      for (const name of missing) {
        issues.push({
          file: displayPath,
          ...at,
          path: formatPath(path),
          message: `environment variable ${name} is not set (give a default with \${${name}:-value})`,
        });
      }
      const typed = node.type === Scalar.PLAIN ? retype(value) : value;
      const variables = variablesOf(written, env);
      if (typeof typed !== 'string') typedTexts.push({ path, text: value, variables });
      // Text with only `$${` (no variable) is as written: `port: "$${PORT}"` is no number.
      else if (variables.length > 0) interpolatedTexts.push({ path, text: value, variables });
      if (typeof typed !== 'string' || variables.length > 0) interpolated.set(node, { text: value, variables, typed: typeof typed !== 'string' });
      node.value = typed;
    },
  });

  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (error) {
    // yaml throws a ReferenceError for an alias bomb ("Excessive alias count...") or an alias
    // that cannot be resolved; either is a problem of the file, reported like a syntax error.
    if (!(error instanceof ReferenceError)) throw error;
    return whole(`YAML: aliases expand too far (${error.message})`);
  }
  // After toJS, which refused an alias bomb: the walk below is as bounded as its expansion.
  for (const { alias, path } of aliases) {
    for (const [node, relative] of scalarsUnder(alias, doc)) {
      const found = interpolated.get(node);
      if (found === undefined) continue;
      const { typed, ...text } = found;
      (typed ? typedTexts : interpolatedTexts).push({ path: [...path, ...relative], ...text });
    }
  }
  const file: YamlFile = {
    path: displayPath,
    value,
    typedTexts,
    interpolatedTexts,
    locate: (keyPath, atKey = false) => position(offsetOf(doc, keyPath, atKey)),
  };
  return { file, issues };
}

/** What `value` is when written unquoted in YAML: a number, boolean or null, else the text itself. */
export function retype(value: string): unknown {
  if (value === '') return null;
  try {
    const typed: unknown = parse(value);
    if (typed === null || typeof typed === 'number' || typeof typed === 'boolean') return typed;
  } catch {
    // not a scalar on its own: keep the string
  }
  return value;
}

/** The scalars a node holds (through aliases too), each with its key path below the node. */
function* scalarsUnder(node: unknown, doc: Document, path: (string | number)[] = []): Generator<[Node, (string | number)[]]> {
  if (isAlias(node)) yield* scalarsUnder(node.resolve(doc), doc, path);
  else if (isScalar(node)) yield [node, path];
  else if (isMap(node)) {
    for (const pair of node.items) if (isScalar(pair.key)) yield* scalarsUnder(pair.value, doc, [...path, String(pair.key.value)]);
  } else if (isSeq(node)) {
    for (let i = 0; i < node.items.length; i++) yield* scalarsUnder(node.items[i], doc, [...path, i]);
  }
}

/** The key path of a node from the ancestry `visit` passes, the node itself last. */
function pathOf(ancestry: readonly unknown[]): (string | number)[] {
  const out: (string | number)[] = [];
  for (let i = 0; i < ancestry.length; i++) {
    const item = ancestry[i];
    if (isPair(item) && isScalar(item.key)) out.push(String(item.key.value));
    else if (isSeq(item)) {
      const child = ancestry[i + 1];
      const index = item.items.indexOf(child as never);
      if (index >= 0) out.push(index);
    }
  }
  return out;
}

function offsetOf(doc: Document, keyPath: readonly PropertyKey[], atKey: boolean): number {
  let node: unknown = doc.contents;
  let offset = (doc.contents as Node | null)?.range?.[0] ?? 0;
  for (let i = 0; i < keyPath.length; i++) {
    const key = keyPath[i];
    const last = i === keyPath.length - 1;
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(key));
      if (pair === undefined) return offset;
      const keyNode = pair.key as Node;
      const valueNode = pair.value as Node | null;
      if (last && atKey) return keyNode.range?.[0] ?? offset;
      offset = valueNode?.range?.[0] ?? keyNode.range?.[0] ?? offset;
      node = valueNode;
    } else if (isSeq(node) && typeof key === 'number') {
      const item = node.items[key] as Node | undefined;
      if (item === undefined) return offset;
      offset = item.range?.[0] ?? offset;
      node = item;
    } else {
      return offset;
    }
  }
  return offset;
}
