import { isAbsolute, resolve } from 'node:path';
import { hasInterpolation, interpolate } from './interpolate.ts';

type Section = Record<string, unknown>;

const isSection = (value: unknown): value is Section => typeof value === 'object' && value !== null && !Array.isArray(value);

/**
 * A gateway config given as an object to `startGateway`, written to a file of its own in a
 * temporary directory: every file path in it made absolute against `base`, where the loader
 * would resolve it against the directory of that file. With the defaults of an embedded
 * gateway: data under `<base>/data`, no bridge or device files unless named.
 */
export function absolutePaths(config: Readonly<Section>, base: string): Section {
  const at = (path: unknown) => (typeof path === 'string' ? absolute(path, base) : path);
  const section = (name: string) => (isSection(config[name]) ? config[name] : undefined);
  const out: Section = { ...config };
  const gateway = section('gateway');
  out['gateway'] = { ...gateway, dataDir: at(gateway?.['dataDir'] ?? 'data') };
  out['bridges'] = Array.isArray(config['bridges']) ? config['bridges'].map(at) : [];
  out['devices'] = Array.isArray(config['devices']) ? config['devices'].map(at) : [];
  const mqtt = section('mqtt');
  if (mqtt !== undefined && isSection(mqtt['tls'])) out['mqtt'] = { ...mqtt, tls: withFiles(mqtt['tls'], ['cert', 'key', 'ca'], at) };
  const admin = section('admin');
  if (admin !== undefined && 'tokenFile' in admin) out['admin'] = { ...admin, tokenFile: at(admin['tokenFile']) };
  const databases = section('databases');
  if (databases !== undefined) out['databases'] = Object.fromEntries(Object.entries(databases).map(([name, database]) => [name, databaseFiles(database, at)]));
  return out;
}

/**
 * `path` made absolute against `base`. A path with variables (`${FERRY_DATA_DIR:-data}`) is
 * interpolated first, from the environment the loader reads too: made absolute as written, a
 * variable holding an absolute path would land under `base` (`<base>//var/lib/ferry`). One
 * naming a variable that is not set stays as written, for the loader to report.
 */
function absolute(path: string, base: string): string {
  if (!hasInterpolation(path)) return isAbsolute(path) ? path : resolve(base, path);
  const { value, missing } = interpolate(path, process.env);
  if (missing.length > 0) return path;
  // Written back into a config that is interpolated again: a literal `${` stays one.
  return (isAbsolute(value) ? value : resolve(base, value)).replaceAll('${', '$${');
}

function withFiles(section: Section, keys: readonly string[], at: (path: unknown) => unknown): Section {
  return { ...section, ...Object.fromEntries(keys.filter((k) => k in section).map((k) => [k, at(section[k])])) };
}

/** A PostgreSQL database's password and TLS files; a SQLite `file` is relative to the data directory, which is absolute already. */
function databaseFiles(database: unknown, at: (path: unknown) => unknown): unknown {
  if (!isSection(database) || !isSection(database['postgres'])) return database;
  const postgres: Section = { ...database['postgres'] };
  if (isSection(postgres['password'])) postgres['password'] = withFiles(postgres['password'], ['file'], at);
  if (isSection(postgres['ssl'])) postgres['ssl'] = withFiles(postgres['ssl'], ['ca', 'cert', 'key'], at);
  return { ...database, postgres };
}
