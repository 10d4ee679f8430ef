import assert from 'node:assert/strict';
import { closeSync, existsSync, openSync, readFileSync, readdirSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { bufferPath } from '../../src/buffer/open.ts';
import { BufferStore } from '../../src/buffer/store.ts';
import { CHUNK_ROWS } from '../../src/cli/buffer/chunks.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import { openSqlite } from '../../src/sqlite/connection.ts';
import { checkMarkerPath } from '../../src/sqlite/open-checked.ts';
import { type BlackHole, blackHole } from '../harness/black-hole.ts';
import { legacyBuffer } from '../harness/legacy-buffer.ts';
import { REPO_ROOT, type RunningFerry, ferry, startFerry } from '../harness/ferry-process.ts';
import { mosquittoPub } from '../harness/mosquitto.ts';
import { tempDirs } from '../harness/temp.ts';

const dataDir = tempDirs('ferry-e2e-buffer-');
const KAFKA = 'telemetry-to-kafka';
const HISTORY = 'telemetry-history';

/** The shipped config with its two YAML bridges only (the TypeScript examples also run when KAFKA_BROKERS is set). */
const CONFIG = join(dataDir(), 'gateway.yaml');
writeFileSync(
  CONFIG,
  readFileSync(join(REPO_ROOT, 'config/gateway.yaml'), 'utf8')
    .replace('  - ../bridges\n', `  - ${join(REPO_ROOT, 'bridges', `${HISTORY}.yaml`)}\n  - ${join(REPO_ROOT, 'bridges', `${KAFKA}.yaml`)}\n`)
    .replace('  - ../devices\n', `  - ${join(REPO_ROOT, 'devices')}\n`),
);

const sent = [
  { clientId: 'sensor-1', topic: 'devices/sensor-1/telemetry/climate', payload: '{"celsius":20}' },
  { clientId: 'sensor-2', topic: 'devices/sensor-2/telemetry/climate', payload: '{"celsius":21}' },
  { clientId: 'sensor-1', topic: 'devices/sensor-1/telemetry/raw', payload: '\u0001\u0002raw' },
];

interface Pending {
  pending: number;
  pendingBytes: number;
  oldestPendingAgeMs: number | null;
  deadLetters: number;
}
interface Stats {
  bridges: (Pending & { bridge: string; sinks: (Pending & { sink: string })[] })[];
  totals: Pending;
}

async function stats(dir: string): Promise<Stats> {
  const result = await ferry(['buffer', 'stats', '--data-dir', dir, '--json']);
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout) as Stats;
}

const bridgeOf = (s: Stats, name: string) => s.bridges.find((b) => b.bridge === name);
const sinkOf = (s: Stats, name: string) => bridgeOf(s, name)?.sinks[0];

/**
 * A gateway whose Kafka bridge hangs (its upstream accepts connections and never answers), with
 * `messages` published: each is acknowledged from the buffer and stays pending for Kafka,
 * while the history bridge delivers its copy.
 */
async function gatewayWithPending(dir: string, hole: BlackHole, messages: typeof sent): Promise<RunningFerry> {
  const gw = await startFerry(['--config', CONFIG, '--data-dir', dir], { KAFKA_BROKERS: hole.address });
  for (const m of messages) {
    const pub = await mosquittoPub(gw.mqttUrl, m.topic, m.payload, { clientId: m.clientId });
    assert.equal(pub.code, 0, pub.stderr);
  }
  for (let i = 0; i < 50 && sinkOf(await stats(dir), HISTORY)?.pending !== 0; i++) await sleep(100);
  return gw;
}

describe('ferry buffer on a running gateway whose Kafka hangs', () => {
  const dir = dataDir();
  let hole: BlackHole;
  let gw: RunningFerry;

  before(async () => {
    hole = await blackHole();
    gw = await gatewayWithPending(dir, hole, sent);
  });

  after(async () => {
    gw.child.kill('SIGKILL');
    await gw.exited;
    hole.close();
  });

  test('stats: exact pending counts per bridge and sink, as JSON and as an aligned table', async () => {
    const s = await stats(dir);
    const bytes = sent.reduce((n, m) => n + Buffer.byteLength(m.payload), 0);
    assert.deepEqual(
      s.bridges.map((b) => [b.bridge, b.pending, b.pendingBytes, b.deadLetters, b.sinks.map((k) => [k.sink, k.pending, k.pendingBytes, k.deadLetters])]),
      [
        [HISTORY, 0, 0, 0, [['history', 0, 0, 0]]],
        [KAFKA, 3, bytes, 0, [['kafka', 3, bytes, 0]]],
      ],
    );
    assert.equal(bridgeOf(s, HISTORY)?.oldestPendingAgeMs, null);
    const age = sinkOf(s, KAFKA)?.oldestPendingAgeMs;
    assert.ok(typeof age === 'number' && age >= 0 && age < 60_000, `oldest pending age ${age}`);
    assert.deepEqual({ ...s.totals, oldestPendingAgeMs: typeof s.totals.oldestPendingAgeMs }, { pending: 3, pendingBytes: bytes, oldestPendingAgeMs: 'number', deadLetters: 0 });

    // Without --data-dir, the data directory comes from the config (gateway.dataDir: ${FERRY_DATA_DIR:-../data}).
    const viaConfig = await ferry(['buffer', 'stats', '--config', CONFIG, '--json'], { FERRY_DATA_DIR: dir });
    assert.equal(viaConfig.code, 0, viaConfig.stderr);
    assert.equal((JSON.parse(viaConfig.stdout) as Stats).totals.pending, 3);

    const table = await ferry(['buffer', 'stats', '--data-dir', dir]);
    assert.equal(table.code, 0, table.stderr);
    const lines = table.stdout.trimEnd().split('\n');
    assert.match(lines[0] ?? '', /^BRIDGE \/ SINK\s+PENDING\s+BYTES\s+OLDEST\s+DEAD LETTERS$/);
    assert.match(lines[1] ?? '', new RegExp(`^${HISTORY}\\s+0\\s+0 B\\s+-\\s+0$`));
    assert.match(lines[2] ?? '', /^ {2}history\s+0\s+0 B\s+-\s+0$/);
    assert.match(lines[3] ?? '', new RegExp(`^${KAFKA}\\s+3\\s+${bytes} B\\s+(\\d+ms|\\d+s|\\d+m\\d\\ds)\\s+0$`));
    assert.match(lines[4] ?? '', /^ {2}kafka\s+3\s+/);
    assert.match(lines[5] ?? '', new RegExp(`^total\\s+3\\s+${bytes} B\\s+`));
    assert.equal(new Set(lines.map((l) => l.length)).size, 1, `columns are aligned:\n${table.stdout}`);
  });

  test('peek: the next messages of a sink or a bridge, oldest first; a binary payload as base64', async () => {
    const json = await ferry(['buffer', 'peek', '--data-dir', dir, '--bridge', KAFKA, '--sink', 'kafka', '-n', '2', '--json']);
    assert.equal(json.code, 0, json.stderr);
    const rows = json.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(
      rows.map((r) => [r['bridge'], r['clientId'], r['topic'], r['payload'], r['payloadEncoding']]),
      sent.slice(0, 2).map((m) => [KAFKA, m.clientId, m.topic, m.payload, 'utf8']),
    );
    assert.ok((rows[0]?.['seq'] as number) < (rows[1]?.['seq'] as number));
    assert.match(String(rows[0]?.['createdAt']), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);

    // The sink's name alone is enough when no other bridge has one of that name.
    const text = await ferry(['buffer', 'peek', '--data-dir', dir, '--sink', 'kafka']);
    assert.equal(text.code, 0, text.stderr);
    const lines = text.stdout.trimEnd().split('\n');
    assert.equal(lines.length, 3);
    for (const [i, line] of lines.entries()) {
      const m = sent[i] as (typeof sent)[number];
      const payload = i === 2 ? `base64:${Buffer.from(m.payload).toString('base64')}` : m.payload;
      assert.match(line, /^\d+ {2}\d{4}-\d\d-\d\dT[\d:.]+Z {2}/);
      assert.ok(line.endsWith(`  ${m.clientId}  ${m.topic}  ${payload}`), line);
    }

    // The whole buffer: the history bridge holds nothing, so these are Kafka's, named by bridge.
    const all = await ferry(['buffer', 'peek', '--data-dir', dir, '-n', '10']);
    assert.equal(all.code, 0, all.stderr);
    const fields = all.stdout
      .trimEnd()
      .split('\n')
      .map((l) => l.split('  '));
    assert.deepEqual(
      fields.map((f) => [f[2], f[4]]),
      sent.map((m) => [KAFKA, m.topic]),
    );
    assert.deepEqual(
      fields.map((f) => Number(f[0])),
      fields.map((f) => Number(f[0])).sort((a, b) => a - b),
    );

    const unknown = await ferry(['buffer', 'peek', '--data-dir', dir, '--sink', 'nope']);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /^ferry: no sink 'nope' in .*buffer\.db \(sinks: telemetry-history\/history, telemetry-to-kafka\/kafka\)\n$/);
  });

  test('export: every buffered message as JSON lines whose payloads round-trip', async () => {
    const result = await ferry(['buffer', 'export', '--data-dir', dir, '--format', 'jsonl', '--bridge', KAFKA]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stderr, `exported 3 messages of bridge '${KAFKA}'\n`);
    const rows = result.stdout
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(
      rows.map((r) => [r['bridge'], r['topic'], Buffer.from(String(r['payload']), 'base64').toString(), r['payloadEncoding'], (r['origin'] as { clientId?: string }).clientId]),
      sent.map((m) => [KAFKA, m.topic, m.payload, 'base64', m.clientId]),
    );
    for (const row of rows) {
      assert.deepEqual(Object.keys(row), ['id', 'bridge', 'seq', 'topic', 'key', 'headers', 'origin', 'createdAt', 'payload', 'payloadEncoding']);
      assert.match(String(row['id']), /^[0-9a-f-]{36}$/);
      assert.equal(new Date(String(row['createdAt'])).toISOString(), row['createdAt']);
    }
    const peeked = await ferry(['buffer', 'peek', '--data-dir', dir, '--bridge', KAFKA, '--json']);
    assert.deepEqual(
      peeked.stdout
        .trimEnd()
        .split('\n')
        .map((l) => (JSON.parse(l) as { id: string }).id),
      rows.map((r) => r['id']),
    );

    const file = join(dataDir(), 'export.jsonl');
    const toFile = await ferry(['buffer', 'export', '--data-dir', dir, '--bridge', KAFKA, '--output', file]);
    assert.equal(toFile.code, 0, toFile.stderr);
    assert.equal(toFile.stdout, '');
    assert.equal(readFileSync(file, 'utf8'), result.stdout);

    // Without --bridge: both bridges; the history bridge has nothing buffered.
    const all = await ferry(['buffer', 'export', '--data-dir', dir]);
    assert.equal(all.stdout, result.stdout);

    const none = await ferry(['buffer', 'export', '--data-dir', dir, '--dead-letters']);
    assert.equal(none.code, 0, none.stderr);
    assert.equal(none.stdout, '');

    const csv = await ferry(['buffer', 'export', '--data-dir', dir, '--format', 'csv']);
    assert.equal(csv.code, 1);
    assert.equal(csv.stdout, '');
    assert.equal(csv.stderr, "ferry: unknown export format 'csv' (the only one is jsonl)\n");
  });

  test('purge: refuses without --yes, saying what it would delete; with it, empties the bridge while the gateway keeps running', async () => {
    const refused = await ferry(['buffer', 'purge', '--data-dir', dir, '--bridge', KAFKA]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, new RegExp(`^ferry: would delete 3 buffered messages \\(\\d+ B\\) of bridge '${KAFKA}'; run again with --yes to delete them\\n$`));
    assert.equal(sinkOf(await stats(dir), KAFKA)?.pending, 3);

    const unknown = await ferry(['buffer', 'purge', '--data-dir', dir, '--bridge', 'nope', '--yes']);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, new RegExp(`^ferry: no bridge 'nope' in .*buffer\\.db \\(it has ${HISTORY}, ${KAFKA}\\)\\n$`));

    const purged = await ferry(['buffer', 'purge', '--data-dir', dir, '--bridge', KAFKA, '--yes']);
    assert.equal(purged.code, 0, purged.stderr);
    assert.match(purged.stdout, new RegExp(`^deleted 3 buffered messages \\(\\d+ B\\) of bridge '${KAFKA}'\\n$`));
    const s = await stats(dir);
    assert.deepEqual([sinkOf(s, KAFKA)?.pending, s.totals.pending], [0, 0]);

    // The gateway goes on: a new message is acknowledged and buffered for Kafka.
    const pub = await mosquittoPub(gw.mqttUrl, 'devices/sensor-3/telemetry/climate', '{"celsius":22}', { clientId: 'sensor-3' });
    assert.equal(pub.code, 0, pub.stderr);
    assert.equal(sinkOf(await stats(dir), KAFKA)?.pending, 1);
    assert.equal(gw.child.exitCode, null);
  });
});

test('redrive: dead letters go back into the log as new messages; purge --dead-letters deletes them', async () => {
  const dir = dataDir();
  const hole = await blackHole();
  const gw = await gatewayWithPending(dir, hole, sent.slice(0, 2));
  gw.child.kill('SIGKILL');
  await gw.exited;
  hole.close();

  const store = new BufferStore(openSqlite(bufferPath(dir)));
  const buffered = store.read(KAFKA, 0, 10);
  for (const message of buffered) store.deadLetter('kafka', message, 'rejected for the test', 2);
  store.close();
  let s = await stats(dir);
  assert.deepEqual([bridgeOf(s, KAFKA)?.pending, bridgeOf(s, KAFKA)?.deadLetters, sinkOf(s, KAFKA)?.deadLetters], [0, 2, 2]);

  const letters = await ferry(['buffer', 'export', '--data-dir', dir, '--dead-letters', '--bridge', KAFKA]);
  assert.equal(letters.code, 0, letters.stderr);
  assert.equal(letters.stderr, `exported 2 dead letters of bridge '${KAFKA}'\n`);
  assert.deepEqual(
    letters.stdout
      .trimEnd()
      .split('\n')
      .map((l) => {
        const r = JSON.parse(l) as Record<string, unknown>;
        return [r['id'], r['sink'], r['reason'], r['attempts'], Buffer.from(String(r['payload']), 'base64').toString()];
      }),
    buffered.map((m, i) => [m.envelope.id, 'kafka', 'rejected for the test', 2, sent[i]?.payload]),
  );

  const redriven = await ferry(['buffer', 'redrive', '--data-dir', dir, '--bridge', KAFKA]);
  assert.equal(redriven.code, 0, redriven.stderr);
  assert.match(redriven.stdout, new RegExp(`^moved 2 dead letters of bridge '${KAFKA}' back into its log`));
  s = await stats(dir);
  assert.deepEqual([sinkOf(s, KAFKA)?.pending, bridgeOf(s, KAFKA)?.deadLetters], [2, 0]);
  const peeked = await ferry(['buffer', 'peek', '--data-dir', dir, '--sink', 'kafka', '--json']);
  const rows = peeked.stdout
    .trimEnd()
    .split('\n')
    .map((l) => JSON.parse(l) as { id: string; seq: number });
  assert.deepEqual(
    rows.map((r) => r.id),
    buffered.map((m) => m.envelope.id),
    'the same messages, ids kept',
  );
  assert.ok(
    rows.every((r) => r.seq > (buffered.at(-1)?.seq ?? 0)),
    'at the end of the log',
  );

  const again = await ferry(['buffer', 'redrive', '--data-dir', dir, '--bridge', KAFKA]);
  assert.equal(again.stdout, `bridge '${KAFKA}' has no dead letters\n`);

  const reopened = new BufferStore(openSqlite(bufferPath(dir)));
  reopened.deadLetter('kafka', reopened.read(KAFKA, 0, 1)[0] as NonNullable<ReturnType<BufferStore['read']>[number]>, 'rejected again', 1);
  reopened.close();
  const refused = await ferry(['buffer', 'purge', '--data-dir', dir, '--bridge', KAFKA, '--dead-letters']);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /would delete 1 buffered message \(\d+ B\) and 1 dead letter of bridge/);
  const purged = await ferry(['buffer', 'purge', '--data-dir', dir, '--bridge', KAFKA, '--dead-letters', '--yes']);
  assert.equal(purged.code, 0, purged.stderr);
  assert.match(purged.stdout, /^deleted 1 buffered message \(\d+ B\) and 1 dead letter of bridge/);
  s = await stats(dir);
  assert.deepEqual([bridgeOf(s, KAFKA)?.pending, bridgeOf(s, KAFKA)?.deadLetters], [0, 0]);
});

test("peek and stats follow each sink's cursor; under live-first replay the live part comes first", async () => {
  const dir = dataDir();
  const store = new BufferStore(openSqlite(bufferPath(dir)));
  store.registerBridge('b', ['x', 'y']);
  const append = (topics: string[]) =>
    store.append(topics.map((topic) => ({ bridge: 'b', envelope: createEnvelope({ topic, payload: topic, origin: { source: 'mqtt', clientId: 'c' } }) })));
  const [, m2, m3] = append(['m1', 'm2', 'm3']) as number[];
  store.commit('b', 'x', m2 as number);
  store.startLive('b', 'y', m3 as number);
  const [m4] = append(['m4', 'm5']) as number[];
  store.commitLive('b', 'y', m4 as number);
  store.close();

  const topics = async (...args: string[]) => {
    const result = await ferry(['buffer', 'peek', '--data-dir', dir, '--bridge', 'b', ...args, '--json']);
    assert.equal(result.code, 0, result.stderr);
    return result.stdout
      .trimEnd()
      .split('\n')
      .map((l) => (JSON.parse(l) as { topic: string }).topic);
  };
  assert.deepEqual(await topics(), ['m1', 'm2', 'm3', 'm4', 'm5']);
  assert.deepEqual(await topics('--sink', 'x'), ['m3', 'm4', 'm5']);
  assert.deepEqual(await topics('--sink', 'y'), ['m5', 'm1', 'm2', 'm3']);
  assert.deepEqual(await topics('--sink', 'y', '-n', '2'), ['m5', 'm1']);
  const s = await stats(dir);
  assert.deepEqual(
    bridgeOf(s, 'b')?.sinks.map((k) => [k.sink, k.pending]),
    [
      ['x', 3],
      ['y', 4],
    ],
  );
  assert.equal(bridgeOf(s, 'b')?.pending, 5);
});

test('purge and redrive go through more rows than one of their transactions holds', async () => {
  const dir = dataDir();
  const count = CHUNK_ROWS + 1;
  const store = new BufferStore(openSqlite(bufferPath(dir), { synchronous: 'normal' }));
  store.registerBridge('b', ['x']);
  const envelopes = Array.from({ length: count }, (_, i) => ({ bridge: 'b', envelope: createEnvelope({ topic: `t/${i}`, payload: 'x', origin: { source: 'mqtt' } }) }));
  store.append(envelopes);
  store.writeTransaction(() => {
    for (const message of store.read('b', 0, count)) store.deadLetter('x', message, 'no', 1);
  });
  store.append(envelopes);
  store.close();

  const redriven = await ferry(['buffer', 'redrive', '--data-dir', dir, '--bridge', 'b']);
  assert.equal(redriven.code, 0, redriven.stderr);
  assert.match(redriven.stdout, new RegExp(`^moved ${count} dead letters`));
  const purged = await ferry(['buffer', 'purge', '--data-dir', dir, '--bridge', 'b', '--yes']);
  assert.equal(purged.code, 0, purged.stderr);
  assert.equal(purged.stdout, `deleted ${2 * count} buffered messages (9.8 KiB) of bridge 'b'\n`);
  const s = await stats(dir);
  assert.deepEqual([s.totals.pending, s.totals.deadLetters], [0, 0]);
});

test('on a directory without buffer.db, every command says so in one line, exits 1 and creates nothing', async () => {
  const dir = dataDir();
  const commands = [['stats'], ['check'], ['peek', '--sink', 'kafka'], ['export', '--format', 'jsonl'], ['purge', '--bridge', KAFKA, '--yes'], ['redrive', '--bridge', KAFKA]];
  for (const args of commands) {
    const result = await ferry(['buffer', ...args, '--data-dir', dir]);
    assert.equal(result.code, 1, args.join(' '));
    assert.equal(result.stdout, '');
    assert.match(result.stderr, /^ferry: no buffer at \S+buffer\.db \([^\n]*\)\n$/, args.join(' '));
  }
  assert.equal(existsSync(bufferPath(dir)), false);
  assert.deepEqual(readdirSync(dir), []);

  const noConfig = await ferry(['buffer', 'stats', '--config', 'nope.yaml']);
  assert.equal(noConfig.code, 1);
  assert.match(noConfig.stderr, /^ferry: config file not found: nope\.yaml/);
});

test('a buffer of an earlier version: a reading command says it needs converting; a writing one says it converts it, and then every command reads it', async () => {
  const dir = dataDir();
  legacyBuffer(bufferPath(dir));
  const before = await ferry(['buffer', 'stats', '--data-dir', dir]);
  assert.equal(before.code, 1);
  assert.match(
    before.stderr,
    /^ferry: \S+buffer\.db: this buffer was written by an earlier version of Ferry: start the gateway \(or run `ferry buffer purge` or `redrive`\) once to convert it, then read it\n$/,
  );
  const purge = await ferry(['buffer', 'purge', '--bridge', 'b', '--yes', '--data-dir', dir]);
  assert.equal(purge.code, 0, purge.stderr);
  assert.match(purge.stderr, /^converting the 2,489 messages of an earlier version's buffer into packs \(about 7 s a million\)\.\.\.\n/);
  const after = await ferry(['buffer', 'stats', '--json', '--data-dir', dir]);
  assert.equal(after.code, 0, after.stderr);
  const report = JSON.parse(after.stdout) as { bridges: { bridge: string; pending: number }[] };
  // Bridge a keeps its 1,989 messages (2,000 written, 10 gone at the end, one in the middle); b was purged.
  assert.deepEqual(
    report.bridges.map((b) => [b.bridge, b.pending]),
    [
      ['a', 1_989],
      ['b', 0],
    ],
  );
});

test('check: a sound buffer is ok (exit 0); a corrupt one exits 1 and is marked for the next ferry run, which moves it aside', async () => {
  const dir = dataDir();
  const store = new BufferStore(openSqlite(bufferPath(dir)));
  store.registerBridge('b', ['out']);
  const payload = Buffer.alloc(1024, 1);
  for (let i = 0; i < 20; i++) store.append(Array.from({ length: 100 }, () => ({ bridge: 'b', envelope: createEnvelope({ topic: 't', payload, origin: { source: 'test' } }) })));
  store.close();
  const sound = await ferry(['buffer', 'check', '--data-dir', dir]);
  assert.equal(sound.code, 0, sound.stderr);
  assert.match(sound.stdout, /^ok: \S+buffer\.db \(\d[^)]* checked in \d+ ms\)\n$/);
  assert.equal(existsSync(checkMarkerPath(bufferPath(dir))), false);

  // A page of the packs overwritten (one of a pack's overflow pages): opening the file still works, the check does not.
  const db = openSqlite(bufferPath(dir), { readonly: true });
  const page = db.prepare("SELECT pageno FROM dbstat WHERE name = 'packs' AND pagetype = 'overflow' ORDER BY pageno LIMIT 1 OFFSET 20").pluck().get() as number;
  db.close();
  const fd = openSync(bufferPath(dir), 'r+');
  writeSync(fd, Buffer.alloc(16, 0xff), 0, 16, (page - 1) * 4096);
  closeSync(fd);
  const corrupt = await ferry(['buffer', 'check', '--data-dir', dir]);
  assert.equal(corrupt.code, 1);
  assert.equal(corrupt.stdout, '');
  assert.match(corrupt.stderr, /^ferry: \S+buffer\.db is corrupt: (.+\n)+The next `ferry run` moves it aside/);
  assert.ok(existsSync(checkMarkerPath(bufferPath(dir))), 'marked');
});
