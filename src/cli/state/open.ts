import { existsSync } from 'node:fs';
import { describeError } from '../../core/errors.ts';
import { brokerStatePath } from '../../mqtt/persistence/open.ts';
import { BrokerStateFile, StateFileError } from '../../mqtt/persistence/state-file.ts';
import { openSqlite } from '../../sqlite/connection.ts';
import { type Access, fail } from '../buffer/open.ts';
import { type DataDirOptions, resolveDataDir } from '../load.ts';

/**
 * Runs `use` on the broker state (broker.db) of the data directory the options name, then
 * closes it; as `ferry buffer` does: a reader never blocks the gateway, a writer holds the
 * write lock only for its one transaction (committed with synchronous=FULL). Every failure is
 * printed as one line and sets exit code 1.
 */
export async function withBrokerState(options: DataDirOptions, access: Access, use: (state: BrokerStateFile, dataDir: string) => void | Promise<void>): Promise<void> {
  const dataDir = resolveDataDir(options);
  if (dataDir === undefined) {
    process.exitCode = 1;
    return;
  }
  const path = brokerStatePath(dataDir);
  if (!existsSync(path)) {
    fail(`no broker state at ${path} (is it the gateway's data directory? \`ferry run\` with mqtt.persistence sqlite creates it)`);
    return;
  }
  let db: ReturnType<typeof openSqlite> | undefined;
  try {
    db = openSqlite(path, access === 'read' ? { readonly: true } : { synchronous: 'full' });
    await use(new BrokerStateFile(db), dataDir);
  } catch (error) {
    fail(error instanceof StateFileError ? error.message : `${path}: ${describeError(error)}`);
  } finally {
    db?.close();
  }
}

/** A time for a line of output: ISO 8601, or `-`. */
export function when(ms: number | null): string {
  return ms === null ? '-' : new Date(ms).toISOString();
}
