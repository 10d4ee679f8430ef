import { relative, resolve } from 'node:path';
import { type ConfigIssue, formatIssue } from '../../config/issues.ts';
import { type DeviceProfile, deviceSchema } from '../../config/schema.ts';
import { validateFile } from '../../config/validate-file.ts';
import { loadYamlFile } from '../../config/yaml-file.ts';
import { issuesFromZod } from '../../config/zod-issues.ts';
import { UsageError } from './usage-error.ts';

export type Telemetry = NonNullable<DeviceProfile['telemetry']>;

export interface SimulatedProfile {
  readonly name: string;
  readonly file: string;
  readonly clientId: string;
  readonly telemetry: Telemetry;
}

/** Loads and validates a device profile as `ferry validate` does; throws UsageError listing every problem. */
export function loadProfile(path: string): SimulatedProfile {
  const rel = relative(process.cwd(), resolve(path));
  const display = rel === '' || rel.startsWith('..') ? resolve(path) : rel;
  const loaded = loadYamlFile(resolve(path), display, process.env);
  const issues: ConfigIssue[] = [...loaded.issues];
  if (loaded.file !== undefined && issues.length === 0) {
    const { result: parsed, file } = validateFile(loaded.file, deviceSchema());
    if (parsed.success) {
      if (parsed.data.telemetry === undefined) {
        throw new UsageError(`${display}: the profile has no telemetry section, so there is nothing to simulate`);
      }
      return { name: parsed.data.name, file: display, clientId: parsed.data.clientId, telemetry: parsed.data.telemetry };
    }
    issues.push(...issuesFromZod(parsed.error.issues, file));
  }
  const count = issues.length;
  throw new UsageError(`invalid profile (--profile), ${count} problem${count === 1 ? '' : 's'}:\n${issues.map((i) => `  ${formatIssue(i)}`).join('\n')}`);
}

/** Client ids from the profile's glob, every `*` replaced by the device's number from 1. */
export function clientIdsOf(glob: string, devices: number): string[] {
  if (!glob.includes('*') && devices > 1) {
    throw new UsageError(`the profile's clientId '${glob}' has no * to number ${devices} devices by; use --devices 1`);
  }
  return Array.from({ length: devices }, (_, i) => glob.replaceAll('*', String(i + 1)));
}
