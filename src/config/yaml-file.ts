import { readFileSync } from 'node:fs';
import { Document, LineCounter, Scalar, isMap, isPair, isScalar, isSeq, parse, parseDocument, visit } from 'yaml';
import type { Node } from 'yaml';
import { type Env, hasInterpolation, interpolate } from './interpolate.ts';
import type { ConfigIssue } from './issues.ts';
import { formatPath } from './issues.ts';

/** A parsed YAML file that can say where any key path stands in it. */
export interface YamlFile {
  readonly path: string;
  readonly value: unknown;
  /** Position of a key path: the value's position, or the key's when `atKey`. */
  locate(path: readonly PropertyKey[], atKey?: boolean): { line: number; column: number };
}

export interface YamlLoadResult {
  readonly file?: YamlFile;
  readonly issues: readonly ConfigIssue[];
}

/**
 * Reads and parses a YAML file, interpolating `${VAR}` in values (not keys). A plain
 * (unquoted) scalar that is interpolated is typed again as if its result had been written
 * there (so `port: ${PORT:-1883}` is a number); a quoted one stays a string.
 */
export function loadYamlFile(path: string, displayPath: string, env: Env): YamlLoadResult {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : String(error);
    return { issues: [{ file: displayPath, line: 0, column: 0, path: '', message: reason }] };
  }
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

  visit(doc, {
    Scalar(key, node, ancestry) {
      if (key === 'key' || typeof node.value !== 'string' || !hasInterpolation(node.value)) return;
      const { value, missing } = interpolate(node.value, env);
      const at = position(node.range?.[0] ?? 0);
      for (const name of missing) {
        issues.push({
          file: displayPath,
          ...at,
          path: formatPath(pathOf(ancestry)),
          message: `environment variable ${name} is not set (give a default with \${${name}:-value})`,
        });
      }
      node.value = node.type === Scalar.PLAIN ? retype(value) : value;
    },
  });

  const file: YamlFile = {
    path: displayPath,
    value: doc.toJS(),
    locate: (keyPath, atKey = false) => position(offsetOf(doc, keyPath, atKey)),
  };
  return { file, issues };
}

function retype(value: string): unknown {
  if (value === '') return null;
  try {
    const typed: unknown = parse(value);
    if (typed === null || typeof typed === 'number' || typeof typed === 'boolean') return typed;
  } catch {
    // not a scalar on its own: keep the string
  }
  return value;
}

/** The key path of a node from the ancestry `visit` passes. */
function pathOf(ancestry: readonly unknown[]): PropertyKey[] {
  const out: PropertyKey[] = [];
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
