import { test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { randomName, requireService } from '../harness/services.ts';

test('postgres: temp table insert/select in a transaction', { timeout: 30_000 }, async (t) => {
  const connectionString = await requireService('pg');
  const client = new pg.Client({ connectionString });
  await client.connect();
  const table = randomName('ferry_harness_');
  t.after(async () => {
    await client.query(`DROP TABLE IF EXISTS ${table}`).catch(() => {});
    await client.end();
  });

  await client.query(`CREATE TEMP TABLE ${table} (id int PRIMARY KEY, payload jsonb NOT NULL, at timestamptz NOT NULL DEFAULT now())`);

  await client.query('BEGIN');
  for (const id of [1, 2, 3]) {
    await client.query(`INSERT INTO ${table} (id, payload) VALUES ($1, $2)`, [id, { device: `d${id}`, temp: id * 1.5 }]);
  }
  const inside = await client.query<{ id: number; payload: { device: string; temp: number } }>(`SELECT id, payload FROM ${table} ORDER BY id`);
  await client.query('COMMIT');
  assert.deepEqual(
    inside.rows,
    [1, 2, 3].map((id) => ({ id, payload: { device: `d${id}`, temp: id * 1.5 } })),
  );

  await client.query('BEGIN');
  await client.query(`INSERT INTO ${table} (id, payload) VALUES (4, '{}')`);
  await client.query('ROLLBACK');
  const count = await client.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`);
  assert.equal(count.rows[0]?.n, 3);

  await client.query(`DROP TABLE ${table}`);
  const gone = await client.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [`pg_temp.${table}`]);
  assert.equal(gone.rows[0]?.t, null);
});
