import { chmodSync, mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { toHistory } from '../../src/lib/sqlite.ts';
import { historySink } from '../../src/sqlite/history-sink.ts';
import { HistoryReader, historyPath } from '../../src/sqlite/history-store.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { sinkConformance } from '../conformance/sink-suite.ts';

const ctx = (dataDir: string) => ({ logger: pino({ level: 'silent' }), counters: new CounterRegistry(), dataDir, bridge: 'test' });
const config = historySink.schema.parse({ batchSize: 50, batchTimeMs: 2 });

/** A database file that is not SQLite: opening it fails with SQLITE_NOTADB. */
function corruptDatabase(dir: string): void {
  writeFileSync(historyPath(dir), 'this is not a database'.repeat(100));
  chmodSync(historyPath(dir), 0o444);
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
    corruptDatabase(dir);
    return {
      sink: historySink.create(config, ctx(dir)),
      cleanup: async () => rmSync(dir, { recursive: true, force: true }),
    };
  },
  flaky: async () => {
    // The operator replaces a damaged database file: the next open creates a fresh one.
    const dir = mkdtempSync(join(tmpdir(), 'ferry-history-flaky-'));
    corruptDatabase(dir);
    return { ...destination(dir), recover: () => unlinkSync(historyPath(dir)) };
  },
});
