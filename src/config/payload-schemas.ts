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
 * name, checks that each one compiles, and puts them in place: a profile's `payloadSchema`
 * becomes the schema object, a `validate` step gets `resolved`. Problems are added to `issues`
 * at the key that names the schema. A schema is checked here, once per file, so a bridge that
 * names a broken profile is not reported a second time.
 */
export function resolvePayloadSchemas(
  bridges: readonly Loaded<BridgeConfig>[],
  devices: readonly Loaded<DeviceProfile>[],
  issues: ConfigIssue[],
): { bridges: BridgeConfig[]; devices: DeviceProfile[] } {
  const profiles = new Map<string, { profile: DeviceProfile; broken: boolean }>();
  const resolvedDevices = devices.map(({ value: profile, yaml, path }) => {
    if (profile.payloadSchema === undefined) {
      profiles.set(profile.name, { profile, broken: false });
      return profile;
    }
    const jsonSchema = loadSchema(profile.payloadSchema, dirname(path), yaml, ['payloadSchema'], issues);
    const resolved = jsonSchema === undefined ? profile : { ...profile, payloadSchema: jsonSchema as Record<string, unknown> };
    profiles.set(profile.name, { profile: resolved, broken: jsonSchema === undefined });
    return resolved;
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

function resolveValidate(
  step: ResolvedValidate,
  profiles: ReadonlyMap<string, { profile: DeviceProfile; broken: boolean }>,
  base: string,
  yaml: YamlFile,
  at: readonly PropertyKey[],
  issues: ConfigIssue[],
): ResolvedValidate['resolved'] {
  const issue = (key: string, message: string) => issues.push({ file: yaml.path, ...yaml.locate([...at, key]), path: formatPath([...at, key]), message });
  if (step.schema !== undefined) {
    const jsonSchema = loadSchema(step.schema, base, yaml, [...at, 'schema'], issues);
    return jsonSchema === undefined ? undefined : { jsonSchema, label: `schema ${step.schema}` };
  }
  const name = step.profile as string;
  const found = profiles.get(name);
  if (found === undefined) {
    const known = [...profiles.keys()];
    issue('profile', `no device profile named '${name}' (profiles: ${known.length === 0 ? 'none' : known.join(', ')})`);
    return undefined;
  }
  if (found.broken) return undefined;
  if (found.profile.payloadSchema === undefined) {
    issue('profile', `device profile '${name}' (${found.profile.file}) has no payloadSchema to validate against: add one to it, or use \`schema: FILE\``);
    return undefined;
  }
  return { jsonSchema: found.profile.payloadSchema, label: `schema of profile ${name}` };
}

/** The schema (an object inline, or a .json file's contents), checked to compile; undefined after adding an issue. */
function loadSchema(value: unknown, base: string, yaml: YamlFile, at: readonly PropertyKey[], issues: ConfigIssue[]): unknown {
  const issue = (message: string) => {
    issues.push({ file: yaml.path, ...yaml.locate(at), path: formatPath(at), message });
    return undefined;
  };
  let schema = value;
  if (typeof value === 'string') {
    const file = resolve(base, value);
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      return issue(code === 'ENOENT' ? `no such file: ${file}` : `cannot read ${file}: ${code ?? String(error)}`);
    }
    try {
      schema = JSON.parse(text) as unknown;
    } catch (error) {
      return issue(`${file} is not JSON: ${(error as Error).message}`);
    }
  }
  try {
    compileJsonSchema(schema);
  } catch (error) {
    return issue(`invalid JSON Schema${typeof value === 'string' ? ` in ${value}` : ''}: ${(error as Error).message}`);
  }
  return schema;
}
