import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Synchronous } from '../../sqlite/connection.ts';
import { isCorruption, openChecked } from '../../sqlite/open-checked.ts';
import { SqlitePersistence, type SqlitePersistenceOptions } from './sqlite-persistence.ts';

/** The broker's state file in the data directory, beside the buffer's. */
export const BROKER_STATE_FILE = 'broker.db';

export function brokerStatePath(dataDir: string): string {
  return join(dataDir, BROKER_STATE_FILE);
}

/** Where the embedded broker keeps its state, and how hard it syncs it. */
export interface BrokerStateSettings {
  readonly path: string;
  /** As the buffer's: 'full' survives power loss, 'normal' process crashes only. */
  readonly synchronous: Synchronous;
  /** Called once when a statement finds the database corrupt while the broker runs: only a restart, which checks it first, moves it aside. */
  readonly onCorrupt?: ((error: Error) => void) | undefined;
}

/**
 * Opens the broker's state. A corrupt database is moved aside and an empty one started: the
 * broker then starts without its retained messages and saved sessions rather than not at all,
 * and says so loudly.
 */
export function openBrokerState(settings: BrokerStateSettings, options: SqlitePersistenceOptions): SqlitePersistence {
  const onFailure = settings.onCorrupt === undefined ? undefined : reportCorruptionOnce(settings.onCorrupt, options.logger);
  const opened = openChecked(settings.path, { synchronous: settings.synchronous }, (db) => new SqlitePersistence(db, { ...options, onFailure }));
  if (opened.movedAside !== undefined) {
    options.counters.count('mqtt.state.recovered_from_corruption');
    options.logger.error(
      { err: opened.movedAside.error, movedTo: opened.movedAside.path },
      'broker state database is corrupt: moved it aside and started an empty one; the retained messages and saved sessions in it are lost',
    );
  }
  return opened.value;
}

/** The state's failures that are SQLITE_CORRUPT, reported once: a restart checks broker.db and moves it aside. */
export function reportCorruptionOnce(onCorrupt: (error: Error) => void, logger: Logger): (error: Error) => void {
  let found = false;
  return (error) => {
    if (found || !isCorruption(error)) return;
    found = true;
    logger.error({ err: error }, 'broker state database is corrupt: a restart checks it and moves it aside (its retained messages and saved sessions are lost)');
    onCorrupt(error);
  };
}
