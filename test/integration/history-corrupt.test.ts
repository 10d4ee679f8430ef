// A history database that a write finds corrupt (SQLITE_CORRUPT): the history sink marks it, and
// its next try checks it in a process of its own and moves it aside, so the bridge's messages,
// kept in the buffer meanwhile, go into a new history without a restart. Real files, with a page
// of the history's table overwritten as a failing disk would leave it.
import assert from 'node:assert/strict';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { connectAsync } from 'mqtt';
import pino from 'pino';
import { loadConfig } from '../../src/config/load.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import { Gateway } from '../../src/runtime/gateway.ts';
import { componentKinds } from '../../src/runtime/registry.ts';
import { HistoryReader, HistoryWriter, historyPath } from '../../src/sqlite/history-store.ts';
import { checkMarkerPath, markForCheck } from '../../src/sqlite/open-checked.ts';
import { eventually } from '../harness/eventually.ts';
import { ferry } from '../harness/ferry-process.ts';
import { tempDirs } from '../harness/temp.ts';

const logger = pino({ level: 'silent' });
const tempDir = tempDirs('ferry-history-corrupt-');

/** A history holding 1,000 messages of bridge `a` in 200 packs, closed cleanly. */
function filledHistory(data: string): void {
  mkdirSync(data, { recursive: true });
  const writer = new HistoryWriter(data, 'normal');
  const payload = Buffer.alloc(500, 1);
  for (let i = 0; i < 200; i++) {
    void writer.append(
      'a',
      Array.from({ length: 5 }, () => createEnvelope({ topic: 'a/old', payload, origin: { source: 'test' } })),
      1_000_000,
    );
  }
  writer.close();
}

/**
 * Overwrites the header of the first leaf of the history's table, where bridge `a`'s oldest
 * messages are: a write that trims them meets it, one that only appends does not.
 */
function corruptTheFront(data: string): void {
  const db = new Database(historyPath(data), { readonly: true });
  const page = db.prepare("SELECT pageno FROM dbstat WHERE name = 'history_packs' AND pagetype = 'leaf' ORDER BY path LIMIT 1").pluck().get() as number;
  const pageSize = db.pragma('page_size', { simple: true }) as number;
  db.close();
  const fd = openSync(historyPath(data), 'r+');
  writeSync(fd, Buffer.alloc(16, 0xff), 0, 16, (page - 1) * pageSize);
  closeSync(fd);
}

/** A gateway whose bridges `a` (topics a/#) and `b` (b/#) write to the history; `a` keeps 5 messages. */
async function gatewayOn(root: string, restarts: string[]): Promise<Gateway> {
  writeFileSync(join(root, 'a.yaml'), 'name: a\nfrom: { mqtt: { topics: ["a/#"] } }\nto: [{ history: { keep: 5 } }]\nbuffer: { retryInitialMs: 20, retryMaxMs: 200 }\n');
  writeFileSync(join(root, 'b.yaml'), 'name: b\nfrom: { mqtt: { topics: ["b/#"] } }\nto: [{ history: {} }]\nbuffer: { retryInitialMs: 20, retryMaxMs: 200 }\n');
  writeFileSync(
    join(root, 'gateway.yaml'),
    'mqtt: {host: 127.0.0.1, port: 0, allowAnonymous: loopback}\nadmin: {enabled: false}\ndevices: []\nbridges: [a.yaml, b.yaml]\ngateway: {dataDir: data}\n',
  );
  const gateway = new Gateway(loadConfig(join(root, 'gateway.yaml'), { kinds: componentKinds, env: {} }), logger, 'test', {
    onRestartNeeded: (why) => restarts.push(why),
  });
  await gateway.start();
  return gateway;
}

async function publish(gateway: Gateway, topic: string, payload: string): Promise<void> {
  const device = await connectAsync(`mqtt://127.0.0.1:${gateway.mqttPort}`, { clientId: `d-${topic.replace('/', '-')}` });
  await device.publishAsync(topic, payload, { qos: 1 });
  await device.endAsync();
}

/** The topics of the messages in the history but the 1,000 written before (of `bridge`, or of all). */
const topicsIn = (data: string, bridge?: string): string[] => {
  const reader = new HistoryReader(data);
  try {
    return reader
      .latest({ limit: 2_000, ...(bridge === undefined ? {} : { bridge }) })
      .map((row) => row.topic)
      .filter((topic) => topic !== 'a/old');
  } finally {
    reader.close();
  }
};

/** A gateway's directory whose history has its front overwritten, and the list its restarts go to. */
function damagedHistory(): { root: string; data: string; restarts: string[] } {
  const root = tempDir();
  const data = join(root, 'data');
  filledHistory(data);
  corruptTheFront(data);
  return { root, data, restarts: [] };
}

/**
 * A gateway on a history (1,000 messages, intact, or none at all) marked corrupt: a message
 * published to bridge b reaches the history, the mark goes, no restart is asked; then `more`.
 */
async function publishToMarked(filled: boolean, more: (gateway: Gateway, data: string) => void): Promise<void> {
  const root = tempDir();
  const data = join(root, 'data');
  if (filled) filledHistory(data);
  else mkdirSync(data, { recursive: true });
  markForCheck(historyPath(data), 'found corrupt by a write');
  const restarts: string[] = [];
  const gateway = await gatewayOn(root, restarts);
  try {
    await publish(gateway, 'b/new', 'after the mark');
    await eventually(() => assert.deepEqual(topicsIn(data), ['b/new']), { timeoutMs: 15_000 });
    assert.equal(existsSync(checkMarkerPath(historyPath(data))), false, 'the mark went');
    assert.deepEqual(restarts, []);
    more(gateway, data);
  } finally {
    await gateway.stop();
  }
}

const asideIn = (data: string): string[] => readdirSync(data).filter((f) => f.startsWith('history.db.corrupt-') && !f.endsWith('-wal') && !f.endsWith('-shm'));

/** Publishes `topic`; it goes into a new history, the corrupt one found by one check and kept beside it. */
async function healedWith(gateway: Gateway, data: string, topic: string, payload: string): Promise<void> {
  await publish(gateway, topic, payload);
  await eventually(() => assert.deepEqual(topicsIn(data), [topic]), { timeoutMs: 15_000 });
  assert.equal(asideIn(data).length, 1, 'the corrupt history was kept beside the new one');
  assert.equal(gateway.counters.get('history.integrity_checks{result=corrupt}'), 1);
}

test('a history write that meets a corrupt page marks the history; the next try checks it, moves it aside, and the message goes into a new one without a restart', async () => {
  const { root, data, restarts } = damagedHistory();
  const gateway = await gatewayOn(root, restarts);
  try {
    // Bridge a keeps 5 messages: its first write trims the oldest, on the damaged page.
    await healedWith(gateway, data, 'a/new', 'after the damage');
    assert.equal(existsSync(checkMarkerPath(historyPath(data))), false, 'the mark went with it');
    assert.deepEqual(restarts, [], 'healed without a restart');
    await eventually(() => assert.equal(gateway.status().buffer.bridges.find((b) => b.bridge === 'a')?.sinks[0]?.pending, 0, 'nothing left behind in the buffer'));
  } finally {
    await gateway.stop();
  }
});

test('a history marked corrupt whose check passes keeps its messages and loses the mark', async () => {
  await publishToMarked(true, (gateway, data) => {
    assert.equal(gateway.counters.get('history.integrity_checks{result=ok}'), 1);
    assert.deepEqual(asideIn(data), []);
    const reader = new HistoryReader(data);
    assert.equal(reader.latest({ bridge: 'a', limit: 2_000 }).length, 1_000, 'the history kept');
    reader.close();
  });
});

test('a corrupt history that another bridge has open is not moved under it: the gateway asks for a restart, and the next start moves it aside', async () => {
  const { root, data, restarts } = damagedHistory();
  let gateway = await gatewayOn(root, restarts);
  try {
    // b only appends, past the damage: its writer stays open.
    await publish(gateway, 'b/first', 'opens b');
    // Read b's messages only: a's oldest are on the damaged page.
    await eventually(() => assert.deepEqual(topicsIn(data, 'b'), ['b/first']), { timeoutMs: 15_000 });
    await publish(gateway, 'a/new', 'meets the damage');
    await eventually(() => assert.deepEqual(restarts, ['the history database is corrupt and another bridge writes to it']), { timeoutMs: 15_000 });
    assert.ok(existsSync(checkMarkerPath(historyPath(data))), 'marked for the next start');
    assert.deepEqual(asideIn(data), [], 'not moved while b has it open');
    assert.equal(gateway.status().buffer.bridges.find((b) => b.bridge === 'a')?.sinks[0]?.pending, 1, 'the message waits in the buffer');
  } finally {
    await gateway.stop();
  }
  gateway = await gatewayOn(root, restarts);
  try {
    await eventually(() => assert.deepEqual(topicsIn(data), ['a/new']), { timeoutMs: 15_000 });
    assert.equal(asideIn(data).length, 1);
    assert.equal(restarts.length, 1);
  } finally {
    await gateway.stop();
  }
});

test('a mark left behind by a history moved away by hand is dropped, and a new history is started', async () => {
  await publishToMarked(false, () => {});
});

test('`ferry history` that reads a corrupt page says so, exits 1 and marks the history, and the next start moves it aside', async () => {
  const { root, data, restarts } = damagedHistory();
  const read = await ferry(['history', '--data-dir', data, '--limit', '2000']);
  assert.equal(read.code, 1);
  assert.match(read.stderr, /^ferry: .*history\.db: database disk image is malformed\nthe history is corrupt: marked it for a check/);
  assert.doesNotMatch(read.stderr, /\n\s+at /, 'no stack trace');
  assert.ok(existsSync(checkMarkerPath(historyPath(data))));
  const gateway = await gatewayOn(root, restarts);
  try {
    // Checked and moved aside before the first write.
    await healedWith(gateway, data, 'b/new', 'after the read');
    assert.deepEqual(restarts, []);
  } finally {
    await gateway.stop();
  }
});
