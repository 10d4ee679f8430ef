import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { FileAt } from '../core/component.ts';
import { FerryError } from '../core/errors.ts';
import { readPemFile, readSecret } from '../config/secrets.ts';
import { MAX_TIMER_MESSAGE, MAX_TIMER_MS } from '../core/timer-limit.ts';

/**
 * Connection settings of every Postgres component (this sink; later a LISTEN source and the
 * migrations): one zod schema, parsed into a pool's options when the component starts. The
 * password is never in the config, only where to find it, and never in a log line, an error
 * or the status.
 */
export const connectionFields = () => ({
  url: z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'expected postgres://user@host:port/database')
    .optional()
    .meta({
      description:
        'The server as a URL: `postgres://user[:password]@host[:port]/database` (`?host=/var/run/postgresql` for a Unix socket). Take it from the environment (`${POSTGRES_URL}`) when it holds a password. Give `url` or `host`, not both.',
      examples: ['postgres://ferry@127.0.0.1:5432/telemetry', '${POSTGRES_URL}'],
    }),
  host: z
    .string()
    .min(1)
    .optional()
    .meta({ description: 'Server host name or address, or the directory of its Unix socket (starting with `/`). Give `url` or `host`.', examples: ['db.example.com'] }),
  port: z
    .int()
    .min(1)
    .max(65535)
    .optional()
    .meta({ description: 'Server port, with `host`; 5432 when absent.', examples: [5432] }),
  database: z
    .string()
    .min(1)
    .optional()
    .meta({ description: 'Database, with `host` (required there).', examples: ['telemetry'] }),
  user: z
    .string()
    .min(1)
    .optional()
    .meta({ description: 'User, with `host` (required there).', examples: ['ferry'] }),
  password: z
    .strictObject(
      {
        env: z
          .string()
          .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'an environment variable name')
          .optional()
          .meta({ description: 'Name of the environment variable holding the password.', examples: ['PGPASSWORD'] }),
        file: z
          .string()
          .min(1)
          .optional()
          .meta({
            description: 'File holding the password (relative to the bridge file), read when the sink starts; one trailing newline is dropped.',
            examples: ['/run/secrets/pg-password'],
          }),
      },
      {
        error: (issue) =>
          issue.code === 'invalid_type'
            ? 'give where the password is, not the password: `password: {env: PG_PASSWORD}` or `password: {file: /run/secrets/pg-password}`'
            : undefined,
      },
    )
    .refine((password) => (password.env === undefined) !== (password.file === undefined), 'give one of `env` and `file`')
    .optional()
    .meta({
      description:
        'Where the password is: an environment variable (`env`) or a file (`file`), never the password itself. It overrides a password in `url`; none when absent (trust or certificate authentication).',
      examples: [{ env: 'PGPASSWORD' }],
    }),
  ssl: z
    .strictObject({
      mode: z
        .enum(['disable', 'require', 'verify-ca', 'verify-full'])
        .default('verify-full')
        .meta({
          description:
            "As libpq's sslmode: `require` encrypts without checking the server's certificate; `verify-ca` checks it is signed by `ca`; `verify-full` also checks it names the host.",
          examples: ['verify-full'],
        }),
      ca: z
        .string()
        .min(1)
        .optional()
        .meta({
          description: "PEM file (relative to the bridge file) of the CAs that sign the server's certificate (the system's CAs when absent).",
          examples: ['/etc/ferry/pg-ca.crt'],
        }),
      cert: z
        .string()
        .min(1)
        .optional()
        .meta({ description: "PEM file of Ferry's client certificate, for servers that authenticate by certificate.", examples: ['/etc/ferry/pg-client.crt'] }),
      key: z
        .string()
        .min(1)
        .optional()
        .meta({ description: "PEM file of the client certificate's private key.", examples: ['/etc/ferry/pg-client.key'] }),
    })
    .superRefine((ssl, ctx) => {
      if ((ssl.cert === undefined) !== (ssl.key === undefined)) ctx.addIssue({ code: 'custom', message: 'give both `cert` and `key`, or neither' });
    })
    .optional()
    .meta({ description: 'TLS to the server; none when absent. `ferry validate` checks its files can be read.' }),
  poolSize: z
    .int()
    .min(1)
    .max(100)
    .default(4)
    .meta({
      description:
        'Most connections of the pool. Components with the same connection settings share one pool per process; a sink uses up to its `concurrency` (1 by default), an outbox source `maxBatches` plus one.',
      examples: [4],
    }),
  connectTimeoutMs: z
    .int()
    .min(100)
    .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
    .default(5000)
    .meta({ description: 'Longest wait for a connection (to open one, or for one of the pool to be free).', examples: [5000] }),
  statementTimeoutMs: z
    .int()
    .min(100)
    .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
    .default(30_000)
    .meta({
      description: 'The server cancels a statement running longer (`statement_timeout`); the batch is retried.',
      examples: [30000],
    }),
  idleTimeoutMs: z
    .int()
    .min(0)
    .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
    .default(60_000)
    .meta({ description: 'An idle connection is closed after this long; 0 keeps it open.', examples: [60000] }),
});

const connectionSchema = () => z.strictObject(connectionFields());
export type ConnectionConfig = z.output<ReturnType<typeof connectionSchema>>;

/** Where to connect, from `url` or from `host`/`port`/`database`/`user`. */
export interface Endpoint {
  readonly host: string;
  readonly port: number;
  readonly database: string;
  readonly user: string;
  /** The password written in `url`, if any. */
  readonly urlPassword?: string;
}

/** The part of a zod refinement context that `refineConnection` reports to. */
interface Issues {
  addIssue(issue: { code: 'custom'; path: (string | number)[]; message: string }): void;
}

/** Cross-field rules of the connection settings, for the `superRefine` of a component's schema. */
export function refineConnection(config: ConnectionConfig, ctx: Issues): void {
  if ((config.url === undefined) === (config.host === undefined)) {
    ctx.addIssue({
      code: 'custom',
      path: config.url === undefined ? ['host'] : ['url'],
      message: 'give the server as `url`, or as `host` with `database` and `user`, not both and not neither',
    });
    return;
  }
  if (config.url !== undefined) {
    for (const key of ['port', 'database', 'user'] as const) {
      if (config[key] !== undefined) ctx.addIssue({ code: 'custom', path: [key], message: `\`${key}\` is part of \`url\`; give it there` });
    }
    const parsed = parseUrl(config.url);
    if ('problem' in parsed) ctx.addIssue({ code: 'custom', path: ['url'], message: parsed.problem });
    else if (parsed.endpoint.host.startsWith('/') && config.ssl !== undefined && config.ssl.mode !== 'disable')
      ctx.addIssue({ code: 'custom', path: ['ssl'], message: 'a Unix socket takes no TLS' });
    return;
  }
  for (const key of ['database', 'user'] as const) {
    if (config[key] === undefined) ctx.addIssue({ code: 'custom', path: [key], message: `\`${key}\` is required with \`host\`` });
  }
  if (config.host?.startsWith('/') && config.ssl !== undefined && config.ssl.mode !== 'disable')
    ctx.addIssue({ code: 'custom', path: ['ssl'], message: 'a Unix socket takes no TLS' });
}

/** The endpoint of a config that passed `refineConnection`. */
export function endpointOf(config: ConnectionConfig): Endpoint {
  if (config.url !== undefined) {
    const parsed = parseUrl(config.url);
    if ('problem' in parsed) throw new FerryError('CONFIG_INVALID', `url: ${parsed.problem}`);
    return parsed.endpoint;
  }
  return { host: config.host as string, port: config.port ?? 5432, database: config.database as string, user: config.user as string };
}

/**
 * Parses a `postgres://` URL. TLS is set with `ssl:` (whose files are checked at load), so
 * `sslmode` and the other libpq parameters are refused rather than half-understood.
 */
function parseUrl(text: string): { endpoint: Endpoint } | { problem: string } {
  let url: URL;
  try {
    // `postgres://user@/db?host=/socket/dir` names no host before the path, which a WHATWG URL
    // with credentials does not allow: a placeholder stands in, and `host` must then be given.
    url = new URL(text.replace(/^(postgres(?:ql)?:\/\/[^@/]*@)\//, '$1-/'));
  } catch {
    return { problem: 'not a URL (expected postgres://user@host:port/database)' };
  }
  for (const name of url.searchParams.keys()) {
    if (name === 'host') continue;
    return {
      problem: name.startsWith('ssl')
        ? `set TLS with \`ssl:\` (mode, ca, cert, key), not with the URL parameter '${name}'`
        : `unsupported URL parameter '${name}' (only \`host\`, a Unix socket directory)`,
    };
  }
  // The parts are %-decoded; a raw `%` (in a password, say) is not an escape. The problem names
  // the part, never its value.
  const user = decodePart(url.username);
  const database = decodePart(url.pathname.replace(/^\//, ''));
  const password = decodePart(url.password);
  if (user === undefined || password === undefined || database === undefined) {
    const part = user === undefined ? 'user' : password === undefined ? 'password' : 'database';
    return { problem: `the URL's ${part} has a malformed %-escape (percent-encode "%" as %25)` };
  }
  if (user === '') return { problem: 'the URL names no user (postgres://user@host/database)' };
  const socket = url.searchParams.get('host');
  const host = socket ?? url.hostname.replace(/^\[(.*)\]$/, '$1');
  if (host === '' || host === '-') return { problem: 'the URL names no host' };
  return {
    endpoint: {
      host,
      port: url.port === '' ? 5432 : Number(url.port),
      database: database === '' ? user : database,
      user,
      ...(password === '' ? {} : { urlPassword: password }),
    },
  };
}

/** A %-encoded URL part, decoded; `undefined` for a malformed escape. */
function decodePart(text: string): string | undefined {
  try {
    return decodeURIComponent(text);
  } catch {
    return undefined;
  }
}

/** The TLS files of a connection, for the check at config loading. */
export function sslFiles(config: ConnectionConfig): FileAt[] {
  const ssl = config.ssl;
  if (ssl === undefined || ssl.mode === 'disable') return [];
  return (['ca', 'cert', 'key'] as const).flatMap((key) => (ssl[key] === undefined ? [] : [{ path: ['ssl', key], file: ssl[key] }]));
}

/** The files a connection reads when it starts: its TLS files and its password file. */
export function connectionFiles(config: ConnectionConfig): FileAt[] {
  const file = config.password?.file;
  return [...sslFiles(config), ...(file === undefined ? [] : [{ path: ['password', 'file'], file, secret: true as const }])];
}

/** The server, for logs and errors: `postgres://ferry@db:5432/telemetry`, never a password. */
export function describeEndpoint(endpoint: Endpoint): string {
  const host = endpoint.host.includes(':') ? `[${endpoint.host}]` : endpoint.host;
  return endpoint.host.startsWith('/')
    ? `postgres://${endpoint.user}@/${endpoint.database}?host=${endpoint.host}`
    : `postgres://${endpoint.user}@${host}:${endpoint.port}/${endpoint.database}`;
}

/** The options of a pg Pool (the subset Ferry sets; pg's own defaults read the environment, so all are given). */
export interface PoolOptions {
  readonly host: string;
  readonly port: number;
  readonly database: string;
  readonly user: string;
  readonly password: string;
  readonly ssl: false | { rejectUnauthorized: boolean; ca?: Buffer; cert?: Buffer; key?: Buffer; checkServerIdentity?: () => undefined };
  readonly max: number;
  readonly connectionTimeoutMillis: number;
  readonly idleTimeoutMillis: number;
  readonly statement_timeout: number;
  readonly query_timeout: number;
  /** 0 sends none: the role's or the database's applies. */
  readonly idle_in_transaction_session_timeout: number;
  /** Settings the server applies to the session at its start, over the role's and the database's (`-c name=value`). */
  readonly options?: string;
  readonly application_name: string;
  readonly keepAlive: boolean;
  readonly keepAliveInitialDelayMillis: number;
}

/** Silence before a connection's first keepalive probe: at least this long, so that an idle connection kept open (idleTimeoutMs 0, an outbox's LISTEN) costs a metered link little. */
const KEEPALIVE_MIN_S = 30;

/** connectTimeoutMs, at least KEEPALIVE_MIN_S, in whole seconds as Linux takes them (to 32767). */
function keepAliveDelay(connectTimeoutMs: number): number {
  return Math.min(Math.max(Math.ceil(connectTimeoutMs / 1000), KEEPALIVE_MIN_S), 32_767) * 1000;
}

/**
 * How long pg waits for a reply before it gives the connection up (query_timeout; the sink's
 * pipelined statements count it from when the server could run them: `PipelinedConnection`);
 * 0, none, with `statementTimeoutMs: 0`. At most MAX_TIMER_MS, though the schema takes each term up to that:
 * Node fires a longer timer after 1 ms (every statement failed with `Query read timeout`), and
 * PostgreSQL refuses a longer `SET LOCAL idle_in_transaction_session_timeout`.
 *
 * It is also how long a session may wait for the next statement of its open transaction before
 * the server ends it (every pool's idle_in_transaction_session_timeout): a transaction idle that
 * long was most likely left behind by a connection the client gave up on (a network cut off,
 * which tells the server nothing): without this the server kept it, and the locks of the rows it
 * wrote, until its TCP noticed (hours), and a handler's retry of the same write waited for them.
 * A statement running, however long, is not idle; a handler's own pause inside a transaction
 * is, and ends it too. The sink and the outbox source set theirs per transaction. Not set with
 * `statementTimeoutMs: 0` (`ferry migrate`): the role's or the database's applies.
 */
export function replyTimeoutMs(config: Pick<ConnectionConfig, 'statementTimeoutMs' | 'connectTimeoutMs'>): number {
  return config.statementTimeoutMs === 0 ? 0 : Math.min(config.statementTimeoutMs + config.connectTimeoutMs, MAX_TIMER_MS);
}

/** What a pool is made from: its options, a key equal for equal settings (a hash: it holds the password), and a description. */
export interface PoolSettings {
  readonly key: string;
  readonly options: PoolOptions;
  readonly description: string;
}

/**
 * Resolves a connection config into pool settings when a component starts: reads the
 * password from its variable or file and the TLS files. Throws a CONFIG_INVALID FerryError
 * naming what is missing (never the password).
 *
 * `statementTimeoutMs: 0`, which only `ferry migrate` gives (the schema takes 100 and up),
 * sets no timeout: the sessions run with `statement_timeout = 0`, whatever the role or the
 * database default to, and pg waits for every reply as long as it takes.
 */
export function poolSettings(config: ConnectionConfig, applicationName: string, configDir: string, component: string): PoolSettings {
  const endpoint = endpointOf(config);
  const description = describeEndpoint(endpoint);
  const fail = (message: string) => new FerryError('CONFIG_INVALID', `${component}: ${message}`, { component, retryable: false });
  let password = endpoint.urlPassword ?? '';
  if (config.password !== undefined) {
    const read = readSecret(config.password, configDir);
    if ('problem' in read) throw fail(`cannot read the password for ${description}: ${read.problem}`);
    password = read.value;
  }
  let ssl: PoolOptions['ssl'] = false;
  const files: Record<string, string> = {};
  if (config.ssl !== undefined && config.ssl.mode !== 'disable') {
    const pem = (key: 'ca' | 'cert' | 'key') => {
      const file = config.ssl?.[key];
      if (file === undefined) return {};
      const read = readPemFile(file, configDir);
      if ('problem' in read) throw fail(`cannot read the TLS ${key} file '${file}': ${read.problem}`);
      files[key] = createHash('sha256').update(read.pem).digest('hex');
      return { [key]: read.pem };
    };
    const mode = config.ssl.mode;
    ssl = {
      rejectUnauthorized: mode !== 'require',
      ...pem('ca'),
      ...pem('cert'),
      ...pem('key'),
      // verify-ca: the chain is checked, the host name is not.
      ...(mode === 'verify-ca' ? { checkServerIdentity: () => undefined } : {}),
    };
  }
  const options: PoolOptions = {
    host: endpoint.host,
    port: endpoint.port,
    database: endpoint.database,
    user: endpoint.user,
    password,
    ssl,
    max: config.poolSize,
    connectionTimeoutMillis: config.connectTimeoutMs,
    idleTimeoutMillis: config.idleTimeoutMs,
    statement_timeout: config.statementTimeoutMs,
    // A server that stops answering (a cut network) fails the statement too, a little after the server's own timeout would have.
    query_timeout: replyTimeoutMs(config),
    // pg sends no statement_timeout of 0, which would leave the role's or the database's.
    ...(config.statementTimeoutMs === 0 ? { options: '-c statement_timeout=0' } : {}),
    idle_in_transaction_session_timeout: replyTimeoutMs(config),
    application_name: applicationName,
    // A network cut off tells neither end. Without this the kernel's defaults apply (the first
    // probe after two hours of silence): a statement whose reply was cut off waited for
    // query_timeout above, for good with statementTimeoutMs 0. Silent for 30 s (or
    // connectTimeoutMs if longer), the connection is probed every second (Node's fixed interval)
    // and fails after ten unanswered probes. The server's kernel answers them however long its
    // statement runs, so a long statement is not given up.
    keepAlive: true,
    keepAliveInitialDelayMillis: keepAliveDelay(config.connectTimeoutMs),
  };
  const identity = { ...options, ssl: ssl === false ? false : { mode: config.ssl?.mode, files } };
  const key = createHash('sha256').update(JSON.stringify(identity)).digest('hex');
  return { key, options, description };
}
