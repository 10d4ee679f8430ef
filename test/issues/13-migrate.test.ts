// Issue 13, item 4: `ferry migrate up|down|status|create` through the real CLI, on PostgreSQL (a
// database of the test's own) and on SQLite; two `migrate up` at once apply each migration once;
// a failing migration leaves the database as it was; exit codes a deploy script can rely on.
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { ferry } from '../harness/ferry-process.ts';
import { testDatabase } from '../harness/pg-schema.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-issue13-migrate-');

/**
 * Migrations that work on both servers. Each writes to `trail` as it runs, and the second one
 * sleeps a little, so that a second process migrating at the same time would overlap with it.
 */
const MIGRATIONS: Record<string, string> = {
  '20260101_000100_create_trail.ts': `import type { Kysely } from 'kysely';
export async function up(db: Kysely<any>) {
  await db.schema.createTable('trail').addColumn('step', 'text', (c) => c.notNull()).execute();
  await db.insertInto('trail').values({ step: 'first' }).execute();
}
export async function down(db: Kysely<any>) { await db.schema.dropTable('trail').execute(); }
`,
  '20260101_000200_create_notes.ts': `import type { Kysely } from 'kysely';
export async function up(db: Kysely<any>) {
  await db.schema.createTable('notes').addColumn('id', 'integer', (c) => c.primaryKey()).addColumn('body', 'text').execute();
  await new Promise((resolve) => setTimeout(resolve, 1500));
  await db.insertInto('trail').values({ step: 'second' }).execute();
}
export async function down(db: Kysely<any>) {
  await db.schema.dropTable('notes').execute();
  await db.deleteFrom('trail').where('step', '=', 'second').execute();
}
`,
};

const BROKEN = `import type { Kysely } from 'kysely';
export async function up(db: Kysely<any>) {
  await db.insertInto('trail').values({ step: 'third' }).execute();
  await db.schema.createTable('notes').addColumn('id', 'integer').execute(); // exists: fails
}
`;

function project(database: string): { config: string; dir: string; dataDir: string } {
  const root = tempDir();
  const dir = join(root, 'migrations');
  mkdirSync(dir);
  for (const [file, text] of Object.entries(MIGRATIONS)) writeFileSync(join(dir, file), text);
  mkdirSync(join(root, 'config'));
  const config = join(root, 'config', 'gateway.yaml');
  writeFileSync(config, `gateway: {dataDir: ../data}\nbridges: []\ndevices: []\ndatabases:\n${database}`);
  return { config, dir, dataDir: join(root, 'data') };
}

const migrate = (p: { config: string; dir: string }, ...args: string[]) => ferry(['migrate', ...args, '--config', p.config, '--dir', p.dir]);

interface Server {
  readonly name: string;
  setUp(t: test.TestContext): Promise<{ project: ReturnType<typeof project>; trail(): Promise<string[]>; tables(): Promise<string[]> }>;
}

const servers: Server[] = [
  {
    name: 'PostgreSQL',
    setUp: async (t) => {
      const db = await testDatabase(t);
      return {
        project: project(`  main:\n    postgres: {url: '${db.url}'}\n`),
        trail: async () => (await db.query<{ step: string }>('SELECT step FROM trail ORDER BY step')).map((r) => r.step),
        tables: async () => (await db.query<{ t: string }>("SELECT table_name AS t FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1")).map((r) => r.t),
      };
    },
  },
  {
    name: 'SQLite',
    setUp: async () => {
      const p = project('  local:\n    sqlite: {file: app.db}\n');
      const read = <R>(query: string) => {
        const db = new Database(join(p.dataDir, 'app.db'), { readonly: true });
        try {
          return db.prepare(query).all() as R[];
        } finally {
          db.close();
        }
      };
      return {
        project: p,
        trail: async () => read<{ step: string }>('SELECT step FROM trail ORDER BY step').map((r) => r.step),
        tables: async () => read<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY 1").map((r) => r.name),
      };
    },
  },
];

for (const server of servers) {
  test(`ferry migrate on ${server.name}: status, up, down and up again, with exit codes 2 (pending) and 0`, { timeout: 180_000 }, async (t) => {
    const { project: p, trail, tables } = await server.setUp(t);
    let run = await migrate(p, 'status');
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stdout, /pending\s+20260101_000100_create_trail\npending\s+20260101_000200_create_notes\n.*0 of 2 migrations applied, 2 pending/);

    run = await migrate(p, 'up');
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /applied\s+20260101_000100_create_trail\napplied\s+20260101_000200_create_notes\n.*2 migrations applied/);
    assert.deepEqual(await trail(), ['first', 'second']);
    run = await migrate(p, 'up');
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /up to date, nothing to apply/);
    run = await migrate(p, 'status');
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /applied\s+\d{4}-\d\d-\d\dT[\d:.]+Z\s+20260101_000200_create_notes\n.*2 of 2 migrations applied\n$/);

    run = await migrate(p, 'down');
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /reverted\s+20260101_000200_create_notes\n.*1 migration reverted/);
    assert.ok(!(await tables()).includes('notes'));
    run = await migrate(p, 'status');
    assert.equal(run.code, 2);
    run = await migrate(p, 'up');
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(await trail(), ['first', 'second']);
  });

  test(`ferry migrate on ${server.name}: two \`migrate up\` at once apply each migration once, and both succeed`, { timeout: 180_000 }, async (t) => {
    const { project: p, trail } = await server.setUp(t);
    const [a, b] = await Promise.all([migrate(p, 'up'), migrate(p, 'up')]);
    assert.equal(a.code, 0, a.stderr);
    assert.equal(b.code, 0, b.stderr);
    assert.deepEqual(await trail(), ['first', 'second'], 'each migration ran once');
    const applied = (a.stdout.match(/^applied /gm)?.length ?? 0) + (b.stdout.match(/^applied /gm)?.length ?? 0);
    assert.equal(applied, 2, `${a.stdout}\n${b.stdout}`);
  });

  test(`ferry migrate on ${server.name}: a failing migration exits 1, names itself, and leaves the database as it was`, { timeout: 180_000 }, async (t) => {
    const { project: p, trail, tables } = await server.setUp(t);
    assert.equal((await migrate(p, 'up')).code, 0);
    writeFileSync(join(p.dir, '20260101_000300_broken.ts'), BROKEN);
    const run = await migrate(p, 'up');
    assert.equal(run.code, 1);
    assert.match(run.stdout, /FAILED\s+20260101_000300_broken/);
    assert.match(run.stderr, /migration 20260101_000300_broken failed: .*as it was before this run/);
    assert.deepEqual(await trail(), ['first', 'second'], "the failed migration's insert was rolled back");
    assert.ok((await tables()).includes('notes'));
    assert.equal((await migrate(p, 'status')).code, 2);
  });
}

test('ferry migrate on PostgreSQL: no statement timeout: a statement longer than statementTimeoutMs or the database default runs, and a second `migrate up` waits for the first; a migration can set its own', {
  timeout: 180_000,
}, async (t) => {
  const db = await testDatabase(t);
  // Defaults a role or a database may set: migrations must not inherit them either.
  await db.query(`ALTER DATABASE ${db.name} SET statement_timeout = '300ms'`);
  const p = project(`  main:\n    postgres: {url: '${db.url}', statementTimeoutMs: 300, connectTimeoutMs: 2000}\n`);
  const migration = (body: string) => `import { sql, type Kysely } from 'kysely';\nexport async function up(db: Kysely<any>) {\n${body}\n}\n`;
  writeFileSync(join(p.dir, '20260101_000300_slow.ts'), migration('  await sql`SELECT pg_sleep(1.5)`.execute(db); // a long CREATE INDEX'));
  // Each waits for the other's advisory lock longer than 300 ms (the migrations take 3 s).
  const [a, b] = await Promise.all([migrate(p, 'up'), migrate(p, 'up')]);
  assert.equal(a.code, 0, a.stderr);
  assert.equal(b.code, 0, b.stderr);
  assert.equal((a.stdout.match(/^applied /gm)?.length ?? 0) + (b.stdout.match(/^applied /gm)?.length ?? 0), 3, `${a.stdout}\n${b.stdout}`);
  assert.deepEqual(await db.query('SELECT step FROM trail ORDER BY step'), [{ step: 'first' }, { step: 'second' }]);

  writeFileSync(
    join(p.dir, '20260101_000400_bounded.ts'),
    migration("  await sql`SET LOCAL statement_timeout = '200ms'`.execute(db);\n  await sql`SELECT pg_sleep(1)`.execute(db);"),
  );
  const bounded = await migrate(p, 'up');
  assert.equal(bounded.code, 1);
  assert.match(bounded.stderr, /migration 20260101_000400_bounded failed: canceling statement due to statement timeout/);
});

test('ferry migrate: create writes a timestamped file with up and down; usage problems exit 3 with a reason', { timeout: 180_000 }, async () => {
  const p = project('  main:\n    sqlite: {file: app.db}\n  other:\n    sqlite: {file: other.db}\n');
  let run = await ferry(['migrate', 'create', 'add_sites', '--dir', p.dir]);
  assert.equal(run.code, 0, run.stderr);
  const made = readdirSync(p.dir).find((f) => f.endsWith('_add_sites.ts'));
  assert.match(made ?? '', /^\d{8}_\d{6}_add_sites\.ts$/);
  assert.equal(run.stdout.trim(), join(p.dir, made ?? ''));
  run = await ferry(['migrate', 'create', 'drop table;', '--dir', p.dir]);
  assert.equal(run.code, 3);
  assert.match(run.stderr, /not a migration name/);
  run = await migrate(p, 'up');
  assert.equal(run.code, 3, 'two databases and no --database');
  assert.match(run.stderr, /pass --database NAME; .* declares main, other/);
  run = await migrate(p, 'up', '--database', 'nope');
  assert.equal(run.code, 3);
  assert.match(run.stderr, /no database 'nope'/);
  run = await ferry(['migrate', 'status', '--config', p.config, '--database', 'main', '--dir', join(p.dir, 'missing')]);
  assert.equal(run.code, 3);
  assert.match(run.stderr, /no migrations directory at .*missing/);
  run = await ferry(['migrate', 'up', '--config', p.config, '--database', 'main', '--dir', p.dir]);
  assert.equal(run.code, 0, run.stderr);
});
