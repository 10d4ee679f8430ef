import { type ConfigIssue, formatIssue } from '../config/issues.ts';
import type { GatewayConfig } from '../config/load.ts';
import { AdminUnreachable, postJson } from './admin-request.ts';
import { loadSettings } from './load.ts';

export interface ReloadOptions {
  /** Base URL of the gateway's admin server. */
  readonly admin?: string;
  /** Config whose `admin` section gives the address, when --admin is not given. */
  readonly config?: string;
  readonly json?: boolean;
  /**
   * How long the answer may take once connected; by default the drain timeout and a minute (see
   * ANSWER_MARGIN_MS). Not a command-line option: for a caller of this function (a test).
   */
  readonly answerTimeoutMs?: number;
}

const DEFAULT_ADMIN = 'http://127.0.0.1:9180';

/**
 * How long the answer may take beyond the drain timeout (a reload answers once the bridges it
 * replaced drained: shutdown.drainTimeoutMs, 10 s unless --config says otherwise).
 */
const ANSWER_MARGIN_MS = 60_000;
const DEFAULT_DRAIN_MS = 10_000;

interface Applied {
  readonly applied: {
    added: string[];
    removed: string[];
    changed: string[];
    unchanged: string[];
    devices: boolean;
    databases?: string[];
    tls?: boolean;
    /** 'added', 'replaced' or 'removed'; absent when the token stayed (the token itself is never sent). */
    adminToken?: string;
  };
  readonly warnings: string[];
}

/** Asks a running gateway to apply its changed config (POST /api/reload) and prints the outcome. */
export async function reloadCommand(options: ReloadOptions): Promise<void> {
  // Read once: a config with problems prints them once.
  const settings = options.config === undefined ? undefined : loadSettings(options.config);
  const base = adminUrl(options, settings);
  const token = adminToken(settings);
  if (base === undefined) {
    process.exitCode = 1;
    return;
  }
  const url = new URL('/api/reload', base);
  let response: { status: number; text: string };
  try {
    const headers = { 'content-type': 'application/json', ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) };
    response = await postJson(url, headers, '{}', options.answerTimeoutMs ?? ANSWER_MARGIN_MS + (settings?.shutdown.drainTimeoutMs ?? DEFAULT_DRAIN_MS));
  } catch (error) {
    if (!(error instanceof AdminUnreachable)) throw error;
    process.stderr.write(
      error.connected
        ? `ferry: the gateway's admin server at ${base} took the request but gave no answer: ${error.message}; the config may be applied or not: see the gateway's log\n`
        : `ferry: cannot reach the gateway's admin server at ${base}: ${error.message}; is \`ferry run\` running there? Pass --admin URL or --config FILE\n`,
    );
    process.exitCode = 1;
    return;
  }
  const { text } = response;
  if (response.status === 401) {
    // With a token sent, the usual cause: it was just rotated, and the gateway takes the new one with this very reload.
    const what =
      token === undefined
        ? 'no admin token was sent: set FERRY_ADMIN_TOKEN, or pass --config FILE to read it from the config'
        : 'if the token was just rotated, the gateway still expects the previous one until this reload: send it with the previous token (FERRY_ADMIN_TOKEN=<previous token> ferry reload ...) or send `ferry run` SIGHUP';
    process.stderr.write(`ferry: the gateway's admin server at ${base} refused the admin token (HTTP 401); ${what}\n`);
    process.exitCode = 1;
    return;
  }
  if (options.json === true) process.stdout.write(text);
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    process.stderr.write(`ferry: unexpected answer from ${url} (HTTP ${response.status}): ${text.slice(0, 200)}\n`);
    process.exitCode = 1;
    return;
  }
  if (response.status === 200) {
    if (options.json !== true) printApplied(body as Applied);
    return;
  }
  process.exitCode = 1;
  if (response.status === 422 || response.status === 409) {
    const { errors } = body as { errors: ConfigIssue[] };
    for (const issue of errors) process.stderr.write(`${formatIssue(issue)}\n`);
    const count = errors.length === 1 ? '1 problem' : `${errors.length} problems`;
    process.stderr.write(`ferry: reload refused (${count}); the gateway keeps running its current config\n`);
    return;
  }
  process.stderr.write(`ferry: reload failed (HTTP ${response.status}): ${text.trim()}\n`);
}

/** What a changed admin token means for the scripts that call the admin server. */
const ADMIN_TOKEN_CHANGES: Record<string, string> = {
  added: 'added (required from now on)',
  replaced: 'replaced (required from now on; the previous one gets 401)',
  removed: 'removed (the admin server on loopback needs none now)',
};

function printApplied({ applied, warnings }: Applied): void {
  const list = (names: string[]) => (names.length === 0 ? '-' : names.join(', '));
  // Absent from a gateway that runs an older version than this command.
  const databases = applied.databases ?? [];
  const lines = [
    'reloaded',
    `  added:     ${list(applied.added)}`,
    `  removed:   ${list(applied.removed)}`,
    `  changed:   ${list(applied.changed)}`,
    `  unchanged: ${list(applied.unchanged)}`,
    `  device profiles: ${applied.devices ? 'changed (for new logins)' : 'unchanged'}`,
    `  databases: ${databases.length === 0 ? 'unchanged' : `${databases.join(', ')} (open anew on next use)`}`,
    ...(applied.tls === true ? ['  mqtt.tls certificate: renewed (for new connections; connected devices stay)'] : []),
    ...(applied.adminToken === undefined ? [] : [`  admin token: ${ADMIN_TOKEN_CHANGES[applied.adminToken] ?? applied.adminToken}`]),
    ...warnings.map((w) => `warning: ${w}`),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

/** The token to send: FERRY_ADMIN_TOKEN, else the config's admin token (never a flag: command lines are visible to every user). */
function adminToken(config: GatewayConfig | undefined): string | undefined {
  const fromEnv = process.env['FERRY_ADMIN_TOKEN'];
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  return config?.adminToken;
}

function adminUrl(options: ReloadOptions, config: GatewayConfig | undefined): string | undefined {
  if (options.admin !== undefined) return options.admin;
  if (options.config === undefined) return DEFAULT_ADMIN;
  if (config === undefined) {
    process.stderr.write('ferry: cannot read the admin address from a config with problems; pass --admin URL\n');
    return undefined;
  }
  if (!config.admin.enabled) {
    process.stderr.write(`ferry: admin.enabled is false in ${options.config}: the gateway has no admin server to ask; send it SIGHUP instead\n`);
    return undefined;
  }
  const host = config.admin.host === '0.0.0.0' ? '127.0.0.1' : config.admin.host === '::' ? '::1' : config.admin.host;
  return `http://${host.includes(':') ? `[${host}]` : host}:${config.admin.port}`;
}
