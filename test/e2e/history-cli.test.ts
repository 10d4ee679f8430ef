// `ferry history --bridge nope` printed nothing and exited 0, where the `buffer` commands name the
// bridges there are; and `--topic 'devices/#'` (an MQTT filter, as `ferry retained list --topic`
// takes one) matched nothing, as --topic took a prefix only. Now an unknown bridge exits 1 naming
// the bridges the history has, and a --topic with a wildcard level is an MQTT filter, in a history
// of packs and in one of an earlier version (a row a message) alike. And a history.db that is not
// Ferry's (an empty database, another program's) said `no such table: history_floors`: now it is
// named as not a Ferry history database, exit code 1, and left as it was.
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { createEnvelope } from '../../src/core/envelope.ts';
import { HistoryWriter, historyPath } from '../../src/sqlite/history-store.ts';
import { eventually } from '../harness/eventually.ts';
import { ferry, ferryWithin, spawnFerryGroup } from '../harness/ferry-process.ts';
import { tempDirs } from '../harness/temp.ts';
import { FOREIGN_DATABASES } from '../harness/foreign-databases.ts';

const tempDir = tempDirs('ferry-history-cli-');

const sent = [
  ['telemetry-history', 'devices/sensor-1/telemetry/climate', '20'],
  ['telemetry-history', 'devices/sensor-2/telemetry/climate', '21'],
  ['telemetry-history', 'devices/sensor-1/telemetry/power', '5'],
  ['alarms', 'devices/sensor-1/alarm', 'hot'],
  ['alarms', 'sites/s1/devices/sensor-1/telemetry/climate', '22'],
] as const;

/** A history of the messages above, as the gateway writes it (packs). */
async function packedHistory(): Promise<string> {
  const dir = tempDir();
  const writer = new HistoryWriter(dir, 'normal');
  try {
    for (const [bridge, topic, payload] of sent) await writer.append(bridge, [createEnvelope({ topic, payload, origin: { source: 'mqtt', clientId: 'd' } })], 1000);
  } finally {
    writer.close();
  }
  return dir;
}

/** The same messages in a history.db of an earlier version, a row a message (read as it is). */
function legacyHistory(): string {
  const dir = tempDir();
  const db = new Database(historyPath(dir));
  db.exec(`CREATE TABLE history (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, bridge TEXT NOT NULL, topic TEXT NOT NULL,
    client_id TEXT, qos INTEGER, payload BLOB NOT NULL, received_at INTEGER NOT NULL);
    CREATE INDEX history_bridge_seq ON history (bridge, seq);`);
  const insert = db.prepare('INSERT INTO history (id, bridge, topic, client_id, qos, payload, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)');
  for (const [bridge, topic, payload] of sent)
    insert.run(createEnvelope({ topic, payload, origin: { source: 'mqtt' } }).id, bridge, topic, 'd', 1, Buffer.from(payload), Date.now());
  db.close();
  return dir;
}

const topics = (stdout: string) =>
  stdout
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => (JSON.parse(line) as { topic: string }).topic);

for (const [kind, make] of [
  ['packs', packedHistory],
  ['an earlier version', legacyHistory],
] as const) {
  test(`history (${kind}): --bridge of a bridge it has no messages of exits 1 naming those it has`, { timeout: 30_000 }, async () => {
    const dir = await make();
    const result = await ferry(['history', '--data-dir', dir, '--bridge', 'telemetry-histroy']);
    assert.equal(result.code, 1);
    assert.equal(result.stdout, '');
    assert.equal(result.stderr, `ferry: no bridge 'telemetry-histroy' in ${historyPath(dir)} (it has alarms, telemetry-history)\n`);

    const known = await ferry(['history', '--data-dir', dir, '--bridge', 'alarms', '--json']);
    assert.equal(known.code, 0, known.stderr);
    assert.deepEqual(topics(known.stdout), ['devices/sensor-1/alarm', 'sites/s1/devices/sensor-1/telemetry/climate']);
  });

  test(`history (${kind}): --topic with + or # is an MQTT filter; without, a prefix as before`, { timeout: 30_000 }, async () => {
    const dir = await make();
    const cases: [string, string[], string[]?][] = [
      ['devices/#', ['devices/sensor-1/telemetry/climate', 'devices/sensor-2/telemetry/climate', 'devices/sensor-1/telemetry/power', 'devices/sensor-1/alarm']],
      ['devices/+/telemetry/climate', ['devices/sensor-1/telemetry/climate', 'devices/sensor-2/telemetry/climate']],
      ['+/+/+/sensor-1/#', ['sites/s1/devices/sensor-1/telemetry/climate']],
      ['devices/sensor-1/#', ['devices/sensor-1/alarm'], ['-n', '1']],
      ['devices/+', []],
      ['devices/sensor-1/', ['devices/sensor-1/telemetry/climate', 'devices/sensor-1/telemetry/power', 'devices/sensor-1/alarm']],
    ];
    for (const [topic, expected, more = []] of cases) {
      const result = await ferry(['history', '--data-dir', dir, '--topic', topic, '--json', ...more]);
      assert.equal(result.code, 0, result.stderr);
      assert.deepEqual(topics(result.stdout), expected, topic);
    }
    const invalid = await ferry(['history', '--data-dir', dir, '--topic', 'devices/#/x']);
    assert.equal(invalid.code, 1);
    assert.match(invalid.stderr, /^ferry: invalid --topic 'devices\/#\/x': '#' must be a whole level and the last one \([^\n]*\)\n$/);
  });
}

test('history --follow of a bridge with no messages yet says so and prints its messages as they come', { timeout: 30_000 }, async () => {
  const dir = await packedHistory();
  const run = spawnFerryGroup(['history', '--data-dir', dir, '--bridge', 'new-bridge', '--follow', '--json']);
  const writer = new HistoryWriter(dir, 'normal');
  try {
    await eventually(() => assert.match(run.stderr(), /^ferry: no bridge 'new-bridge' in \S+history\.db yet \(it has alarms, telemetry-history\); waiting for its messages\n$/), {
      timeoutMs: 20_000,
    });
    await writer.append('new-bridge', [createEnvelope({ topic: 'devices/sensor-9/telemetry/climate', payload: '1', origin: { source: 'mqtt' } })], 1000);
    await eventually(() => assert.deepEqual(topics(run.stdout()), ['devices/sensor-9/telemetry/climate']), { timeoutMs: 20_000 });
  } finally {
    run.stop();
    writer.close();
  }
});

for (const [kind, make, what] of FOREIGN_DATABASES) {
  test(`history.db that is ${kind}: history says it is not a Ferry history database, exits 1, and leaves it as it was`, { timeout: 60_000 }, async () => {
    const dir = tempDir();
    const path = historyPath(dir);
    make(path);
    const bytes = readFileSync(path);
    const files = readdirSync(dir);
    for (const args of [[], ['--bridge', 'b'], ['--topic', 'devices/#', '--json'], ['--follow']]) {
      // Within a limit: --follow on a history it could read would run until killed.
      const result = await ferryWithin(['history', '--data-dir', dir, ...args], 30_000);
      assert.equal(result.code, 1, args.join(' '));
      assert.equal(result.stdout, '', args.join(' '));
      assert.match(result.stderr, new RegExp(`^ferry: \\S+history\\.db is not a Ferry history database: ${what} \\([^\\n]*\\)\\n$`), args.join(' '));
    }
    assert.deepEqual(readFileSync(path), bytes, 'the file is unchanged');
    assert.deepEqual(readdirSync(dir), files, 'no file was added beside it');
  });
}
