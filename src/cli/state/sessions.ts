import type { SessionDetail, SessionSummary } from '../../mqtt/persistence/state-file.ts';
import { formatBytes, formatTable } from '../buffer/format.ts';
import { DataDirLock, lockPath } from '../../runtime/data-dir-lock.ts';
import { fail } from '../buffer/open.ts';
import type { DataDirOptions } from '../load.ts';
import { jsonLine, lineText } from '../payload.ts';
import { when, withBrokerState } from './open.ts';

export interface SessionsOptions extends DataDirOptions {
  readonly json?: boolean;
}

export interface PurgeSessionOptions extends DataDirOptions {
  readonly yes?: boolean;
  readonly force?: boolean;
  readonly json?: boolean;
}

/** `ferry sessions list`: every saved session, one line each (or one JSON object each). */
export function listSessionsCommand(options: SessionsOptions): Promise<void> {
  return withBrokerState(options, 'read', (state) => {
    const sessions = state.sessions();
    if (options.json === true) {
      for (const s of sessions) process.stdout.write(`${jsonLine(toJson(s))}\n`);
      return;
    }
    const rows = [['CLIENT', 'OWNER', 'STATE', 'EXPIRES', 'SUBS', 'QUEUED', 'BYTES'], ...sessions.map(toRow)];
    process.stdout.write(`${formatTable(rows, 4)}\n${sessions.length} session${sessions.length === 1 ? '' : 's'}\n`);
  });
}

/** `ferry sessions show <clientId>`: one session with its subscriptions. */
export function showSessionCommand(clientId: string, options: SessionsOptions): Promise<void> {
  return withBrokerState(options, 'read', (state) => {
    const s = state.session(clientId);
    if (options.json === true) {
      process.stdout.write(`${jsonLine({ ...toJson(s), subscriptionList: s.subscriptionList, hasWill: s.hasWill })}\n`);
      return;
    }
    process.stdout.write(`${describe(s)}\n`);
  });
}

/**
 * `ferry sessions purge <clientId>`: removes a saved session whose client is not connected (a
 * connected client's subscriptions are in the running broker's memory too: it is refused).
 */
export function purgeSessionCommand(clientId: string, options: PurgeSessionOptions): Promise<void> {
  if (options.yes !== true) {
    return withBrokerState(options, 'read', (state) => {
      const s = state.session(clientId);
      fail(`would delete the session of '${lineText(clientId)}': ${s.subscriptions} subscription(s), ${s.queuedMessages} queued message(s); run again with --yes to delete it`);
    });
  }
  return withBrokerState(options, 'write', (state, dataDir) => {
    // The running broker holds a connected client's session in its memory too.
    if (options.force === true && DataDirLock.isHeld(dataDir)) {
      fail(
        `a gateway is running on ${dataDir} (it holds ${lockPath(dataDir)}): --force is only for a gateway that stopped without recording the disconnect; disconnect the client instead`,
      );
      return;
    }
    const s = state.purgeSession(clientId, options.force === true);
    if (options.json === true) process.stdout.write(`${jsonLine({ purged: toJson(s) })}\n`);
    else
      process.stdout.write(
        `deleted the session of '${lineText(clientId)}': ${s.subscriptions} subscription(s), ${s.queuedMessages} queued message(s) (${formatBytes(s.queuedBytes)})\n`,
      );
  });
}

function state(s: SessionSummary): string {
  return s.connected ? 'connected' : `offline since ${when(s.disconnectedAt)}`;
}

function toRow(s: SessionSummary): string[] {
  return [
    lineText(s.clientId),
    s.owner === null ? '-' : lineText(s.owner || '(anonymous)'),
    state(s),
    when(s.expiresAt),
    String(s.subscriptions),
    String(s.queuedMessages),
    formatBytes(s.queuedBytes),
  ];
}

function describe(s: SessionDetail): string {
  const lines = [
    `client:        ${lineText(s.clientId)}`,
    `owner:         ${s.owner === null ? '-' : lineText(s.owner || '(anonymous)')}`,
    `state:         ${state(s)}`,
    `expires:       ${s.connected ? '- (connected)' : s.expiresAt === null ? 'never' : when(s.expiresAt)}`,
    `queued:        ${s.queuedMessages} message(s), ${formatBytes(s.queuedBytes)}`,
    `will:          ${s.hasWill ? 'stored' : 'none'}`,
    `subscriptions: ${s.subscriptions}`,
    ...s.subscriptionList.map((sub) => `  ${lineText(sub.topic)}  qos ${sub.qos}`),
  ];
  return lines.join('\n');
}

function toJson(s: SessionSummary) {
  return {
    clientId: s.clientId,
    owner: s.owner,
    connected: s.connected,
    disconnectedAt: s.disconnectedAt === null ? null : new Date(s.disconnectedAt).toISOString(),
    expiresAt: s.expiresAt === null ? null : new Date(s.expiresAt).toISOString(),
    subscriptions: s.subscriptions,
    queuedMessages: s.queuedMessages,
    queuedBytes: s.queuedBytes,
  };
}
