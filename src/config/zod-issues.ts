import type { z } from 'zod';
import type { ConfigIssue } from './issues.ts';
import { formatPath } from './issues.ts';
import type { YamlFile } from './yaml-file.ts';

type Issue = z.core.$ZodIssue;

/**
 * How config is parsed: each schema parses a few documents once, at start or reload, where zod's
 * compiled object parsers (built with `new Function` on an object schema's first parse) cost
 * more than they save: without them loading the embedded default took ~80 ms less CPU
 * (docs/benchmarks.md, startup). Per parse, so zod in handlers' own code keeps compiling.
 */
export const ONE_SHOT_PARSE = { jitless: true } as const;

/** Turns zod's issues into positioned config issues, one per problem. */
export function issuesFromZod(issues: readonly Issue[], file: YamlFile): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  for (const issue of issues) collect(issue, [], file, out);
  return out;
}

function collect(issue: Issue, prefix: readonly PropertyKey[], file: YamlFile, out: ConfigIssue[]): void {
  const path = [...prefix, ...issue.path];
  if (issue.code === 'unrecognized_keys') {
    for (const key of issue.keys) {
      const keyPath = [...path, key];
      out.push({ file: file.path, ...file.locate(keyPath, true), path: formatPath(keyPath), message: `unknown key '${key}'` });
    }
    return;
  }
  if (issue.code === 'invalid_union') {
    const branch = chooseBranch(issue.errors, valueAt(file.value, path));
    if (branch !== undefined) {
      for (const inner of branch) collect(inner, path, file, out);
      return;
    }
    const kinds = issue.errors.flatMap((errors) => errors.filter(isMissingKey).map((e) => String(e.path[0])));
    const value = valueAt(file.value, path);
    const named = typeof value === 'object' && value !== null && !Array.isArray(value) ? Object.keys(value) : [];
    const expected = `expected exactly one of: ${kinds.join(', ')}`;
    const message = kinds.length === 0 ? issue.message : named.length === 1 ? `unknown kind '${named[0]}' (${expected})` : expected;
    out.push({ file: file.path, ...file.locate(path), path: formatPath(path), message });
    return;
  }
  const value = valueAt(file.value, path);
  const message =
    issue.code === 'invalid_type' && value === undefined
      ? `missing required key (${issue.message.replace(/^Invalid input: /, '')})`
      : issue.message.replace(/^Invalid input: /, '');
  out.push({ file: file.path, ...file.locate(path), path: formatPath(path), message });
}

/** Among a union's branches, the one whose kind key the value names (a one-key map). */
function chooseBranch(branches: readonly (readonly Issue[])[], value: unknown): readonly Issue[] | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const keys = Object.keys(value);
  if (keys.length !== 1) return undefined;
  return branches.find((errors) => !errors.some((e) => isMissingKey(e) || (e.code === 'unrecognized_keys' && e.path.length === 0)));
}

function isMissingKey(issue: Issue): boolean {
  return issue.code === 'invalid_type' && issue.path.length === 1 && /received undefined/.test(issue.message);
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let node = root;
  for (const key of path) {
    if (typeof node !== 'object' || node === null) return undefined;
    node = (node as Record<PropertyKey, unknown>)[key];
  }
  return node;
}
