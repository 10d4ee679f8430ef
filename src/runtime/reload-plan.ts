import { isDeepStrictEqual } from 'node:util';
import type { GatewayConfig } from '../config/load.ts';
import { type ConfigIssue, formatIssue } from '../config/issues.ts';
import type { Logger } from 'pino';
import type { Counters } from '../core/component.ts';
import type { AnyBridgeConfig } from '../config/bridge-module.ts';
import { withoutSecrets } from '../observability/telemetry.ts';
import { isLoopbackHost } from '../core/loopback.ts';

/** What a reload does to the bridges, by name. */
export interface BridgePlan {
  readonly added: readonly AnyBridgeConfig[];
  readonly removed: readonly string[];
  /** New configs of bridges whose name stays and whose config differs. */
  readonly changed: readonly AnyBridgeConfig[];
  readonly unchanged: readonly string[];
}

export interface ReloadApplied {
  readonly ok: true;
  readonly applied: {
    readonly added: readonly string[];
    readonly removed: readonly string[];
    readonly changed: readonly string[];
    readonly unchanged: readonly string[];
    /** True when the device profiles or the anonymous access changed (they apply to new logins). */
    readonly devices: boolean;
    /** Databases of gateway.yaml added, removed, or changed (settings or the contents of their files): each opens anew on its next use. */
    readonly databases: readonly string[];
    /** True when the MQTT TLS listener's certificate, key or CA changed (content or path): new connections use them, open ones keep theirs. */
    readonly tls: boolean;
    /** How the admin token changed, when it did: requests from then on need the new one, or none (on loopback). Never the token itself. */
    readonly adminToken?: AdminTokenChange;
  };
  /** Changed settings that only a restart applies, and applied ones to look at (a renewed certificate already expired). */
  readonly warnings: readonly string[];
}

export interface ReloadRefused {
  readonly ok: false;
  /** Every problem found, with its file and line; nothing was changed. */
  readonly errors: readonly ConfigIssue[];
  /** The gateway is starting or stopping, not a problem of the config. */
  readonly notRunning?: true;
}

export type ReloadResult = ReloadApplied | ReloadRefused;

/**
 * Compares the enabled bridges of the running config and of the new one by name. A bridge
 * whose effective config (defaults filled in) is equal is unchanged, even when it moved to
 * another file, unless it is one of `failed` (a sink or its source stopped with an error): that
 * one is started again as if changed, so that a reload after its cause was fixed (a table
 * migrated to have the column a postgres sink maps) takes it up without a restart.
 */
export function planBridges(running: readonly AnyBridgeConfig[], next: readonly AnyBridgeConfig[], failed: ReadonlySet<string> = new Set()): BridgePlan {
  const before = new Map(running.filter((b) => b.enabled).map((b) => [b.name, b]));
  const after = next.filter((b) => b.enabled);
  const names = new Set(after.map((b) => b.name));
  const added: AnyBridgeConfig[] = [];
  const changed: AnyBridgeConfig[] = [];
  const unchanged: string[] = [];
  for (const bridge of after) {
    const old = before.get(bridge.name);
    if (old === undefined) added.push(bridge);
    else if (!failed.has(bridge.name) && isDeepStrictEqual(withoutFile(old), withoutFile(bridge))) unchanged.push(bridge.name);
    else changed.push(bridge);
  }
  const removed = [...before.keys()].filter((name) => !names.has(name));
  return { added, removed, changed, unchanged };
}

/** True when the device profiles or the anonymous access differ. */
export function devicesChanged(running: GatewayConfig, next: GatewayConfig): boolean {
  const access = (c: GatewayConfig) => [c.deviceProfiles.map(withoutFile), c.mqtt.allowAnonymous, c.mqtt.anonymousAcl];
  return !isDeepStrictEqual(access(running), access(next));
}

/**
 * The databases of gateway.yaml that a reload adds, removes or changes: their settings differ,
 * or a file they name (password, TLS) was replaced in place.
 */
export function databasesChanged(running: GatewayConfig, next: GatewayConfig): string[] {
  const names = new Set([...Object.keys(running.databases), ...Object.keys(next.databases)]);
  const state = (c: GatewayConfig, name: string) => [c.databases[name], c.databaseFiles[name]];
  return [...names].filter((name) => !isDeepStrictEqual(state(running, name), state(next, name))).sort();
}

/**
 * True when the TLS listener stays on and its certificate, key or CA changed (their contents,
 * whether or not their paths did): a reload gives them to the listener (tls-reload.ts).
 */
export function tlsRenewed(running: GatewayConfig, next: GatewayConfig): boolean {
  if (running.tlsPem === undefined || next.tlsPem === undefined) return false;
  return !isDeepStrictEqual(running.tlsPem, next.tlsPem) || !isDeepStrictEqual(tlsFiles(running), tlsFiles(next));
}

/** How a reload changed the admin token: set where there was none, replaced by another, or removed. */
export type AdminTokenChange = 'added' | 'replaced' | 'removed';

/**
 * How the admin token differs (`admin.token`, or the content of `admin.tokenFile`) when a reload
 * applies it, else undefined: the admin server checks requests from then on against the new one.
 * Removing the token is applied only while the running admin server is on loopback: elsewhere it
 * would open the server to other machines (a new `admin.host` takes effect only at a restart).
 */
export function adminTokenChange(running: GatewayConfig, next: GatewayConfig): AdminTokenChange | undefined {
  // No admin server runs (turning it on takes a restart): no request needs the token yet.
  if (!running.admin.enabled || running.adminToken === next.adminToken || adminTokenRemovalRefused(running, next)) return undefined;
  return running.adminToken === undefined ? 'added' : next.adminToken === undefined ? 'removed' : 'replaced';
}

function adminTokenRemovalRefused(running: GatewayConfig, next: GatewayConfig): boolean {
  return running.adminToken !== undefined && next.adminToken === undefined && running.admin.enabled && !isLoopbackHost(running.admin.host);
}

/** The `mqtt.tls` fields a reload applies in place while TLS stays on: the files of the listener. */
const TLS_FILES = ['cert', 'key', 'ca'] as const;

function tlsFiles(config: GatewayConfig): Record<string, string | undefined> {
  const tls = config.mqtt.tls;
  return Object.fromEntries(TLS_FILES.map((field) => [field, tls?.[field]]));
}

/** Settings a reload applies; every other difference needs a restart. */
const APPLIED = new Set([
  'databases',
  'databaseFiles',
  'bridges',
  'devices',
  'redis',
  'bridgeConfigs',
  'deviceProfiles',
  'file',
  'mqtt.allowAnonymous',
  'mqtt.anonymousAcl',
  'gateway.dataDir',
  // Compared as the token they give (`adminToken`): reported there when not applied.
  'admin.token',
  'admin.tokenFile',
]);

/** Settings whose values are secrets: a change is named, never shown. */
const SECRET = new Set(['telemetry.headers']);

/** URLs that may carry a user, password or API key (docs/observability.md): shown as the startup line shows them. */
const URLS = new Set(['telemetry.endpoint']);

/**
 * The changed gateway settings a reload cannot apply (listeners, ports, the buffer database,
 * the admin server, logging...), one message each, naming the setting. `gateway.dataDir` is
 * compared as the resolved path, so that a `--data-dir` override does not count as a change.
 */
export function restartNeeded(running: GatewayConfig, next: GatewayConfig): string[] {
  const warnings: string[] = [];
  const note = (path: string, from: unknown, to: unknown) => warnings.push(`${path} changed (${show(from)} → ${show(to)}): not applied; restart needed`);
  const sections = new Set([...Object.keys(running), ...Object.keys(next)]);
  for (const key of sections) {
    if (APPLIED.has(key)) continue;
    const from = (running as unknown as Record<string, unknown>)[key];
    const to = (next as unknown as Record<string, unknown>)[key];
    if (isDeepStrictEqual(from, to)) continue;
    if (key === 'dataDirPath') {
      note('gateway.dataDir', from, to);
      continue;
    }
    // The listener's files, applied in place while TLS stays on; turning TLS on or off is reported as `mqtt.tls`.
    if (key === 'tlsPem') continue;
    // Applied in place (a rotated token), but not removed while the admin server listens off loopback.
    if (key === 'adminToken') {
      if (adminTokenRemovalRefused(running, next))
        warnings.push(`the admin token was removed: not applied while the admin server listens on ${running.admin.host}, reachable from other machines; restart needed`);
      continue;
    }
    // Derived from `telemetry` and OTEL_* (its headers carry API keys): named only when
    // `telemetry` itself did not change, which is then reported field by field.
    if (key === 'telemetryExport') {
      if (isDeepStrictEqual(running.telemetry, next.telemetry)) warnings.push('telemetry export settings changed: not applied; restart needed');
      continue;
    }
    if (!isPlainObject(from) || !isPlainObject(to)) {
      note(key, from, to);
      continue;
    }
    for (const field of new Set([...Object.keys(from), ...Object.keys(to)])) {
      const path = `${key}.${field}`;
      if (APPLIED.has(path) || isDeepStrictEqual(from[field], to[field])) continue;
      const [a, b] = [from[field], to[field]];
      if (path === 'mqtt.tls' && isPlainObject(a) && isPlainObject(b)) {
        const fields = new Set([...Object.keys(a), ...Object.keys(b)].filter((f) => !(TLS_FILES as readonly string[]).includes(f)));
        for (const f of fields) if (!isDeepStrictEqual(a[f], b[f])) note(`${path}.${f}`, a[f], b[f]);
        continue;
      }
      if (SECRET.has(path)) warnings.push(`${path} changed: not applied; restart needed`);
      else if (URLS.has(path)) note(path, shownUrl(from[field]), shownUrl(to[field]));
      else note(path, from[field], to[field]);
    }
  }
  return warnings;
}

function withoutFile<T extends { readonly file: string }>(config: T): Omit<T, 'file'> {
  const { file: _file, ...rest } = config;
  return rest;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !Buffer.isBuffer(value);
}

/** A URL setting with its credentials and query values as `***`. */
function shownUrl(value: unknown): unknown {
  return typeof value === 'string' ? withoutSecrets(value) : value;
}

function show(value: unknown): string {
  if (value === undefined) return 'unset';
  const text = JSON.stringify(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** What a reload to `next` changes besides its bridges. */
export interface ReloadChanges {
  /** The device profiles or the anonymous access (they apply to new logins). */
  readonly devices: boolean;
  /** Databases added, removed or changed. */
  readonly databases: string[];
  /** The TLS listener's certificate, key or CA (they apply to new connections). */
  readonly tls: boolean;
  /** The admin token (it applies to requests from then on), when it changed. */
  readonly adminToken: AdminTokenChange | undefined;
  /** Changed settings that only a restart applies. */
  readonly warnings: string[];
}

export function reloadChanges(running: GatewayConfig, next: GatewayConfig): ReloadChanges {
  return {
    devices: devicesChanged(running, next),
    databases: databasesChanged(running, next),
    tls: tlsRenewed(running, next),
    adminToken: adminTokenChange(running, next),
    warnings: restartNeeded(running, next),
  };
}

/** The config running after a reload applied `next`: its bridges, devices, databases, access, TLS files and admin token; the rest needs a restart. */
export function reloadedConfig(running: GatewayConfig, next: GatewayConfig): GatewayConfig {
  const tls = renewedTls(running, next);
  const { adminToken: _token, ...rest } = running;
  const { admin, adminToken } = adminTokenRemovalRefused(running, next) ? running : next;
  const { token: _inline, tokenFile: _file, ...settings } = running.admin;
  return {
    ...rest,
    admin: { ...settings, ...(admin.token === undefined ? {} : { token: admin.token }), ...(admin.tokenFile === undefined ? {} : { tokenFile: admin.tokenFile }) },
    ...(adminToken === undefined ? {} : { adminToken }),
    databases: next.databases,
    databaseFiles: next.databaseFiles,
    bridges: next.bridges,
    devices: next.devices,
    // Applied through the bridges: each carries the connections it uses, and a client no bridge holds any more is closed.
    redis: next.redis,
    bridgeConfigs: next.bridgeConfigs,
    deviceProfiles: next.deviceProfiles,
    mqtt: { ...running.mqtt, allowAnonymous: next.mqtt.allowAnonymous, anonymousAcl: next.mqtt.anonymousAcl, ...(tls === undefined ? {} : { tls }) },
    ...(tls === undefined ? {} : { tlsPem: next.tlsPem }),
  };
}

/** The running `mqtt.tls` with the files of `next`'s, when a reload renews them; undefined otherwise. */
function renewedTls(running: GatewayConfig, next: GatewayConfig): GatewayConfig['mqtt']['tls'] {
  const [from, to] = [running.mqtt.tls, next.mqtt.tls];
  if (from === undefined || to === undefined || !tlsRenewed(running, next)) return undefined;
  const { cert, key, ca } = to;
  return { ...from, cert, key, ca };
}

/** The answer of a reload that applied `plan` and `changes`, and its log line. */
export function applied(plan: BridgePlan, changes: ReloadChanges): { result: ReloadApplied; message: string } {
  const { devices, databases, tls, adminToken, warnings } = changes;
  const names = { added: plan.added.map((b) => b.name), removed: [...plan.removed], changed: plan.changed.map((b) => b.name), unchanged: [...plan.unchanged] };
  const summary = (['added', 'removed', 'changed'] as const).map((k) => `${k} ${names[k].length === 0 ? '-' : names[k].join(', ')}`).join('; ');
  const message =
    `config reloaded: ${summary}; ${names.unchanged.length} unchanged${devices ? '; device profiles changed (for new logins)' : ''}` +
    `${databases.length === 0 ? '' : `; databases ${databases.join(', ')} changed (open anew on next use)`}` +
    `${tls ? '; mqtt.tls certificate renewed (for new connections)' : ''}` +
    `${adminToken === undefined ? '' : `; admin token ${ADMIN_TOKEN_LOGGED[adminToken]}`}` +
    `${warnings.length === 0 ? '' : `; ${warnings.length === 1 ? '1 warning' : `${warnings.length} warnings`}: ${warnings.join('; ')}`}`;
  return { result: { ok: true, applied: { ...names, devices, databases, tls, ...(adminToken === undefined ? {} : { adminToken }) }, warnings }, message };
}

/** The log line's words for a changed admin token (`ferry reload` prints its own, src/cli/reload.ts). */
const ADMIN_TOKEN_LOGGED: Record<AdminTokenChange, string> = {
  added: 'added (required from now on)',
  replaced: 'replaced (the previous one no longer works)',
  removed: 'removed (the admin server on loopback needs none now)',
};

/** A problem of a config file as a whole, at no line. */
export function fileIssue(file: string, message: string): ConfigIssue {
  return { file, line: 0, column: 0, path: '', message };
}

/** Counts and logs a refused reload (the running config unchanged); returns it. */
export function refusedReload(result: ReloadRefused, counters: Counters, logger: Logger): ReloadRefused {
  counters.count('config.reloads', { result: result.notRunning === true ? 'not_running' : 'refused' });
  const errors = result.errors.map(formatIssue);
  logger.error(
    { reload: 'refused', errors },
    `config reload refused (${errors.length === 1 ? '1 problem' : `${errors.length} problems`}); the running config is unchanged: ${errors.join('; ')}`,
  );
  return result;
}
