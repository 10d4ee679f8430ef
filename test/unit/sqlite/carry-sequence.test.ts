// carrySequence (src/sqlite/connection.ts): when an earlier version's AUTOINCREMENT table is
// converted into a new one, the new table never gives out a seq the earlier one gave out,
// whether the new table has no sequence yet, a lower one, or a higher one.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { carrySequence } from '../../../src/sqlite/connection.ts';

function database(): Database.Database {
  const db = new Database(':memory:');
  db.exec('CREATE TABLE earlier (seq INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT); CREATE TABLE later (seq INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT)');
  return db;
}

/** The seq the next insert into `table` is given. */
function nextSeq(db: Database.Database, table: string): number {
  return Number(db.prepare(`INSERT INTO ${table} (v) VALUES ('next')`).run().lastInsertRowid);
}

function fill(db: Database.Database, table: string, rows: number, keep = 0): void {
  for (let i = 0; i < rows; i++) db.prepare(`INSERT INTO ${table} (v) VALUES ('x')`).run();
  // The rows are gone, not their seqs: sqlite_sequence keeps the highest.
  db.prepare(`DELETE FROM ${table} WHERE seq > ?`).run(keep);
}

test("a new table without a sequence takes the earlier table's highest seq, even one whose row is gone", () => {
  const db = database();
  fill(db, 'earlier', 10, 3);
  carrySequence(db, 'earlier', 'later');
  assert.equal(nextSeq(db, 'later'), 11);
});

test("a new table whose sequence is lower is raised to the earlier table's", () => {
  const db = database();
  fill(db, 'later', 4);
  fill(db, 'earlier', 10);
  carrySequence(db, 'earlier', 'later');
  assert.equal(nextSeq(db, 'later'), 11);
});

test('a new table whose sequence is higher keeps it', () => {
  const db = database();
  fill(db, 'earlier', 5);
  fill(db, 'later', 20);
  carrySequence(db, 'earlier', 'later');
  assert.equal(nextSeq(db, 'later'), 21);
});

test('an earlier table that never gave out a seq carries nothing', () => {
  const db = database();
  carrySequence(db, 'earlier', 'later');
  assert.equal(nextSeq(db, 'later'), 1);
});
