// aedes-persistence's own conformance suite (abstract.js), the one every aedes persistence
// passes, run against Ferry's SQLite persistence: each test gets a fresh broker.db on disk.
import assert from 'node:assert/strict';
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

test("the subscriptions a topic matches follow every change: added, replaced, removed, a session's end, another process's commit", async (t) => {
  const path = join(dirs(), 'broker.db');
  const open = () => openBrokerState({ path, synchronous: 'full' }, { logger: pino({ level: 'silent' }), counters: new CounterRegistry() });
  const persistence = open();
  t.after(() => persistence.destroy());
  const matched = async (topic: string) => (await persistence.subscriptionsByTopic(topic)).map((s) => `${s.clientId} ${s.topic} ${s.qos}`).sort();
  // The per-turn check for other processes' commits runs once per turn of the event loop.
  const nextTurn = () => new Promise((resolve) => setImmediate(resolve));

  assert.deepEqual(await matched('a/b'), []);
  await persistence.addSubscriptions({ id: 'one' }, [{ topic: 'a/+', qos: 1 }]);
  assert.deepEqual(await matched('a/b'), ['one a/+ 1']);
  await persistence.addSubscriptions({ id: 'two' }, [{ topic: 'a/#', qos: 2 }]);
  assert.deepEqual(await matched('a/b'), ['one a/+ 1', 'two a/# 2']);
  await persistence.addSubscriptions({ id: 'one' }, [{ topic: 'a/+', qos: 2 }]);
  assert.deepEqual(await matched('a/b'), ['one a/+ 2', 'two a/# 2']);
  await persistence.removeSubscriptions({ id: 'one' }, ['a/+']);
  assert.deepEqual(await matched('a/b'), ['two a/# 2']);

  // Another process (as `ferry sessions` does) adds a subscription to the same file.
  const other = open();
  await other.addSubscriptions({ id: 'three' }, [{ topic: 'a/b', qos: 1 }]);
  await other.destroy();
  await nextTurn();
  assert.deepEqual(await matched('a/b'), ['three a/b 1', 'two a/# 2']);

  await persistence.cleanSubscriptions({ id: 'two' });
  await nextTurn();
  assert.deepEqual(await matched('a/b'), ['three a/b 1']);
});
