import type { z } from 'zod';
import { type TypedText, type YamlFile, retype } from './yaml-file.ts';
import { ONE_SHOT_PARSE } from './zod-issues.ts';

type Issue = z.core.$ZodIssue;

export interface Validated<T> {
  readonly result: z.ZodSafeParseResult<T>;
  /** The file as validated: its value has the texts that string fields took (see below). */
  readonly file: YamlFile;
}

/**
 * Validates a loaded file with its schema. An unquoted `${VAR}` is typed as its value would be
 * if written there (`port: ${PORT}` with PORT=1883 is the number 1883), but a field that takes
 * a string gets the variable's text as it is: `token: ${TOKEN}` with TOKEN=0123 is "0123", not
 * 123, and TOKEN=true, null or ~ are those words. A quoted one (`port: "${PORT}"`) is text, but
 * a field that takes a number or a boolean (and no string) gets the number or boolean the text
 * reads as unquoted, as the editor schema lets it be written (json-schema.ts). Which fields take
 * what is the schema's answer: where it refuses a value and expects a string (or one of some
 * strings), or a number or boolean that the text reads as, the value is changed and the file
 * validated again, until no such value is left. A value from a `${VAR}` that a number or boolean
 * setting still refuses is reported naming the variables, not their values (they may be secret).
 */
export function validateFile<S extends z.ZodType>(file: YamlFile, schema: S): Validated<z.output<S>> {
  let value: unknown = file.value ?? {};
  let result = schema.safeParse(value, ONE_SHOT_PARSE);
  const typed = byPath(file.typedTexts);
  const texts = byPath(file.interpolatedTexts);
  while (!result.success && (typed.size > 0 || texts.size > 0)) {
    const issues = result.error.issues;
    const changes: [TypedText, unknown][] = [];
    for (const t of typed.values()) if (wantsValue(issues, [], t.path, t.text)) changes.push([t, t.text]);
    for (const t of texts.values()) {
      const read = retype(t.text);
      if ((typeof read === 'number' || typeof read === 'boolean') && wantsValue(issues, [], t.path, read)) changes.push([t, read]);
    }
    if (changes.length === 0) break;
    for (const [t, changed] of changes) {
      value = withValueAt(value, t.path, changed);
      typed.delete(key(t.path));
      texts.delete(key(t.path));
    }
    result = schema.safeParse(value, ONE_SHOT_PARSE);
  }
  // Those left are as interpolated: a refused one is reported naming its variables.
  if (!result.success) nameVariables(result.error.issues, new Map([...typed, ...texts]));
  return { result, file: value === file.value ? file : { ...file, value } };
}

function byPath(texts: readonly TypedText[] | undefined): Map<string, TypedText> {
  return new Map((texts ?? []).map((t) => [key(t.path), t]));
}

function key(path: readonly PropertyKey[]): string {
  return JSON.stringify(path);
}

/**
 * Whether an issue at `path` (in a union's branches too) says a value of `wanted`'s type
 * (string, number, boolean), or `wanted` itself, was expected there.
 */
function wantsValue(issues: readonly Issue[], prefix: readonly PropertyKey[], path: readonly PropertyKey[], wanted: string | number | boolean): boolean {
  return issues.some((issue) => {
    const at = [...prefix, ...issue.path];
    if (issue.code === 'invalid_union') return issue.errors.some((branch) => wantsValue(branch, at, path, wanted));
    if (at.length !== path.length || at.some((k, i) => k !== path[i])) return false;
    return (issue.code === 'invalid_type' && issue.expected === typeof wanted) || (issue.code === 'invalid_value' && issue.values.includes(wanted));
  });
}

/**
 * Where a number or boolean setting refuses a value made from `${VAR}`, the issue names the
 * variables (zod's own words name only types, or say "Invalid input" for a union of values);
 * their values are not shown, as a variable may hold a secret. Replaced in place: the loader
 * reads these issues.
 */
function nameVariables(issues: Issue[], texts: ReadonlyMap<string, TypedText>, prefix: readonly PropertyKey[] = []): void {
  issues.forEach((issue, i) => {
    const at = [...prefix, ...issue.path];
    const text = texts.get(key(at));
    const words = text === undefined ? undefined : expectedWords(issue);
    if (text === undefined || words === undefined) {
      if (issue.code === 'invalid_union') for (const branch of issue.errors) nameVariables(branch, texts, at);
      return;
    }
    const names = text.variables.map((name) => `\${${name}}`).join(', ');
    const expected = words.length === 1 ? words[0] : words.length === 2 ? words.join(' or ') : `one of ${words.join(', ')}`;
    const none = words.length === 1 ? 'not one' : words.length === 2 ? 'neither' : 'none of them';
    issues[i] = { ...issue, message: `expected ${expected}; ${names} gave text that is ${none}` };
  });
}

/** The values an issue says a setting takes, in words, when they are numbers or booleans only (a union's branches too); otherwise undefined. */
function expectedWords(issue: Issue): string[] | undefined {
  if (issue.code === 'invalid_type') return issue.expected === 'number' ? ['a number'] : issue.expected === 'boolean' ? ['true', 'false'] : undefined;
  if (issue.code === 'invalid_value') return issue.values.every((v) => typeof v === 'number' || typeof v === 'boolean') ? issue.values.map(String) : undefined;
  if (issue.code !== 'invalid_union') return undefined;
  const words: string[] = [];
  for (const branch of issue.errors) {
    // A branch that refused something inside the value (an object's key) is no scalar setting.
    const [only, ...rest] = branch;
    const branchWords = only === undefined || rest.length > 0 || only.path.length > 0 ? undefined : expectedWords(only);
    if (branchWords === undefined) return undefined;
    words.push(...branchWords);
  }
  return words.length > 0 ? [...new Set(words)] : undefined;
}

/** `root` with the value at `path` replaced, copied along the path (the loaded file is not changed). */
function withValueAt(root: unknown, path: readonly PropertyKey[], value: unknown): unknown {
  const [first, ...rest] = path;
  if (first === undefined) return value;
  if (Array.isArray(root)) return root.map((item, i) => (i === first ? withValueAt(item, rest, value) : item));
  if (typeof root !== 'object' || root === null) return root;
  return { ...root, [first]: withValueAt((root as Record<PropertyKey, unknown>)[first], rest, value) };
}
