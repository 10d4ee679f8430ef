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
    await client.query(`DROP SCHEMA IF EXISTS ${name} CASCADE`).catch(() => {});
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
