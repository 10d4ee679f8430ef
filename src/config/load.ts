import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, extname, join, relative, resolve } from 'node:path';
import type { z } from 'zod';
import { type AnyBridgeConfig, loadBridgeModule } from './bridge-module.ts';
import type { DatabaseConfig } from './databases-schema.ts';
import { connectionFiles } from '../postgres/connection.ts';
import { type ComponentEntry, type FileDigests, componentFileDigests, databaseFileDigests, withFileDigests } from './file-digests.ts';
import { ConfigError, type ConfigIssue, formatPath } from './issues.ts';
import { type Loaded, resolvePayloadSchemas } from './payload-schemas.ts';
import { resolveRedisRefs } from './redis-refs.ts';
import type { Env } from './interpolate.ts';
import { type BridgeConfig, type ComponentKinds, type DeviceProfile, type GatewaySection, bridgeSchema, deviceSchema, gatewaySchema } from './schema.ts';
import { type YamlFile, loadYamlFile } from './yaml-file.ts';
import { issuesFromZod } from './zod-issues.ts';
import { validateFile } from './validate-file.ts';
import { type TelemetryExport, resolveTelemetry } from './telemetry.ts';

export interface GatewayConfig extends GatewaySection {
  /** Absolute path of the gateway config file. */
  readonly file: string;
  /** dataDir resolved against the config file's directory. */
  readonly dataDirPath: string;
  readonly bridgeConfigs: readonly AnyBridgeConfig[];
  /**
   * TypeScript bridges (`*.ts`) found but not loaded: set by the synchronous `loadConfig`,
   * empty from `loadGatewayConfig`, which imports them into `bridgeConfigs`.
   */
  readonly bridgeModules: readonly string[];
  readonly deviceProfiles: readonly DeviceProfile[];
  /** Contents of the `mqtt.tls` PEM files, read relative to the config file; set when `mqtt.tls` is. */
  readonly tlsPem?: TlsPem;
  /** The admin token, from `admin.token` or read from `admin.tokenFile`. */
  readonly adminToken?: string;
  /** What OpenTelemetry exports, from `telemetry:` and the OTEL_* variables; absent when nothing. */
  readonly telemetryExport?: TelemetryExport;
  /** The contents of the files each database names (password, TLS), by database; only databases with files. */
  readonly databaseFiles: Readonly<Record<string, FileDigests>>;
}

export interface TlsPem {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly ca?: Buffer;
}

export interface LoadOptions {
  readonly kinds: ComponentKinds;
  /** Variables for `${VAR}`; process.env by default. */
  readonly env?: Env;
  /** Directory that file names in messages are relative to; the working directory by default. */
  readonly cwd?: string;
}

/**
 * Loads config/gateway.yaml and every bridge and device file it references, validating all
 * of them. Throws a ConfigError listing every problem in every file at once. TypeScript
 * bridges are only listed (in `bridgeModules`): `loadGatewayConfig` loads them too.
 */
export function loadConfig(configPath: string, options: LoadOptions): GatewayConfig {
  const read = readConfig(configPath, options);
  if (read.issues.length > 0 || read.config === undefined) throw new ConfigError(read.issues);
  return read.config;
}

/**
 * `loadConfig`, and the TypeScript bridges (`bridges/*.ts`) imported and checked as well: a
 * module that fails to import or whose definition is invalid is a problem of its file,
 * reported with all the others.
 */
export async function loadGatewayConfig(configPath: string, options: LoadOptions): Promise<GatewayConfig> {
  const read = readConfig(configPath, options);
  const issues = [...read.issues];
  const handlers: AnyBridgeConfig[] = [];
  for (const path of read.modules) {
    const bridge = await loadBridgeModule(path, read.display(path), options.kinds, issues);
    if (bridge === undefined) continue;
    const first = read.names.get(bridge.name);
    if (first !== undefined) {
      issues.push({ file: bridge.file, line: 0, column: 0, path: 'name', message: `bridge name '${bridge.name}' is already used in ${first}` });
      continue;
    }
    read.names.set(bridge.name, bridge.file);
    const withFiles = withFileDigests(bridge, componentFileDigests(componentEntries(bridge, options.kinds), dirname(path)));
    handlers.push(read.config === undefined ? withFiles : { ...withFiles, redis: read.config.redis });
  }
  if (issues.length > 0 || read.config === undefined) throw new ConfigError(issues);
  return { ...read.config, bridgeConfigs: [...read.config.bridgeConfigs, ...handlers], bridgeModules: [] };
}

interface ReadConfig {
  /** Set when there are no issues. */
  readonly config?: GatewayConfig;
  readonly issues: readonly ConfigIssue[];
  /** TypeScript bridge files, not loaded. */
  readonly modules: readonly string[];
  /** Bridge names taken, and by which file. */
  readonly names: Map<string, string>;
  readonly display: (path: string) => string;
}

function readConfig(configPath: string, options: LoadOptions): ReadConfig {
  const env = options.env ?? process.env;
  const cwd = options.cwd ?? process.cwd();
  const file = resolve(cwd, configPath);
  const display = (p: string) => {
    const rel = relative(cwd, p);
    return rel === '' || rel.startsWith('..') ? p : rel;
  };
  const issues: ConfigIssue[] = [];

  const gateway = parseFile(file, display(file), gatewaySchema(), env, issues);
  const names = new Map<string, string>();
  if (gateway.yaml === undefined) return { issues, modules: [], names, display };
  const base = dirname(file);
  // Referenced files are checked even when the gateway file has problems elsewhere, so that
  // one run reports everything; a broken list falls back to its default.
  const raw = (gateway.yaml.value ?? {}) as Record<string, unknown>;
  const lists = {
    bridges: gateway.value?.bridges ?? listOr(raw['bridges'], gatewaySchema().shape.bridges),
    devices: gateway.value?.devices ?? listOr(raw['devices'], gatewaySchema().shape.devices),
  };

  checkDatabaseFiles(gateway.value?.databases ?? {}, base, gateway.yaml, issues);

  const bridges: Loaded<BridgeConfig>[] = [];
  const modules: string[] = [];
  const schema = bridgeSchema(options.kinds);
  for (const path of expand(lists.bridges, base, 'bridges', gateway.yaml, issues, ['.yaml', '.yml', '.ts'])) {
    if (extname(path) === '.ts') {
      modules.push(path);
      continue;
    }
    const parsed = parseFile(path, display(path), schema, env, issues);
    if (parsed.value === undefined || parsed.yaml === undefined) continue;
    const bridge = { ...(parsed.value as Omit<BridgeConfig, 'file'>), file: display(path) };
    const first = names.get(bridge.name);
    if (first !== undefined) {
      issues.push({ file: bridge.file, ...parsed.yaml.locate(['name']), path: 'name', message: `bridge name '${bridge.name}' is already used in ${first}` });
      continue;
    }
    names.set(bridge.name, bridge.file);
    checkComponentFiles(bridge, dirname(path), parsed.yaml, options.kinds, issues);
    bridges.push({ value: withFileDigests(bridge, componentFileDigests(componentEntries(bridge, options.kinds), dirname(path))), yaml: parsed.yaml, path });
  }

  const devices: Loaded<DeviceProfile>[] = [];
  // Without a `devices:` key, a missing default directory means no profiles (issue 18): a
  // gateway of anonymous devices needs none.
  const devicesGiven = raw['devices'] !== undefined;
  for (const path of expand(lists.devices, base, 'devices', gateway.yaml, issues, ['.yaml', '.yml'], !devicesGiven)) {
    const parsed = parseFile(path, display(path), deviceSchema(), env, issues);
    if (parsed.value !== undefined && parsed.yaml !== undefined) devices.push({ value: { ...parsed.value, file: display(path) }, yaml: parsed.yaml, path });
  }
  const withRedis = resolveRedisRefs(bridges, gateway.value?.redis ?? {}, issues);
  const resolved = resolvePayloadSchemas(withRedis, devices, issues);

  // Checked from the raw file too, so a missing certificate is reported along with schema problems.
  const tls = gateway.value === undefined ? (raw['mqtt'] as { tls?: unknown } | null | undefined)?.tls : gateway.value.mqtt.tls;
  const tlsPem = typeof tls === 'object' && tls !== null ? readTlsPem(tls as Record<string, unknown>, base, gateway.yaml, issues) : undefined;

  const adminToken = gateway.value === undefined ? undefined : readAdminToken(gateway.value.admin, base, gateway.yaml, issues);

  if (issues.length > 0 || gateway.value === undefined) return { issues, modules, names, display };
  const telemetryExport = resolveTelemetry(gateway.value.telemetry, gateway.value.gateway.name, env);
  const config: GatewayConfig = {
    ...gateway.value,
    ...(telemetryExport === undefined ? {} : { telemetryExport }),
    ...(tlsPem === undefined ? {} : { tlsPem }),
    ...(adminToken === undefined ? {} : { adminToken }),
    databaseFiles: databaseFileDigests(gateway.value.databases, base),
    file,
    dataDirPath: resolve(base, gateway.value.gateway.dataDir),
    bridgeConfigs: resolved.bridges,
    bridgeModules: modules,
    deviceProfiles: resolved.devices,
  };
  return { config, issues, modules, names, display };
}

/** The admin token: `admin.token`, or the first line of `admin.tokenFile` (at least 16 characters). */
function readAdminToken(
  admin: { readonly token?: string | undefined; readonly tokenFile?: string | undefined },
  base: string,
  yaml: YamlFile,
  issues: ConfigIssue[],
): string | undefined {
  if (admin.tokenFile === undefined) return admin.token;
  const problem = (message: string) => void issues.push({ file: yaml.path, ...yaml.locate(['admin', 'tokenFile']), path: 'admin.tokenFile', message });
  let token: string;
  try {
    token = (readFileSync(resolve(base, admin.tokenFile), 'utf8').split('\n')[0] ?? '').trim();
  } catch (error) {
    problem(`cannot read the admin token file: ${(error as Error).message}`);
    return undefined;
  }
  if (token.length < 16) {
    problem('the admin token file must hold a token of at least 16 characters on its first line');
    return undefined;
  }
  return token;
}

/** A PEM file's contents, or why it cannot be used. */
function readPem(path: string): { pem: Buffer } | { problem: string } {
  try {
    const pem = readFileSync(path);
    return pem.includes('-----BEGIN ') ? { pem } : { problem: `not a PEM file: ${path}` };
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return { problem: code === 'ENOENT' ? `no such file: ${path}` : `cannot read ${path}: ${code ?? String(error)}` };
  }
}

/** A bridge's source and sinks (a list in YAML, named in TypeScript), each with its key path and the components of its side. */
function componentEntries(bridge: Pick<AnyBridgeConfig, 'from' | 'to'>, kinds: ComponentKinds): ComponentEntry[] {
  const sinks = Array.isArray(bridge.to) ? bridge.to.map((entry, index) => [index, entry] as const) : Object.entries(bridge.to);
  return [{ at: ['from'], entry: bridge.from, components: kinds.sources }, ...sinks.map(([key, entry]) => ({ at: ['to', key], entry, components: kinds.sinks }))];
}

/** The PEM files a bridge's source and sinks name (`files`), each read now and reported at its line. */
function checkComponentFiles(bridge: BridgeConfig, base: string, yaml: YamlFile, kinds: ComponentKinds, issues: ConfigIssue[]): void {
  if (!bridge.enabled) return; // its files may be put in place when it is turned on
  for (const { at, entry, components } of componentEntries(bridge, kinds)) {
    const [kind, config] = Object.entries(entry)[0] ?? [];
    const component = components.find((c) => c.kind === kind);
    for (const { path, file, secret } of component?.files?.(config) ?? []) {
      if (secret === true) continue;
      const read = readPem(resolve(base, file));
      if (!('problem' in read)) continue;
      const keyPath = [...at, kind as string, ...path];
      issues.push({ file: bridge.file, ...yaml.locate(keyPath), path: formatPath(keyPath), message: read.problem });
    }
  }
}

/** The TLS files of the PostgreSQL databases of gateway.yaml, each read now and reported at its line. */
function checkDatabaseFiles(databases: Readonly<Record<string, DatabaseConfig>>, base: string, yaml: YamlFile, issues: ConfigIssue[]): void {
  for (const [name, database] of Object.entries(databases)) {
    if (!('postgres' in database)) continue;
    for (const { path, file, secret } of connectionFiles(database.postgres)) {
      if (secret === true) continue;
      const read = readPem(resolve(base, file));
      if (!('problem' in read)) continue;
      const keyPath = ['databases', name, 'postgres', ...path];
      issues.push({ file: yaml.path, ...yaml.locate(keyPath), path: formatPath(keyPath), message: read.problem });
    }
  }
}

function readTlsPem(tls: Record<string, unknown>, base: string, yaml: YamlFile, issues: ConfigIssue[]): TlsPem | undefined {
  const read = (key: 'cert' | 'key' | 'ca'): Buffer | undefined => {
    const file = tls[key];
    if (typeof file !== 'string' || file === '') return undefined;
    const read = readPem(resolve(base, file));
    if ('pem' in read) return read.pem;
    issues.push({ file: yaml.path, ...yaml.locate(['mqtt', 'tls', key]), path: `mqtt.tls.${key}`, message: read.problem });
    return undefined;
  };
  const cert = read('cert');
  const key = read('key');
  const ca = read('ca');
  if (cert === undefined || key === undefined) return undefined;
  return { cert, key, ...(ca === undefined ? {} : { ca }) };
}

function parseFile<S extends z.ZodType>(path: string, displayPath: string, schema: S, env: Env, issues: ConfigIssue[]): { value?: z.output<S>; yaml?: YamlFile } {
  const loaded = loadYamlFile(path, displayPath, env);
  issues.push(...loaded.issues);
  if (loaded.file === undefined) return {};
  const { result, file } = validateFile(loaded.file, schema);
  if (!result.success) {
    // A value whose variable is unset was already reported; its schema error would repeat it.
    const reported = new Set(loaded.issues.map((issue) => issue.path));
    issues.push(...issuesFromZod(result.error.issues, file).filter((issue) => !reported.has(issue.path)));
    return { yaml: file };
  }
  if (loaded.issues.length > 0) return { yaml: file };
  return { value: result.data, yaml: file };
}

function listOr(value: unknown, schema: z.ZodType<string[]>): string[] {
  const parsed = schema.safeParse(value);
  return parsed.success ? parsed.data : (schema.parse(undefined) as string[]);
}

/** Each entry is a file or a directory of files with one of `extensions` (sorted, so load order is stable). */
/** The files of a list of files and directories; with `missingOk`, an entry that does not exist is no problem. */
function expand(entries: readonly string[], base: string, key: string, yaml: YamlFile, issues: ConfigIssue[], extensions: readonly string[], missingOk = false): string[] {
  const out: string[] = [];
  entries.forEach((entry, index) => {
    const path = resolve(base, entry);
    let isDir: boolean;
    try {
      isDir = statSync(path).isDirectory();
    } catch {
      if (missingOk) return;
      issues.push({ file: yaml.path, ...yaml.locate([key, index]), path: `${key}[${index}]`, message: `no such file or directory: ${path}` });
      return;
    }
    if (!isDir) {
      out.push(path);
      return;
    }
    const files = readdirSync(path)
      .filter((name) => extensions.includes(extname(name)) && !name.endsWith('.d.ts'))
      .sort();
    out.push(...files.map((name) => join(path, name)));
  });
  return out;
}
