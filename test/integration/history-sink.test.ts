import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { historySink } from '../../src/sqlite/history-sink.ts';
import { HistoryReader, historyPath } from '../../src/sqlite/history-store.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { sinkConformance } from '../conformance/sink-suite.ts';

const ctx = (dataDir: string) => ({ logger: pino({ level: 'silent' }), counters: new CounterRegistry(), dataDir, bridge: 'test' });
const config = historySink.schema.parse({ batchSize: 50, batchTimeMs: 2 });

sinkConformance('history (SQLite)', {
  batchSize: 50,
  working: async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-history-'));
    return {
      sink: historySink.create(config, ctx(dir)),
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
  },
  failing: async () => {
    // A database file that is not SQLite: every write fails with SQLITE_NOTADB.
    const dir = mkdtempSync(join(tmpdir(), 'ferry-history-bad-'));
    writeFileSync(historyPath(dir), 'this is not a database'.repeat(100));
    chmodSync(historyPath(dir), 0o444);
    return {
      sink: historySink.create(config, ctx(dir)),
      cleanup: async () => rmSync(dir, { recursive: true, force: true }),
    };
  },
});
