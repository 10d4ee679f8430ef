import type { TestContext } from 'node:test';
import pg from 'pg';
import { randomName, requireService } from './services.ts';

/** A schema of its own for one test, on the test server, dropped (with everything in it) when the test ends. */
export interface TestSchema {
  /** The server's URL (FERRY_TEST_PG). */
  readonly url: string;
  /** The schema's name: `ferry_t_<random>`. */
  readonly name: string;
  /** A connection of the test's own, closed when the test ends. */
  readonly client: pg.Client;
  query<R extends pg.QueryResultRow = Record<string, unknown>>(text: string, values?: unknown[]): Promise<R[]>;
}

export async function testSchema(t: TestContext): Promise<TestSchema> {
  const url = await requireService('pg');
  const name = randomName('ferry_t_');
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  t.after(async () => {
    await dropSchema(client, name).catch(() => {});
    await client.end();
  });
  await client.query(`CREATE SCHEMA ${name}`);
  return {
    url,
    name,
    client,
    query: async <R extends pg.QueryResultRow>(text: string, values?: unknown[]) => (await client.query<R>(text, values)).rows,
  };
}

/**
 * Drops the schema, ending the sessions that lock anything in it first: a failed test's cleanup
 * may run while the process it started (an outbox transaction waiting for acks) still holds
 * locks, and a DROP waiting for them would hang the test file instead of reporting the failure.
 */
async function dropSchema(client: pg.Client, name: string): Promise<void> {
  await client.query(
    `SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = $1 AND l.pid <> pg_backend_pid()`,
    [name],
  );
  await client.query(`DROP SCHEMA IF EXISTS ${name} CASCADE`);
}

/** A database of its own for one test, on the test server (for code that uses the search path: migrations), dropped when the test ends. */
export interface TestDatabase {
  /** A URL of the new database. */
  readonly url: string;
  readonly name: string;
  query<R extends pg.QueryResultRow = Record<string, unknown>>(text: string, values?: unknown[]): Promise<R[]>;
}

export async function testDatabase(t: TestContext): Promise<TestDatabase> {
  const server = await requireService('pg');
  const name = randomName('ferry_t_');
  const admin = new pg.Client({ connectionString: server });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  const url = new URL(server);
  url.pathname = `/${name}`;
  const client = new pg.Client({ connectionString: url.href });
  await client.connect();
  t.after(async () => {
    await client.end();
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => {});
    await admin.end();
  });
  return { url: url.href, name, query: async <R extends pg.QueryResultRow>(text: string, values?: unknown[]) => (await client.query<R>(text, values)).rows };
}

/**
 * A schema of its own on the test server, made with `ddl` (given the schema's name), and the
 * connection that made it: for suites that drop the schema and end the connection themselves.
 */
export async function freshSchema(prefix: string, ddl: (schema: string) => string): Promise<{ url: string; schema: string; admin: pg.Client }> {
  const url = await requireService('pg');
  const schema = randomName(prefix);
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  await admin.query(`CREATE SCHEMA ${schema}; ${ddl(schema)}`);
  return { url, schema, admin };
}
