import { describeError } from '../core/errors.ts';
import type { PoolSettings } from './connection.ts';
import type { PgQueryable } from './pools.ts';
import { steadyNow } from '../core/steady-clock.ts';

/** A session that only reads the server's views, with the part of pg's Client it calls. */
export interface WatchSession extends PgQueryable {
  end(): Promise<void>;
  /** The connection failed while idle: without a listener the process would crash. */
  on(event: 'error', listener: (error: Error) => void): unknown;
}

/** A session whose statements wait for it. */
export interface Blocker {
  readonly pid: number;
  readonly applicationName: string | null;
  readonly user: string | null;
  /** `idle in transaction`, `active`; null when the role may not see it (no pg_read_all_stats). */
  readonly state: string | null;
  /** Since its transaction (or, outside one, its statement) began. */
  readonly seconds: number | null;
  /** The start of its last statement, on one line. */
  readonly query: string | null;
  /** Its state and statement are another role's, which this role may not see (no pg_read_all_stats). */
  readonly hidden: boolean;
}

/** What a session waits for, and which sessions hold it up (those holding the lock, or queued for it ahead). */
export interface LockWait {
  readonly lock: string;
  readonly blockers: readonly Blocker[];
}

const QUERY_CHARS = 100;

/** What pg_stat_activity shows as the statement of another role's session to a role without pg_read_all_stats. */
const HIDDEN_QUERY = '<insufficient privilege>';

/**
 * One row per session that `pid` waits for (pg_blocking_pids), with the lock it waits for. A
 * prepared transaction holding the lock shows as pid 0, in no pg_stat_activity row.
 */
const WAIT_QUERY = `
SELECT l.locktype, l.mode, l.relation::regclass::text AS relation, p.pid,
       b.application_name, b.usename AS "user", b.state,
       floor(extract(epoch FROM now() - coalesce(b.xact_start, b.query_start)))::int AS seconds,
       left(regexp_replace(b.query, '\\s+', ' ', 'g'), ${QUERY_CHARS + 1}) AS query
FROM pg_locks l
CROSS JOIN LATERAL unnest(pg_blocking_pids($1::int)) AS p(pid)
LEFT JOIN pg_stat_activity b ON b.pid = p.pid
WHERE l.pid = $1::int AND NOT l.granted
ORDER BY seconds DESC NULLS LAST, p.pid`;

interface WaitRow {
  locktype: string;
  mode: string;
  relation: string | null;
  pid: number;
  application_name: string | null;
  user: string | null;
  state: string | null;
  seconds: number | null;
  query: string | null;
}

/** What `pid` waits for now; undefined when it waits for no lock (or for one nobody holds any more). */
export async function lockWaitOf(session: PgQueryable, pid: number): Promise<LockWait | undefined> {
  const { rows } = await session.query<WaitRow>(WAIT_QUERY, [pid]);
  const first = rows[0];
  if (first === undefined) return undefined;
  const lock =
    first.locktype === 'relation' && first.relation !== null
      ? `${first.mode} on ${first.relation}`
      : first.locktype === 'transactionid'
        ? 'the end of a transaction that changed the same rows'
        : `${first.mode} (${first.locktype})`;
  return {
    lock,
    blockers: rows.map((r) => {
      const hidden = r.state === null && r.query === HIDDEN_QUERY;
      return { pid: r.pid, applicationName: r.application_name, user: r.user, state: r.state, seconds: r.seconds, query: hidden ? null : r.query, hidden };
    }),
  };
}

/** `1 h 2 min`, `3 min 4 s`, `5 s`. */
function duration(seconds: number): string {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  return h > 0 ? `${h} h ${m} min` : m > 0 ? `${m} min ${s} s` : `${s} s`;
}

function describeBlocker(b: Blocker): string {
  if (b.pid === 0) return '  a prepared transaction (see pg_prepared_xacts: COMMIT PREPARED or ROLLBACK PREPARED it)';
  const who = `pid ${b.pid}${b.applicationName ? ` '${b.applicationName}'` : ''}${b.user === null ? '' : ` (user ${b.user})`}`;
  const state = b.state === null ? '' : `, ${b.state}`;
  const open = b.seconds === null ? '' : `, ${b.state === 'active' ? 'running' : 'its transaction open'} for ${duration(b.seconds)}`;
  const query = b.query === null || b.query === '' ? '' : `: ${b.query.length > QUERY_CHARS ? `${b.query.slice(0, QUERY_CHARS)}…` : b.query}`;
  const hidden = b.hidden ? ', its state and statement hidden from this role (a role with pg_read_all_stats sees them)' : '';
  return `  ${who}${state}${open}${query}${hidden}`;
}

/** The lines an operator reads while `ferry migrate` waits: what for, for whom, and how to go on. */
export function describeLockWait(wait: LockWait, waitedMs: number): string {
  const pids = wait.blockers.filter((b) => b.pid !== 0).map((b) => b.pid);
  return [
    `ferry migrate: waiting ${duration(Math.round(waitedMs / 1000))} for ${wait.lock}, held up by:`,
    ...wait.blockers.map(describeBlocker),
    `ferry migrate: it goes on once ${wait.blockers.length === 1 ? 'that session commits or rolls back' : 'those sessions commit or roll back'}${
      pids.length === 0 ? '' : ` (or is ended: SELECT pg_terminate_backend(${pids.join(', ')}))`
    }; Ctrl-C stops it and leaves the database as it was (each run is one transaction)`,
    '',
  ].join('\n');
}

export interface LockWatchOptions {
  /** Opens the session that watches (not the migrating one: that one is waiting). */
  readonly open: () => Promise<WatchSession>;
  /** The migrating session's backend (`pg_backend_pid()`). */
  readonly pid: number;
  readonly report: (text: string) => void;
  /** A wait is reported once it lasted this long, */
  readonly firstAfterMs?: number;
  /** then again at most this often while it lasts. */
  readonly everyMs?: number;
  readonly pollMs?: number;
}

export interface LockWatch {
  /**
   * Ends the watched session (`pg_terminate_backend`), whatever it does: waiting for a lock,
   * running, or idle in its transaction, which the server rolls back. A cancelled backend
   * would stay queued for its lock until the lock was free (the server notices a client gone
   * only when it next talks to it), holding up every session queued behind it. False when
   * there is no watching session to do it from.
   */
  terminate(): Promise<boolean>;
  stop(): Promise<void>;
}

/**
 * Watches a session from another: while it waits for a lock, `report` hears what for and who
 * holds it, once it waited `firstAfterMs`, then every `everyMs`. Best effort: when the watching
 * session fails, one line says so and the watch ends; the watched session goes on.
 */
export function watchLockWaits(options: LockWatchOptions): LockWatch {
  const { pid, report, firstAfterMs = 3000, everyMs = 10_000, pollMs = 1000 } = options;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let session: WatchSession | undefined;
  let waitingSince: number | undefined;
  let reportedAt: number | undefined;
  const check = async (): Promise<void> => {
    session ??= await options.open();
    if (stopped) return;
    const wait = await lockWaitOf(session, pid);
    const now = steadyNow();
    if (wait === undefined) {
      waitingSince = undefined;
      reportedAt = undefined;
      return;
    }
    waitingSince ??= now;
    if (now - waitingSince < firstAfterMs || (reportedAt !== undefined && now - reportedAt < everyMs)) return;
    reportedAt = now;
    report(describeLockWait(wait, now - waitingSince));
  };
  const loop = (): Promise<void> =>
    check().then(
      () => {
        if (!stopped) timer = setTimeout(() => void (running = loop()), pollMs);
      },
      (error: unknown) => {
        if (!stopped) report(`ferry migrate: cannot watch for lock waits (${describeError(error)}); the migration goes on\n`);
      },
    );
  let running = loop();
  return {
    terminate: async () => {
      if (session === undefined) return false;
      try {
        return (await session.query<{ ended: boolean }>('SELECT pg_terminate_backend($1::int) AS ended', [pid])).rows[0]?.ended === true;
      } catch {
        return false;
      }
    },
    stop: async () => {
      stopped = true;
      clearTimeout(timer);
      await running;
      await session?.end().catch(() => {});
    },
  };
}

/** A watching session of its own, with the settings of the database (its own application_name). */
export async function openWatchSession(settings: PoolSettings): Promise<WatchSession> {
  const pg = (await import('pg')).default;
  const { options } = settings;
  const client = new pg.Client({ ...options, ssl: options.ssl === false ? false : { ...options.ssl } });
  client.on('error', () => {}); // the next query fails and says so
  await client.connect();
  return client as unknown as WatchSession;
}
