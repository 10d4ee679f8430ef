// aedes-persistence's own conformance suite (abstract.js), the one every aedes persistence
// passes, run against Ferry's SQLite persistence: each test gets a fresh broker.db on disk.
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { test } from 'node:test';
import pino from 'pino';
import { openBrokerState } from '../../src/mqtt/persistence/open.ts';
import type { SqlitePersistence } from '../../src/mqtt/persistence/sqlite-persistence.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { tempDirs } from '../harness/temp.ts';

const require = createRequire(import.meta.url);
const abstractPersistence = require('aedes-persistence/abstract.js') as (options: { test: typeof test; persistence: () => SqlitePersistence; testAsync: boolean }) => void;

const dirs = tempDirs('ferry-broker-state-');

abstractPersistence({
  test,
  persistence: () => openBrokerState({ path: join(dirs(), 'broker.db'), synchronous: 'full' }, { logger: pino({ level: 'silent' }), counters: new CounterRegistry() }),
  testAsync: true,
});
