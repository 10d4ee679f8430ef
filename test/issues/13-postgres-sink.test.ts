// Issue 13, part 1: the `postgres` sink, run by the real CLI against the real server. The issue's
// bridge as written (in a schema of the test's own): one row per message with the right types, a
// payload that does not fit its column dead-lettered alone, a redelivered message adding no row,
// injection attempts landing verbatim, bad names refused by `ferry validate` at their line, a
// table that does not fit stopping its bridge at startup while the gateway runs on.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { connect } from 'mqtt';
import { type BufferStatus, fetchStatus } from '../harness/crashing-gateway.ts';
import { ferry, startFerry } from '../harness/ferry-process.ts';
import { mosquittoPub } from '../harness/mosquitto.ts';
import { testSchema } from '../harness/pg-schema.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-issue13-');

/** The bridge of the issue, word for word but for the table's schema. */
const ISSUE_BRIDGE = (schema: string) => `name: telemetry-to-postgres
enabled: \${POSTGRES_URL:+true}
from:
  mqtt:
    topics: [devices/+/telemetry/#]
to:
  - postgres:
      url: \${POSTGRES_URL}
      table: ${schema}.readings
      columns:
        id: \${id}              # the message's UUIDv7: unique in the table
        device: \${1}
        topic: \${topic}
        received_at: \${timestamp}
        body: \${payload}       # jsonb
      onConflict: ignore       # or update
`;

const READINGS = (schema: string) =>
  `CREATE TABLE ${schema}.readings (id uuid PRIMARY KEY, device text NOT NULL, topic text NOT NULL, received_at timestamptz NOT NULL, body jsonb)`;

/** A gateway tree with the given bridge files; returns gateway.yaml. */
function tree(bridges: Record<string, string>): string {
  const root = tempDir();
  mkdirSync(join(root, 'bridges'));
  writeFileSync(join(root, 'gateway.yaml'), 'mqtt: {allowAnonymous: loopback}\nbridges: [bridges]\ndevices: []\n');
  for (const [name, text] of Object.entries(bridges)) writeFileSync(join(root, 'bridges', name), text);
  return join(root, 'gateway.yaml');
}

type Status = BufferStatus & { bridges: { name: string; state: string; sinks: { name: string; lastError?: string }[] }[] };

async function status(adminUrl: string): Promise<Status> {
  return (await fetchStatus(adminUrl)) as Status;
}

/** Waits until every sink of `bridge` has confirmed or dead-lettered `count` messages and holds none. */
async function drained(adminUrl: string, bridge: string, count: number): Promise<Status> {
  let s: Status | undefined;
  for (let i = 0; i < 300; i++) {
    s = await status(adminUrl);
    const b = s.buffer.bridges.find((x) => x.bridge === bridge);
    const settled = (sink: string) => (s?.counters[`sink.messages.written{bridge=${bridge},sink=${sink}}`] ?? 0) + (b?.sinks.find((x) => x.sink === sink)?.deadLetters ?? 0);
    if (b?.sinks.every((sink) => sink.pending === 0 && settled(sink.sink) >= count)) return s;
    await sleep(100);
  }
  assert.fail(`bridge '${bridge}' has not settled ${count} messages after 30 s: ${JSON.stringify(s)}`);
}

/** Publishes all messages at once from one client (QoS 1), so that they share a batch, and waits for every PUBACK. */
async function publishAll(url: string, clientId: string, messages: readonly { topic: string; payload: string | Buffer }[]): Promise<void> {
  const client = connect(url, { clientId, reconnectPeriod: 0 });
  try {
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
    });
    await Promise.all(messages.map((m) => client.publishAsync(m.topic, m.payload, { qos: 1 })));
  } finally {
    await client.endAsync();
  }
}

const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

test("the issue's postgres bridge under `ferry run`: one row per message with the right types; a payload that is not JSON is dead-lettered alone while its batch-mates are written", {
  timeout: 120_000,
}, async (t) => {
  const db = await testSchema(t);
  await db.query(READINGS(db.name));
  const dataDir = tempDir();
  const started = Date.now();
  const gw = await startFerry(['--config', tree({ 'telemetry-to-postgres.yaml': ISSUE_BRIDGE(db.name) }), '--data-dir', dataDir], { POSTGRES_URL: db.url });
  try {
    const sent = [
      { topic: 'devices/pump-1/telemetry/pressure', payload: '{"bar":2.5,"site":"north"}' },
      { topic: 'devices/pump-2/telemetry/flow/in', payload: '{"lpm":12}' },
      { topic: 'devices/pump-1/telemetry/pressure', payload: 'bar=2.7' }, // not JSON: body is jsonb
      { topic: 'devices/pump-3/telemetry/t', payload: '[1,2,{"a":null}]' },
      { topic: 'devices/pump-1/telemetry/pressure', payload: '{"bar":2.75}' },
    ];
    await publishAll(gw.mqttUrl, 'pumps', sent);
    const s = await drained(gw.adminUrl, 'telemetry-to-postgres', sent.length);
    assert.equal(s.buffer.bridges.find((b) => b.bridge === 'telemetry-to-postgres')?.deadLetters, 1);
    assert.equal(s.counters['postgres.messages.rejected{bridge=telemetry-to-postgres}'], 1);
    assert.equal(s.counters['buffer.retries{bridge=telemetry-to-postgres,sink=postgres}'] ?? 0, 0, 'no batch failed');

    const rows = await db.query<{ id: string; device: string; topic: string; received_at: Date; body: unknown; types: string }>(
      `SELECT id::text, device, topic, received_at, body, pg_typeof(id)::text || ',' || pg_typeof(received_at)::text || ',' || pg_typeof(body)::text AS types FROM ${db.name}.readings ORDER BY id`,
    );
    const good = sent.filter((_, i) => i !== 2);
    assert.deepEqual(
      rows.map((r) => ({ device: r.device, topic: r.topic, body: r.body, types: r.types })),
      good.map((m) => ({ device: m.topic.split('/')[1], topic: m.topic, body: JSON.parse(m.payload), types: 'uuid,timestamp with time zone,jsonb' })),
      'in arrival order (UUIDv7 ids sort by time)',
    );
    for (const row of rows) {
      assert.match(row.id, UUID_V7);
      assert.ok(row.received_at.getTime() >= started - 1000 && row.received_at.getTime() <= Date.now(), String(row.received_at));
    }
  } finally {
    gw.child.kill('SIGTERM');
  }
  assert.equal(await gw.exited, 0);
  const letters = await ferry(['buffer', 'export', '--data-dir', dataDir, '--dead-letters', '--bridge', 'telemetry-to-postgres']);
  assert.equal(letters.code, 0, letters.stderr);
  const dead = letters.stdout
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as { topic: string; sink: string; reason: string; payload: string });
  assert.equal(dead.length, 1);
  assert.deepEqual([dead[0]?.topic, dead[0]?.sink, Buffer.from(dead[0]?.payload ?? '', 'base64').toString()], ['devices/pump-1/telemetry/pressure', 'postgres', 'bar=2.7']);
  assert.match(
    dead[0]?.reason ?? '',
    new RegExp(
      `^postgres sink of bridge 'telemetry-to-postgres': message [0-9a-f-]{36} \\(MQTT topic 'devices/pump-1/telemetry/pressure'\\) cannot be written to ${db.name}\\.readings: column body \\(jsonb\\) from '\\$\\{payload\\}': its value is not JSON`,
    ),
  );
});

test('a message delivered again (redriven with its id) adds no row; an integer column given a non-number dead-letters that message for that sink alone', {
  timeout: 120_000,
}, async (t) => {
  const db = await testSchema(t);
  await db.query(READINGS(db.name));
  await db.query(`CREATE TABLE ${db.name}.counts (id uuid PRIMARY KEY, device text, n integer NOT NULL)`);
  // Two sinks, two cursors: the counts table refuses {"n":"many"}, which the readings table takes.
  const bridge = `name: both
from:
  mqtt:
    topics: [devices/+/telemetry/#]
to:
  - postgres:
      url: \${POSTGRES_URL}
      table: ${db.name}.readings
      columns:
        id: \${id}
        device: \${1}
        topic: \${topic}
        received_at: \${timestamp}
        body: \${payload}
  - postgres:
      url: \${POSTGRES_URL}
      table: ${db.name}.counts
      columns:
        id: \${id}
        device: \${1}
        n: \${payload.n}
`;
  const config = tree({ 'both.yaml': bridge });
  const dataDir = tempDir();
  const gw = await startFerry(['--config', config, '--data-dir', dataDir], { POSTGRES_URL: db.url });
  try {
    for (const [device, payload] of [
      ['d1', '{"n":1}'],
      ['d2', '{"n":"many"}'],
      ['d3', '{"n":3}'],
    ] as const) {
      const pub = await mosquittoPub(gw.mqttUrl, `devices/${device}/telemetry/n`, payload, { qos: 1, clientId: device });
      assert.equal(pub.code, 0, pub.stderr);
    }
    let s = await drained(gw.adminUrl, 'both', 3);
    const sinks = s.buffer.bridges.find((b) => b.bridge === 'both')?.sinks ?? [];
    assert.deepEqual(
      sinks.map((x) => [x.sink, x.deadLetters]),
      [
        ['postgres#0', 0],
        ['postgres#1', 1],
      ],
    );
    const readings = async () => db.query<{ id: string; device: string }>(`SELECT id::text, device FROM ${db.name}.readings ORDER BY id`);
    const before = await readings();
    assert.deepEqual(
      before.map((r) => r.device),
      ['d1', 'd2', 'd3'],
    );
    assert.deepEqual(await db.query<{ device: string; n: number }>(`SELECT device, n FROM ${db.name}.counts ORDER BY id`), [
      { device: 'd1', n: 1 },
      { device: 'd3', n: 3 },
    ]);

    // The dead letter goes back into the log with its id, to both sinks: the readings table has its row already.
    const redrive = await ferry(['buffer', 'redrive', '--config', config, '--data-dir', dataDir, '--bridge', 'both']);
    assert.equal(redrive.code, 0, redrive.stderr);
    for (let i = 0; i < 100; i++) {
      s = await status(gw.adminUrl);
      if ((s.counters['postgres.rows.skipped{bridge=both}'] ?? 0) >= 1 && (s.buffer.bridges.find((b) => b.bridge === 'both')?.sinks ?? []).every((x) => x.pending === 0)) break;
      await sleep(100);
    }
    assert.equal(s.counters['postgres.rows.skipped{bridge=both}'], 1);
    assert.deepEqual(await readings(), before, 'no row added');
    assert.equal(s.buffer.bridges.find((b) => b.bridge === 'both')?.sinks.find((x) => x.sink === 'postgres#1')?.deadLetters, 1, 'refused again by the counts table');
  } finally {
    gw.child.kill('SIGTERM');
  }
  assert.equal(await gw.exited, 0);
  const letters = await ferry(['buffer', 'export', '--data-dir', dataDir, '--dead-letters', '--bridge', 'both']);
  const reason = (JSON.parse(letters.stdout.trim().split('\n')[0] ?? '{}') as { reason?: string }).reason ?? '';
  assert.match(reason, /cannot be written to .*\.counts: column n \(integer\) from '\$\{payload\.n\}': its value "many" is not an integer/);
});

test('topics, client ids and payloads built to inject SQL land verbatim under `ferry run`; the table and a canary are intact', { timeout: 120_000 }, async (t) => {
  const db = await testSchema(t);
  await db.query(READINGS(db.name));
  await db.query(`CREATE TABLE ${db.name}.canary (n int); INSERT INTO ${db.name}.canary VALUES (42)`);
  const gw = await startFerry(['--config', tree({ 'telemetry-to-postgres.yaml': ISSUE_BRIDGE(db.name) }), '--data-dir', tempDir()], { POSTGRES_URL: db.url });
  const attacks = [
    { clientId: "x');DROP-TABLE", level: `x');DROP TABLE ${db.name}.canary;--`, note: `'); DROP TABLE ${db.name}.canary; --` },
    { clientId: 'dollar$1', level: '$1', note: '$1 $2::text' },
    { clientId: 'quote"q', level: '"; DELETE FROM canary; --', note: '{NULL,"a\\"b"}' },
    { clientId: 'unicode-😀', level: 'Grüße 中文 ‮', note: 'NULL' },
  ];
  try {
    for (const [i, a] of attacks.entries()) {
      const pub = await mosquittoPub(gw.mqttUrl, `devices/${a.level}/telemetry/${i}`, JSON.stringify({ note: a.note, i }), { qos: 1, clientId: a.clientId });
      assert.equal(pub.code, 0, pub.stderr);
    }
    // NUL is allowed in a payload (not in topics or client ids): a raw NUL is not JSON, and an escaped one jsonb cannot hold.
    await publishAll(gw.mqttUrl, 'nul', [
      { topic: 'devices/nul/telemetry/raw', payload: Buffer.from('{"a":"\u0000"}') },
      { topic: 'devices/nul/telemetry/escaped', payload: '{"a":"\\u0000; DROP TABLE canary"}' },
    ]);
    const s = await drained(gw.adminUrl, 'telemetry-to-postgres', attacks.length + 2);
    assert.equal(s.buffer.bridges.find((b) => b.bridge === 'telemetry-to-postgres')?.deadLetters, 2);
    const rows = await db.query<{ device: string; topic: string; body: { note: string; i: number } }>(
      `SELECT device, topic, body FROM ${db.name}.readings ORDER BY (body->>'i')::int`,
    );
    assert.deepEqual(
      rows,
      attacks.map((a, i) => ({ device: a.level, topic: `devices/${a.level}/telemetry/${i}`, body: { note: a.note, i } })),
    );
    assert.deepEqual(await db.query(`SELECT n FROM ${db.name}.canary`), [{ n: 42 }]);
  } finally {
    gw.child.kill('SIGTERM');
  }
  assert.equal(await gw.exited, 0);
});

test('`ferry validate` refuses table and column names that are not plain identifiers, and unreadable TLS files, at their line', async () => {
  const bad = `name: bad-names
from:
  mqtt:
    topics: [devices/+/telemetry/#]
to:
  - postgres:
      url: postgres://ferry@db:5432/telemetry
      table: readings; DROP TABLE readings
      columns:
        id: \${id}
        "device name": \${1}
        'x"); --': \${payload}
      conflictColumns: [id, "1st"]
      ssl: {mode: verify-full, ca: missing-ca.pem}
`;
  const result = await ferry(['validate', '--config', tree({ 'bad.yaml': bad })]);
  assert.equal(result.code, 1, result.stdout);
  const lines = result.stderr
    .trim()
    .split('\n')
    .map((line) => line.replace(/^.*\/bridges\//, 'bridges/'));
  assert.deepEqual(
    lines.slice(0, -1).sort(),
    [
      `bridges/bad.yaml:11:24: to[0].postgres.columns.device name: column 'device name': a name is 1 to 63 letters, digits or "_", not starting with a digit; it has " "`,
      `bridges/bad.yaml:12:20: to[0].postgres.columns.x"); --: column 'x"); --': a name is 1 to 63 letters, digits or "_", not starting with a digit; it has "\\"" ")" ";" " " "-"`,
      `bridges/bad.yaml:13:29: to[0].postgres.conflictColumns[1]: '1st': a name is 1 to 63 letters, digits or "_", not starting with a digit`,
      `bridges/bad.yaml:8:14: to[0].postgres.table: table 'readings; DROP TABLE readings': a name is 1 to 63 letters, digits or "_", not starting with a digit; it has ";" " "`,
    ].sort(),
  );
  assert.match(lines.at(-1) ?? '', /4 problems/);

  // Names that pass: the TLS file is checked next.
  const tls = bad
    .replace('readings; DROP TABLE readings', 'readings')
    .replace(/ {8}"device name".*\n {8}'x.*\n/, '')
    .replace('[id, "1st"]', '[id]');
  const second = await ferry(['validate', '--config', tree({ 'bad.yaml': tls })]);
  assert.equal(second.code, 1);
  assert.match(second.stderr, /\/bridges\/bad\.yaml:12:36: to\[0\]\.postgres\.ssl\.ca: no such file: .*missing-ca\.pem$/m);
});

test('a table that does not fit stops its bridge at startup, saying why, with its messages kept; the gateway runs on', { timeout: 120_000 }, async (t) => {
  const db = await testSchema(t);
  await db.query(`CREATE TABLE ${db.name}.readings (id uuid PRIMARY KEY, device text)`); // no topic, received_at, body
  const history = 'name: history\nfrom: {mqtt: {topics: ["devices/+/telemetry/#"]}}\nto: [{history: {}}]\n';
  const gw = await startFerry(['--config', tree({ 'telemetry-to-postgres.yaml': ISSUE_BRIDGE(db.name), 'history.yaml': history }), '--data-dir', tempDir()], {
    POSTGRES_URL: db.url,
  });
  try {
    let s = await status(gw.adminUrl);
    for (let i = 0; i < 100 && s.bridges.find((b) => b.name === 'telemetry-to-postgres')?.state !== 'failed'; i++) {
      await sleep(100);
      s = await status(gw.adminUrl);
    }
    const bridge = s.bridges.find((b) => b.name === 'telemetry-to-postgres');
    assert.equal(bridge?.state, 'failed');
    assert.match(
      bridge?.sinks[0]?.lastError ?? '',
      new RegExp(
        `postgres sink of bridge 'telemetry-to-postgres': table ${db.name}\\.readings has no column 'topic', 'received_at', 'body' \\(its columns: id uuid, device text\\)`,
      ),
    );
    const logged = gw.logs.find((l) => l['level'] === 50 && String((l['err'] as { message?: string } | undefined)?.message).includes('has no column'));
    assert.ok(logged !== undefined, 'logged as an error');

    const pub = await mosquittoPub(gw.mqttUrl, 'devices/d1/telemetry/t', '{"a":1}', { qos: 1, clientId: 'd1' });
    assert.equal(pub.code, 0, pub.stderr);
    await sleep(500);
    s = await status(gw.adminUrl);
    assert.equal(s.buffer.bridges.find((b) => b.bridge === 'telemetry-to-postgres')?.sinks[0]?.pending, 1, 'kept for when the table is fixed');
    assert.equal(s.buffer.bridges.find((b) => b.bridge === 'history')?.sinks[0]?.pending, 0, 'the other bridge goes on');
    assert.equal((await db.query(`SELECT count(*)::int AS n FROM ${db.name}.readings`))[0]?.['n'], 0);
  } finally {
    gw.child.kill('SIGTERM');
  }
  assert.equal(await gw.exited, 0);
});
