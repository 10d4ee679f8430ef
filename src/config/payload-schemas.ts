import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { compileJsonSchema } from '../core/json-schema.ts';
import type { ResolvedValidate, TransformStep } from '../core/transform-config.ts';
import { type ConfigIssue, formatPath } from './issues.ts';
import type { BridgeConfig, DeviceProfile } from './schema.ts';
import type { YamlFile } from './yaml-file.ts';

/** A file that loaded, with where it came from, so a problem found later can point into it. */
export interface Loaded<T> {
  readonly value: T;
  readonly yaml: YamlFile;
  /** Absolute path; files named inside it are relative to its directory. */
  readonly path: string;
}

/**
 * Reads the JSON Schemas that device profiles (`payloadSchema`) and bridges' `validate` steps
 * name and puts them in place: a profile's `payloadSchema` becomes the schema object, a
 * `validate` step gets `resolved`. A schema is compiled (to check it) only when a bridge
 * validates against it, so a gateway whose bridges validate nothing never loads ajv; a
 * profile's schema is compiled once however many bridges name it, and its problems are
 * reported at the profile's `payloadSchema`, not at each bridge.
 */
export function resolvePayloadSchemas(
  bridges: readonly Loaded<BridgeConfig>[],
  devices: readonly Loaded<DeviceProfile>[],
  issues: ConfigIssue[],
): { bridges: BridgeConfig[]; devices: DeviceProfile[] } {
  const profiles = new Map<string, ProfileSchema>();
  const resolvedDevices = devices.map(({ value: profile, yaml, path }) => {
    const entry: ProfileSchema = { profile, yaml, at: ['payloadSchema'] };
    profiles.set(profile.name, entry);
    if (profile.payloadSchema === undefined) return profile;
    const jsonSchema = readSchema(profile.payloadSchema, dirname(path), yaml, entry.at, issues);
    if (jsonSchema === undefined) {
      entry.state = 'broken';
      return profile;
    }
    entry.profile = { ...profile, payloadSchema: jsonSchema as Record<string, unknown> };
    return entry.profile;
  });

  const resolvedBridges = bridges.map(({ value: bridge, yaml, path }) => {
    if (bridge.transform === undefined || !bridge.transform.some((step) => 'validate' in step)) return bridge;
    const transform = bridge.transform.map((step, i): TransformStep => {
      if (!('validate' in step)) return step;
      const at = ['transform', i, 'validate'];
      const resolved = resolveValidate(step.validate, profiles, dirname(path), yaml, at, issues);
      return resolved === undefined ? step : { validate: { ...step.validate, resolved } };
    });
    return { ...bridge, transform };
  });
  return { bridges: resolvedBridges, devices: resolvedDevices };
}

interface ProfileSchema {
  profile: DeviceProfile;
  readonly yaml: YamlFile;
  readonly at: readonly PropertyKey[];
  /** Unset until a bridge names the profile and its schema is compiled. */
  state?: 'ok' | 'broken';
}

function resolveValidate(
  step: ResolvedValidate,
  profiles: ReadonlyMap<string, ProfileSchema>,
  base: string,
  yaml: YamlFile,
  at: readonly PropertyKey[],
  issues: ConfigIssue[],
): ResolvedValidate['resolved'] {
  const issue = (key: string, message: string) => issues.push({ file: yaml.path, ...yaml.locate([...at, key]), path: formatPath([...at, key]), message });
  if (step.schema !== undefined) {
    const jsonSchema = readSchema(step.schema, base, yaml, [...at, 'schema'], issues);
    if (jsonSchema === undefined || !compiles(jsonSchema, step.schema, yaml, [...at, 'schema'], issues)) return undefined;
    return { jsonSchema, label: `schema ${step.schema}` };
  }
  const name = step.profile as string;
  const found = profiles.get(name);
  if (found === undefined) {
    const known = [...profiles.keys()];
    issue('profile', `no device profile named '${name}' (profiles: ${known.length === 0 ? 'none' : known.join(', ')})`);
    return undefined;
  }
  const jsonSchema = found.profile.payloadSchema;
  if (jsonSchema === undefined) {
    issue('profile', `device profile '${name}' (${found.profile.file}) has no payloadSchema to validate against: add one to it, or use \`schema: FILE\``);
    return undefined;
  }
  found.state ??= compiles(jsonSchema, undefined, found.yaml, found.at, issues) ? 'ok' : 'broken';
  return found.state === 'ok' ? { jsonSchema, label: `schema of profile ${name}` } : undefined;
}

/** The schema: an object inline, or a .json file's contents; undefined after adding an issue. */
function readSchema(value: unknown, base: string, yaml: YamlFile, at: readonly PropertyKey[], issues: ConfigIssue[]): unknown {
  const issue = (message: string) => {
    issues.push({ file: yaml.path, ...yaml.locate(at), path: formatPath(at), message });
    return undefined;
  };
  if (typeof value !== 'string') return value;
  const file = resolve(base, value);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return issue(code === 'ENOENT' ? `no such file: ${file}` : `cannot read ${file}: ${code ?? String(error)}`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    return issue(`${file} is not JSON: ${(error as Error).message}`);
  }
}

/** Whether the schema compiles; adds an issue when not. */
function compiles(schema: unknown, file: string | undefined, yaml: YamlFile, at: readonly PropertyKey[], issues: ConfigIssue[]): boolean {
  try {
    compileJsonSchema(schema);
    return true;
  } catch (error) {
    issues.push({
      file: yaml.path,
      ...yaml.locate(at),
      path: formatPath(at),
      message: `invalid JSON Schema${file === undefined ? '' : ` in ${file}`}: ${(error as Error).message}`,
    });
    return false;
  }
}
