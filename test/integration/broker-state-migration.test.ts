// broker.db written by the previous schema (version 1: a full copy of a queued message per
// session in `outgoing`, retained messages without their publisher) is brought up to date when
// the broker opens it: its queued messages are still sent, and retained messages count in the
// gateway's totals. Real SQLite files.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import pino from 'pino';
import { openBrokerState } from '../../src/mqtt/persistence/open.ts';
import { encodePacket } from '../../src/mqtt/persistence/packet-codec.ts';
import { BROKER_STATE_VERSION } from '../../src/mqtt/persistence/schema.ts';
import { BrokerStateFile } from '../../src/mqtt/persistence/state-file.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { tempDirs } from '../harness/temp.ts';

const dirs = tempDirs('ferry-broker-migration-');

/** The tables of version 1 that version 2 changed, as that version created them. */
const VERSION_1 = `
PRAGMA user_version = 1;
CREATE TABLE retained (topic TEXT PRIMARY KEY, payload BLOB, meta TEXT NOT NULL, expires_at INTEGER) WITHOUT ROWID;
CREATE TABLE outgoing (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, client_id TEXT NOT NULL, broker_id TEXT, broker_counter INTEGER,
  message_id INTEGER, expires_at INTEGER, payload BLOB, meta TEXT NOT NULL
);
CREATE INDEX outgoing_client ON outgoing (client_id, seq);
CREATE TABLE sessions (client_id TEXT PRIMARY KEY, owner TEXT, expiry_seconds INTEGER, disconnected_at INTEGER, expires_at INTEGER) WITHOUT ROWID;
`;

test('a version 1 broker.db: queued messages are kept (in order, numbered ones too) and retained messages counted', async () => {
  const path = join(dirs(), 'broker.db');
  const old = new Database(path);
  old.exec(VERSION_1);
  const insert = old.prepare('INSERT INTO outgoing (client_id, broker_id, broker_counter, message_id, payload, meta) VALUES (?, ?, ?, ?, ?, ?)');
  for (const [i, messageId] of [
    [1, 7],
    [2, null],
  ] as const) {
    const { payload, meta } = encodePacket({
      cmd: 'publish',
      topic: `cmd/${i}`,
      payload: Buffer.from(`m${i}`),
      qos: 1,
      retain: false,
      dup: false,
      brokerId: 'old',
      brokerCounter: i,
    });
    insert.run('dev-1', 'old', i, messageId, payload, meta);
  }
  const retained = encodePacket({ cmd: 'publish', topic: 'site/door', payload: Buffer.from('closed'), qos: 0, retain: true });
  old.prepare('INSERT INTO retained (topic, payload, meta) VALUES (?, ?, ?)').run('site/door', retained.payload, retained.meta);
  old.prepare('INSERT INTO sessions (client_id, owner) VALUES (?, ?)').run('dev-1', 'dev-1');
  old.close();

  const state = openBrokerState({ path, synchronous: 'full' }, { logger: pino({ level: 'silent' }), counters: new CounterRegistry() });
  await state.setup({ id: 'new-run' });
  const queued: { topic?: string; messageId?: number | undefined }[] = [];
  for await (const packet of state.outgoingStream({ id: 'dev-1' })) queued.push(packet);
  assert.deepEqual(
    queued.map((p) => [p.topic, p.messageId]),
    [
      ['cmd/1', 7],
      ['cmd/2', undefined],
    ],
  );
  // The numbered one is cleared by its PUBACK, as before.
  assert.equal((await state.outgoingClearMessageId({ id: 'dev-1' }, { messageId: 7 }))?.topic, 'cmd/1');
  await state.destroy();

  const reader = new Database(path, { readonly: true });
  try {
    const file = new BrokerStateFile(reader);
    assert.deepEqual(file.retainedTotals(), { messages: 1, bytes: 6 });
    assert.equal(file.session('dev-1').queuedMessages, 1);
    assert.deepEqual(reader.prepare("SELECT name FROM sqlite_master WHERE name = 'outgoing'").all(), []);
  } finally {
    reader.close();
  }
});

test('a version 2 broker.db (no commands kept): `ferry sessions` reads it as it is, and the broker adds the commands tables keeping its queues', async () => {
  const path = join(dirs(), 'broker.db');
  // Version 2 as this version makes it, less what version 3 added.
  const made = openBrokerState({ path, synchronous: 'full' }, { logger: pino({ level: 'silent' }), counters: new CounterRegistry() });
  await made.setup({ id: 'old' });
  await made.outgoingEnqueueCombi([{ clientId: 'dev-2' }], { cmd: 'publish', topic: 'cmd/x', payload: Buffer.from('x'), qos: 1, brokerId: 'old', brokerCounter: 1 });
  await made.destroy();
  const old = new Database(path);
  old.exec('DROP INDEX queue_command; ALTER TABLE queue DROP COLUMN command_key; DROP TABLE commands_answered; PRAGMA user_version = 2;');
  old.close();

  const reader = new Database(path, { readonly: true });
  try {
    assert.equal(new BrokerStateFile(reader).session('dev-2').queuedMessages, 1);
  } finally {
    reader.close();
  }
  const state = openBrokerState({ path, synchronous: 'full' }, { logger: pino({ level: 'silent' }), counters: new CounterRegistry() });
  await state.setup({ id: 'new-run' });
  const queued: { topic?: string }[] = [];
  for await (const packet of state.outgoingStream({ id: 'dev-2' })) queued.push(packet);
  assert.deepEqual(
    queued.map((p) => p.topic),
    ['cmd/x'],
  );
  assert.deepEqual(state.commands.held('["id","cmd/x"]', Date.now()), []);
  await state.destroy();
  const migrated = new Database(path, { readonly: true });
  try {
    assert.equal(migrated.pragma('user_version', { simple: true }), BROKER_STATE_VERSION);
    assert.ok((migrated.prepare('PRAGMA table_info(queue)').all() as { name: string }[]).some((c) => c.name === 'command_key'));
  } finally {
    migrated.close();
  }
});
