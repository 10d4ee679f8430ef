import type { z } from 'zod';
import type { YamlFile } from './yaml-file.ts';
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
 * 123, and TOKEN=true, null or ~ are those words. Which fields take a string is the schema's
 * answer: where it refuses a typed value and expects a string (or one of some strings) there,
 * the text is put back and the file validated again, until no such value is left.
 */
export function validateFile<S extends z.ZodType>(file: YamlFile, schema: S): Validated<z.output<S>> {
  let value: unknown = file.value ?? {};
  let result = schema.safeParse(value, ONE_SHOT_PARSE);
  const pending = new Map((file.typedTexts ?? []).map((t) => [JSON.stringify(t.path), t]));
  while (!result.success && pending.size > 0) {
    const restore = [...pending.values()].filter((t) => wantsText(result.error?.issues ?? [], [], t.path, t.text));
    if (restore.length === 0) break;
    for (const typed of restore) {
      value = withValueAt(value, typed.path, typed.text);
      pending.delete(JSON.stringify(typed.path));
    }
    result = schema.safeParse(value, ONE_SHOT_PARSE);
  }
  return { result, file: value === file.value ? file : { ...file, value } };
}

/** Whether an issue at `path` (in a union's branches too) says a string, or `text` itself, was expected there. */
function wantsText(issues: readonly Issue[], prefix: readonly PropertyKey[], path: readonly PropertyKey[], text: string): boolean {
  return issues.some((issue) => {
    const at = [...prefix, ...issue.path];
    if (issue.code === 'invalid_union') return issue.errors.some((branch) => wantsText(branch, at, path, text));
    if (at.length !== path.length || at.some((key, i) => key !== path[i])) return false;
    return (issue.code === 'invalid_type' && issue.expected === 'string') || (issue.code === 'invalid_value' && issue.values.includes(text));
  });
}

/** `root` with the value at `path` replaced, copied along the path (the loaded file is not changed). */
function withValueAt(root: unknown, path: readonly PropertyKey[], value: unknown): unknown {
  const [key, ...rest] = path;
  if (key === undefined) return value;
  if (Array.isArray(root)) return root.map((item, i) => (i === key ? withValueAt(item, rest, value) : item));
  if (typeof root !== 'object' || root === null) return root;
  return { ...root, [key]: withValueAt((root as Record<PropertyKey, unknown>)[key], rest, value) };
}
