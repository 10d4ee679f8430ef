import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import pino from 'pino';
import { createEnvelope, type Envelope } from '../../src/core/envelope.ts';
import { toHistory } from '../../src/lib/sqlite.ts';
import { historySink } from '../../src/sqlite/history-sink.ts';
import { HistoryReader, HistoryWriter, historyPath } from '../../src/sqlite/history-store.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { sinkConformance } from '../conformance/sink-suite.ts';

const ctx = (dataDir: string) => ({ logger: pino({ level: 'silent' }), counters: new CounterRegistry(), dataDir, bridge: 'test' });
const config = historySink.schema.parse({ batchSize: 50, batchTimeMs: 2 });

/**
 * A directory where the database file should be: opening it fails (SQLITE_CANTOPEN) until it is
 * removed. Not a corrupt file, which the sink moves aside by itself (history-corrupt.test.ts).
 */
function unopenable(dir: string): void {
  mkdirSync(historyPath(dir));
}

function destination(dir: string) {
  return {
    // Through the public entry point (ferry/sqlite), as a library user makes it.
    sink: toHistory({ dir, batchSize: 50, batchTimeMs: 2 }, { name: 'test', logger: pino({ level: 'silent' }) }),
    readBack: async () => {
      const reader = new HistoryReader(dir);
      try {
        return reader.latest({ limit: 1_000_000 }).map((row) => row.id);
      } finally {
        reader.close();
      }
    },
    cleanup: async () => rmSync(dir, { recursive: true, force: true }),
  };
}

// No `unwritable` case: the history takes any topic and any bytes, so no message is refused for good.
sinkConformance('history (SQLite)', {
  batchSize: 50,
  working: async () => destination(mkdtempSync(join(tmpdir(), 'ferry-history-'))),
  failing: async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-history-bad-'));
    unopenable(dir);
    return {
      sink: historySink.create(config, ctx(dir)),
      cleanup: async () => rmSync(dir, { recursive: true, force: true }),
    };
  },
  flaky: async () => {
    // The operator removes what stood in the way: the next open creates the database.
    const dir = mkdtempSync(join(tmpdir(), 'ferry-history-flaky-'));
    unopenable(dir);
    return { ...destination(dir), recover: () => rmdirSync(historyPath(dir)) };
  },
});

test('history keeps the newest `keep` rows of each bridge: across batches, duplicates, a reopen, and counts lost or wrong', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-history-keep-'));
  let n = 0;
  const envelopes = (count: number): Envelope[] =>
    Array.from({ length: count }, () => createEnvelope({ topic: 'devices/d1/telemetry/t', payload: String(++n), origin: { source: 'test', clientId: 'd1', qos: 1 } }));
  const kept = (bridge: string) => {
    const reader = new HistoryReader(dir);
    try {
      return reader.latest({ bridge, limit: 1000 }).map((row) => row.payload.toString());
    } finally {
      reader.close();
    }
  };
  try {
    let writer = new HistoryWriter(dir, 'normal');
    for (let i = 0; i < 4; i++) await writer.append('a', envelopes(3), 5);
    await writer.append('b', envelopes(2), 5);
    assert.deepEqual(kept('a'), ['8', '9', '10', '11', '12']);
    // A message stored again adds no row, and takes no place from the others.
    const again = envelopes(1);
    await writer.append('a', again, 5);
    await writer.append('a', again, 5);
    assert.deepEqual(kept('a'), ['9', '10', '11', '12', '15']);
    writer.close();

    writer = new HistoryWriter(dir, 'normal');
    await writer.append('a', envelopes(2), 5);
    assert.deepEqual(kept('a'), ['11', '12', '15', '16', '17']);
    writer.close();

    // Counts lost (a history written before they were kept) or wrong (written by a version
    // that did not keep them): a writer counts the rows once before its first append. Trusted,
    // b's count of 7 for its 2 rows would trim all 3 after the next append as beyond keep.
    const db = new Database(historyPath(dir));
    db.exec("DELETE FROM history_counts WHERE bridge = 'a'; UPDATE history_counts SET rows = 7 WHERE bridge = 'b'");
    db.close();
    writer = new HistoryWriter(dir, 'normal');
    await writer.append('a', envelopes(1), 3);
    await writer.append('b', envelopes(1), 5);
    writer.close();
    assert.deepEqual(kept('a'), ['16', '17', '18']);
    assert.deepEqual(kept('b'), ['13', '14', '19']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a batch larger than one multi-row insert keeps every new row once, in order, and skips those stored before', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-history-many-'));
  let n = 0;
  const envelopes = (count: number): Envelope[] =>
    Array.from({ length: count }, () => createEnvelope({ topic: 'devices/d1/telemetry/t', payload: String(++n), origin: { source: 'test', clientId: 'd1', qos: 1 } }));
  try {
    const writer = new HistoryWriter(dir, 'normal');
    const first = envelopes(40);
    await writer.append('a', first, 1000);
    // 70 messages: two statements of 32 rows and 6 alone; 10 of them were stored before
    // (redelivered), in the first statement and in the single rows.
    const batch = [...first.slice(0, 5), ...envelopes(55), ...first.slice(35, 40), ...envelopes(5)];
    assert.equal(batch.length, 70);
    await writer.append('a', batch, 1000);
    writer.close();
    const reader = new HistoryReader(dir);
    try {
      const rows = reader.latest({ bridge: 'a', limit: 1000 });
      assert.deepEqual(
        rows.map((row) => Number(row.payload.toString())),
        Array.from({ length: 100 }, (_, i) => i + 1),
      );
    } finally {
      reader.close();
    }
    // The kept count is the rows': a keep of 90 trims exactly the 10 oldest and 1 more for the next.
    const again = new HistoryWriter(dir, 'normal');
    await again.append('a', envelopes(1), 90);
    again.close();
    const after = new HistoryReader(dir);
    try {
      assert.deepEqual(after.latest({ bridge: 'a', limit: 1000 }).map((row) => Number(row.payload.toString()))[0], 12);
    } finally {
      after.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
