import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { MAX_TIMER_MS } from '../../../src/core/timer-limit.ts';
import { poolSettings, replyTimeoutMs } from '../../../src/postgres/connection.ts';
import { failureKind, statementError } from '../../../src/postgres/errors.ts';
import { identifierProblem, parseTableName, quoteTable } from '../../../src/postgres/identifiers.ts';
import { postgresSink } from '../../../src/postgres/sink.ts';

const dir = mkdtempSync(join(tmpdir(), 'ferry-pg-settings-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const base = { table: 'public.readings', columns: { id: '${id}', device: '${1}' } };
const problems = (extra: Record<string, unknown>) => {
  const result = postgresSink.schema.safeParse({ ...base, ...extra });
  return result.success ? [] : result.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
};

test('connection settings: url or host, never a password in the config, libpq URL parameters refused', () => {
  assert.deepEqual(problems({ url: 'postgres://ferry@db:5432/telemetry' }), []);
  assert.deepEqual(problems({ host: 'db', database: 'telemetry', user: 'ferry', password: { env: 'PG_PASSWORD' } }), []);
  assert.deepEqual(problems({ url: 'postgres://ferry@db/t', password: 'secret' }), [
    'password: give where the password is, not the password: `password: {env: PG_PASSWORD}` or `password: {file: /run/secrets/pg-password}`',
  ]);
  assert.deepEqual(problems({ url: 'postgres://ferry@db/t', password: { env: 'A', file: 'b' } }), ['password: give one of `env` and `file`']);
  assert.deepEqual(problems({ url: 'postgres://ferry@db/t?sslmode=require' }), ["url: set TLS with `ssl:` (mode, ca, cert, key), not with the URL parameter 'sslmode'"]);
  assert.deepEqual(problems({ url: 'postgres://db/t' }), ['url: the URL names no user (postgres://user@host/database)']);
  assert.deepEqual(problems({ url: 'postgres://ferry@/t' }), ['url: the URL names no host']);
  assert.deepEqual(problems({ url: 'postgres://ferry@db/t?application_name=x' }), ["url: unsupported URL parameter 'application_name' (only `host`, a Unix socket directory)"]);
  assert.deepEqual(problems({ host: 'db' }), ['database: `database` is required with `host`', 'user: `user` is required with `host`']);
  assert.deepEqual(problems({ url: 'postgres://ferry@db/t', user: 'x' }), ['user: `user` is part of `url`; give it there']);
  assert.deepEqual(problems({}), ['host: give the server as `url`, or as `host` with `database` and `user`, not both and not neither']);
  assert.deepEqual(problems({ url: 'postgres://ferry@db/t', ssl: { cert: 'c.pem' } }), ['ssl: give both `cert` and `key`, or neither']);
});

test('table and column names: a strict pattern, quoted as written; a conflict key is required', () => {
  assert.equal(identifierProblem('received_at'), undefined);
  assert.equal(identifierProblem('Readings'), undefined);
  assert.match(identifierProblem('a"b') ?? '', /it has "\\""/);
  assert.match(identifierProblem('1st') ?? '', /not starting with a digit/);
  assert.match(identifierProblem('x'.repeat(64)) ?? '', /1 to 63/);
  assert.match(identifierProblem('ä') ?? '', /it has "ä"/);
  assert.deepEqual(parseTableName('readings'), { table: { schema: undefined, name: 'readings' } });
  assert.equal(quoteTable({ schema: 'public', name: 'Readings' }), '"public"."Readings"');
  assert.deepEqual(problems({ url: 'postgres://f@db/t', table: 'public.readings;--' }), [
    'table: table \'public.readings;--\': a name is 1 to 63 letters, digits or "_", not starting with a digit; it has ";" "-"',
  ]);
  assert.deepEqual(problems({ url: 'postgres://f@db/t', columns: { body: '${payload}' } }), [
    "columns: map a column to ${id} (the message's id, with a unique index) or list conflictColumns: a message delivered again must find the row it already wrote",
  ]);
  assert.deepEqual(problems({ url: 'postgres://f@db/t', columns: { device: '${1}', at: '${timestamp}' }, conflictColumns: ['device', 'nope'] }), [
    "conflictColumns.1: 'nope' is not one of the mapped columns (device, at)",
  ]);
  assert.deepEqual(problems({ url: 'postgres://f@db/t', columns: { id: '${id}' }, onConflict: 'update' }), [
    'onConflict: update sets the mapped columns besides the conflict key, and there are none: use ignore, or map more columns',
  ]);
  assert.deepEqual(problems({ url: 'postgres://f@db/t', columns: { id: '${id}', x: '${nope}' } }), [
    "columns.x: template '${nope}': unknown field ${nope}: use ${1}..${n} (the filter's + wildcards), ${#}, ${topic}, ${clientId}, ${username}, ${key}, ${header.NAME}, ${payload.FIELD}, ${payload}, ${id} or ${timestamp}",
  ]);
});

test('pool settings: the password read from its variable or file, equal settings give equal keys, and no key or description holds the password', () => {
  const file = join(dir, 'pw');
  writeFileSync(file, 's3cret\n');
  const parse = (extra: Record<string, unknown>) => postgresSink.schema.parse({ ...base, ...extra });
  const fromFile = poolSettings(parse({ url: 'postgres://ferry@db:6543/telemetry', password: { file: 'pw' } }), 'gw-1', dir, 'c');
  assert.equal(fromFile.options.password, 's3cret');
  assert.deepEqual(
    [fromFile.options.host, fromFile.options.port, fromFile.options.database, fromFile.options.user, fromFile.options.application_name],
    ['db', 6543, 'telemetry', 'ferry', 'gw-1'],
  );
  assert.equal(fromFile.description, 'postgres://ferry@db:6543/telemetry');
  const inUrl = poolSettings(parse({ url: 'postgres://ferry:s3cret@db:6543/telemetry' }), 'gw-1', dir, 'c');
  assert.equal(inUrl.key, fromFile.key, 'the same connection, whichever way the password came');
  assert.equal(inUrl.description, 'postgres://ferry@db:6543/telemetry');
  assert.notEqual(poolSettings(parse({ url: 'postgres://ferry:s3cret@db:6543/telemetry', poolSize: 2 }), 'gw-1', dir, 'c').key, inUrl.key);
  assert.doesNotMatch(inUrl.key, /s3cret/);
  assert.throws(
    () => poolSettings(parse({ url: 'postgres://ferry@db/t', password: { env: 'FERRY_SURELY_UNSET_VAR' } }), 'gw', dir, 'sink x'),
    /sink x: cannot read the password for postgres:\/\/ferry@db:5432\/t: the environment variable FERRY_SURELY_UNSET_VAR is not set/,
  );
  const socket = poolSettings(parse({ url: 'postgres://ferry@/telemetry?host=/var/run/postgresql' }), 'gw', dir, 'c');
  assert.deepEqual([socket.options.host, socket.description], ['/var/run/postgresql', 'postgres://ferry@/telemetry?host=/var/run/postgresql']);
  assert.equal(poolSettings(parse({ url: 'postgres://ferry@db/t', ssl: { mode: 'require' } }), 'gw', dir, 'c').options.ssl && true, true);
});

test('pool settings: the reply timeout and idle_in_transaction_session_timeout are statementTimeoutMs plus connectTimeoutMs, none without a statement timeout, at most 2^31 - 1 ms', () => {
  const parse = (extra: Record<string, unknown>) => postgresSink.schema.parse({ ...base, url: 'postgres://ferry@db/t', ...extra });
  const timeouts = (config: ReturnType<typeof parse>) => {
    const { query_timeout, idle_in_transaction_session_timeout, options } = poolSettings(config, 'gw', dir, 'c').options;
    return { query_timeout, idle_in_transaction_session_timeout, options, reply: replyTimeoutMs(config) };
  };
  assert.deepEqual(timeouts(parse({})), { query_timeout: 35_000, idle_in_transaction_session_timeout: 35_000, options: undefined, reply: 35_000 });
  // `ferry migrate`: none, and the role's or the database's statement_timeout overridden.
  assert.deepEqual(timeouts({ ...parse({}), statementTimeoutMs: 0 }), { query_timeout: 0, idle_in_transaction_session_timeout: 0, options: '-c statement_timeout=0', reply: 0 });
  // The longest the schema takes: a timer past 2^31 - 1 fires after 1 ms, and PostgreSQL refuses the setting.
  assert.deepEqual(timeouts(parse({ statementTimeoutMs: MAX_TIMER_MS, connectTimeoutMs: MAX_TIMER_MS })), {
    query_timeout: MAX_TIMER_MS,
    idle_in_transaction_session_timeout: MAX_TIMER_MS,
    options: undefined,
    reply: MAX_TIMER_MS,
  });
});

test("SQLSTATE classes decide: unreachable, retry now, the row's fault, the configuration's", () => {
  const pgError = (code: string) => Object.assign(new Error(code), { code, severity: 'ERROR' });
  const kinds = ['08006', '57P01', '53300', '40001', '40P01', '22P02', '23505', '21000', '42P01', '42501', '57014', 'XX000'].map((code) => [code, failureKind(pgError(code))]);
  assert.deepEqual(Object.fromEntries(kinds), {
    '08006': 'unavailable',
    '57P01': 'unavailable',
    '53300': 'unavailable',
    '40001': 'conflict',
    '40P01': 'conflict',
    '22P02': 'row',
    '23505': 'row',
    '21000': 'row',
    '42P01': 'config',
    '42501': 'config',
    '57014': 'other',
    XX000: 'other',
  });
  assert.equal(failureKind(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })), 'unavailable');
  assert.equal(failureKind(Object.assign(new Error('write EPIPE'), { code: 'EPIPE' })), 'unavailable', 'a Node code is no SQLSTATE');
  const error = statementError('sink: insert failed', Object.assign(pgError('relation "x" does not exist'), { code: '42P01' }), { bridge: 'b' });
  assert.deepEqual([error.code, error.retryable, error.message], ['CONFIG_INVALID', true, 'sink: insert failed: SQLSTATE 42P01: relation "x" does not exist']);
});
