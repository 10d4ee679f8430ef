// broker.db found corrupt while the broker runs (SQLITE_CORRUPT from a write or a read): the state says so
// once, and the gateway asks for a restart, whose open checks broker.db and moves it aside. A page
// of the real file is overwritten as a failing disk would leave it; the connection is opened
// without the check, as one opened before the damage would be.
import assert from 'node:assert/strict';
import { closeSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import pino from 'pino';
import { loadConfig } from '../../src/config/load.ts';
import { openBrokerState, reportCorruptionOnce } from '../../src/mqtt/persistence/open.ts';
import { SqlitePersistence } from '../../src/mqtt/persistence/sqlite-persistence.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { brokerSettings } from '../../src/runtime/broker-options.ts';
import { componentKinds } from '../../src/runtime/registry.ts';
import { openSqlite } from '../../src/sqlite/connection.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-broker-corrupt-');
const logger = pino({ level: 'silent' });

const retained = (topic: string) => ({ cmd: 'publish' as const, topic, payload: Buffer.alloc(300, 1), qos: 1 as const, retain: true, dup: false, brokerId: 'b', brokerCounter: 1 });

/**
 * broker.db with 1,000 retained messages whose last leaf is damaged, opened as openBrokerState
 * opens it but without the check, with what it reports collected.
 */
async function damagedState() {
  const path = join(tempDir(), 'broker.db');
  const filled = openBrokerState({ path, synchronous: 'normal' }, { logger, counters: new CounterRegistry() });
  for (let i = 0; i < 1_000; i++) await filled.storeRetained(retained(`site/${String(i).padStart(4, '0')}`));
  await filled.destroy();
  // The last leaf of the retained messages: where a topic sorting after every other one goes.
  const db = new Database(path, { readonly: true });
  const page = db.prepare("SELECT pageno FROM dbstat WHERE name = 'retained' AND pagetype = 'leaf' ORDER BY path DESC LIMIT 1").pluck().get() as number;
  const pageSize = db.pragma('page_size', { simple: true }) as number;
  db.close();
  const fd = openSync(path, 'r+');
  writeSync(fd, Buffer.alloc(16, 0xff), 0, 16, (page - 1) * pageSize);
  closeSync(fd);
  const reported: Error[] = [];
  const onFailure = reportCorruptionOnce((error) => reported.push(error), logger);
  const state = new SqlitePersistence(openSqlite(path, { synchronous: 'normal' }), { logger, counters: new CounterRegistry(), onFailure });
  return { path, state, reported };
}

test('a write that finds broker.db corrupt is reported once, and the next open moves the file aside', async () => {
  const { path, state, reported } = await damagedState();
  await assert.rejects(state.storeRetained(retained('zzz/1')), /malformed|corrupt/i);
  await assert.rejects(state.storeRetained(retained('zzz/2')), /malformed|corrupt/i);
  assert.equal(reported.length, 1, 'once, however many writes meet it');
  assert.match(reported[0]?.message ?? '', /malformed|corrupt/i);
  await state.destroy();

  const counters = new CounterRegistry();
  const reopened = openBrokerState({ path, synchronous: 'normal' }, { logger, counters });
  await reopened.destroy();
  assert.equal(counters.get('mqtt.state.recovered_from_corruption'), 1, 'checked at the open and moved aside');
});

test('a read that finds broker.db corrupt (the retained messages a subscription gets) is reported as a write is', async () => {
  const { state, reported } = await damagedState();
  try {
    // A read that misses the damaged page reports nothing.
    assert.equal((await state.createRetainedStream('site/0001').toArray()).length, 1);
    assert.equal(reported.length, 0);
    // A subscription to everything reads every leaf, the damaged one too.
    await assert.rejects(state.createRetainedStream('#').toArray(), /malformed|corrupt/i);
    await assert.rejects(state.createRetainedStreamCombi(['site/+', 'other/#']).toArray(), /malformed|corrupt/i);
    assert.equal(reported.length, 1, 'once, however many reads meet it');
    assert.match(reported[0]?.message ?? '', /malformed|corrupt/i);
  } finally {
    await state.destroy();
  }
});

test("the gateway's broker state settings carry the corruption callback", () => {
  const root = tempDir();
  writeFileSync(join(root, 'gateway.yaml'), 'mqtt: {host: 127.0.0.1, port: 0, persistence: sqlite}\ndevices: []\nbridges: []\ngateway: {dataDir: data}\n');
  const config = loadConfig(join(root, 'gateway.yaml'), { kinds: componentKinds, env: {} });
  const onCorrupt = () => {};
  assert.equal(brokerSettings(config, onCorrupt).state?.onCorrupt, onCorrupt);
});
