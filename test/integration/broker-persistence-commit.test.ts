// The broker state's group commit on a real SQLite file: one transaction per event-loop turn,
// promises settled only after it, and a failure confined to what it undid.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, test } from 'node:test';
import Database from 'better-sqlite3';
import { GroupCommit } from '../../src/mqtt/persistence/group-commit.ts';
import { openSqlite } from '../../src/sqlite/connection.ts';
import { tempDirs } from '../harness/temp.ts';

const dirs = tempDirs('ferry-group-commit-');
const readers: Database.Database[] = [];
after(() => readers.forEach((r) => r.close()));

function setup(): { db: Database.Database; path: string; lost: Error[]; commit: GroupCommit; count: () => number } {
  const path = join(dirs(), 'state.db');
  const db = openSqlite(path, { synchronous: 'full' });
  db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)');
  const lost: Error[] = [];
  const reader = new Database(path, { readonly: true });
  readers.push(reader);
  const count = () => (reader.prepare('SELECT count(*) AS n FROM t').get() as { n: number }).n;
  return { db, path, lost, commit: new GroupCommit(db, 'full', (error) => lost.push(error)), count };
}

test("a turn's writes share one commit; their promises resolve after it, and another connection sees them only then", async () => {
  const { db, commit, count } = setup();
  const insert = db.prepare('INSERT INTO t (v) VALUES (?)');
  const before = commit.commits;
  const writes = Array.from({ length: 100 }, (_, i) => commit.durable(() => insert.run(`v${i}`).lastInsertRowid));
  // Applied at once (this connection reads them), not yet committed.
  assert.equal((db.prepare('SELECT count(*) AS n FROM t').get() as { n: number }).n, 100);
  assert.equal(count(), 0);
  const ids = await Promise.all(writes);
  assert.equal(ids.length, 100);
  assert.equal(commit.commits - before, 1);
  assert.equal(count(), 100);
  commit.close();
  db.close();
});

test('a write that throws is undone alone; the others of its turn commit', async () => {
  const { db, commit, count, lost } = setup();
  const insert = db.prepare('INSERT INTO t (v) VALUES (?)');
  const ok = commit.durable(() => insert.run('a'));
  const bad = commit.durable(() => {
    insert.run('half-done');
    insert.run(null); // NOT NULL: the statement fails, its savepoint undoes 'half-done' too
  });
  const ok2 = commit.durable(() => insert.run('b'));
  await assert.rejects(bad, /NOT NULL/);
  await Promise.all([ok, ok2]);
  assert.equal(count(), 2);
  assert.deepEqual(lost, []);
  commit.close();
  db.close();
});

test('when SQLite undoes the whole transaction, every write of the turn fails and the owner is told', async () => {
  const { db, commit, count, lost } = setup();
  db.exec("CREATE TRIGGER refuse BEFORE INSERT ON t WHEN NEW.v = 'poison' BEGIN SELECT RAISE(ROLLBACK, 'rolled back'); END");
  const insert = db.prepare('INSERT INTO t (v) VALUES (?)');
  const earlier = commit.durable(() => insert.run('a'));
  const poison = commit.durable(() => insert.run('poison'));
  await assert.rejects(earlier, /rolled back/);
  await assert.rejects(poison, /rolled back/);
  assert.equal(lost.length, 1);
  assert.equal(count(), 0);
  // The next turn starts a new transaction.
  await commit.durable(() => insert.run('c'));
  assert.equal(count(), 1);
  commit.close();
  db.close();
});

test('after close, writes throw and nothing is left open', async () => {
  const { db, commit } = setup();
  const insert = db.prepare('INSERT INTO t (v) VALUES (?)');
  const pending = commit.durable(() => insert.run('last'));
  commit.close();
  await pending;
  assert.equal(db.inTransaction, false);
  await assert.rejects(
    commit.durable(() => insert.run('late')),
    /closed/,
  );
  db.close();
});

test('writes nothing waits for are committed soon after, or with the next durable write, before it resolves', async () => {
  const { db, commit, count } = setup();
  const insert = db.prepare('INSERT INTO t (v) VALUES (?)');
  commit.eager(() => insert.run('eager'));
  assert.equal(count(), 0);
  for (let i = 0; i < 100 && count() === 0; i++) await new Promise((resolve) => setTimeout(resolve, 5));
  assert.equal(count(), 1);
  commit.eager(() => insert.run('eager again'));
  await commit.durable(() => insert.run('durable'));
  assert.equal(count(), 3);
  commit.close();
  db.close();
});

test('a joined write is not committed alone: it goes with the write or settled() of its chain, even past the transaction size that commits early', async () => {
  const { db, commit, count } = setup();
  const insert = db.prepare('INSERT INTO t (v) VALUES (?)');
  const before = commit.commits;
  commit.joined(() => insert.run('qos 2 state'));
  // Many writes of other clients in the same turn (more than one transaction holds otherwise).
  const others = Array.from({ length: 2500 }, (_, i) => commit.durable(() => insert.run(`other ${i}`)));
  const copies = commit.durable(() => insert.run('copies'));
  assert.equal(count(), 0);
  await Promise.all([copies, ...others]);
  assert.equal(commit.commits - before, 1);
  assert.equal(count(), 2502);

  // Nothing of the chain to write: settled() waits for the commit that holds its joined write.
  commit.joined(() => insert.run('retained'));
  const settled = commit.settled();
  assert.equal(count(), 2502);
  await settled;
  assert.equal(count(), 2503);
  // And resolves at once when no joined write is waiting.
  await commit.settled();
  commit.close();
  db.close();
});

test('when SQLite undoes a transaction holding a joined write, the rest of its chain in that turn is refused, not applied', async () => {
  const { db, commit, count, lost } = setup();
  db.exec("CREATE TRIGGER refuse BEFORE INSERT ON t WHEN NEW.v = 'poison' BEGIN SELECT RAISE(ROLLBACK, 'rolled back'); END");
  const insert = db.prepare('INSERT INTO t (v) VALUES (?)');
  commit.joined(() => insert.run('qos 2 state'));
  await assert.rejects(
    commit.durable(() => insert.run('poison')),
    /rolled back/,
  );
  // The chain goes on in the same turn: its next step would be acknowledged without its state.
  await assert.rejects(
    commit.durable(() => insert.run('copies')),
    /rolled back/,
  );
  await assert.rejects(commit.settled(), /rolled back/);
  assert.throws(() => commit.joined(() => insert.run('retained')), /rolled back/);
  assert.equal(lost.length, 1);
  // The next turn is a new start.
  await new Promise((resolve) => setImmediate(resolve));
  await commit.durable(() => insert.run('later'));
  assert.equal(count(), 1);
  commit.close();
  db.close();
});

test("a failed commit at the end of a turn refuses nothing after it: the next loop iteration's writes are a new transaction", async () => {
  const { db, commit, count, lost } = setup();
  // SQLite checks a deferred foreign key at COMMIT: the commit itself fails, for real.
  db.pragma('foreign_keys = ON');
  db.exec('CREATE TABLE parent (id INTEGER PRIMARY KEY); CREATE TABLE child (id INTEGER PRIMARY KEY, p INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)');
  const insert = db.prepare('INSERT INTO t (v) VALUES (?)');
  commit.joined(() => db.prepare('INSERT INTO child (p) VALUES (42)').run());
  await assert.rejects(commit.settled(), /FOREIGN KEY/);
  assert.equal(lost.length, 1);
  // Here is the check phase, just after the failed commit. A timer due by the next iteration's
  // timers phase (where a socket read of that iteration would be as well) runs before any
  // setImmediate queued now: its write belongs to another client's turn.
  const next = new Promise<unknown>((resolve, reject) => setTimeout(() => commit.durable(() => insert.run('unrelated')).then(resolve, reject), 0));
  for (const due = Date.now() + 3; Date.now() < due; ); // the timer is due when this callback returns
  await next;
  assert.equal(count(), 1);
  assert.equal(lost.length, 1);
  commit.close();
  db.close();
});
