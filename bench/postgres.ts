// PostgreSQL, two measures against the server of FERRY_BENCH_PG (else FERRY_TEST_PG, else the
// machine's postgres://postgres@127.0.0.1:5432/postgres), each in a schema of its own:
//   - the postgres sink with its defaults (templates rendered, values converted, one INSERT ...
//     SELECT FROM unnest ... per batch, batches pipelined on one connection, acks) writing N
//     messages, against a raw COPY FROM STDIN of the same rows into the same kind of table, in
//     alternating rounds of the same run (goal: median ratio >= 0.7); and, in the same rounds,
//     what committing batch after batch costs without pipelining: the sink's own prepared
//     statement run bare, batch after batch of the same size, each committed before the next is
//     sent (no templates, conversion or acks);
//   - devices to PostgreSQL end to end: QoS 1 publishers into `ferry run` with a postgres
//     bridge; throughput is the rows over the span from the first publish to the last row's
//     insert, latency each row's insert time (clock_timestamp() in the statement) minus the
//     publish time its payload carries.
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import pg from 'pg';
import pino from 'pino';
import { from, lastValueFrom } from 'rxjs';
import { createDelivery, type Delivery } from '../src/core/delivery.ts';
import { createEnvelope, type Envelope } from '../src/core/envelope.ts';
import { CounterRegistry } from '../src/observability/counters.ts';
import { poolSettings } from '../src/postgres/connection.ts';
import { processPools } from '../src/postgres/pools.ts';
import { type TableName, parseTableName } from '../src/postgres/identifiers.ts';
import { createPostgresSink, postgresSink } from '../src/postgres/sink.ts';
import { planInsert } from '../src/postgres/table.ts';
import { textArray } from '../src/postgres/text-array.ts';
import { publishFleet } from './load.ts';
import { startFerryTarget } from './targets.ts';
import { ratio } from './stats.ts';

export interface PostgresBenchResult {
  readonly server: string;
  /** Medians of alternating rounds (sink, then COPY), and each round. */
  readonly sink: {
    readonly rows: number;
    readonly batchSize: number;
    readonly concurrency: number;
    readonly ferry: number;
    readonly copy: number;
    readonly ratio: number;
    readonly ratioRange: readonly [number, number];
    /** The bare statement batch after batch: rows/s, and its own ratio to COPY. */
    readonly bare: number;
    readonly bareRatio: number;
    /** The sink against the bare statement. */
    readonly ofBare: number;
    readonly rounds: readonly { readonly ferry: number; readonly copy: number; readonly bare: number; readonly ratio: number }[];
  };
  readonly e2e: {
    readonly devices: number;
    readonly messages: number;
    readonly rows: number;
    readonly duplicates: number;
    readonly perSec: number;
    readonly ackedPerSec: number;
    readonly latencyMs: { readonly p50: number; readonly p99: number; readonly max: number };
  };
}

const TABLE = (schema: string, name: string) =>
  `CREATE TABLE ${schema}.${name} (id uuid PRIMARY KEY, device text NOT NULL, topic text NOT NULL, received_at timestamptz NOT NULL, body jsonb, written_at timestamptz NOT NULL DEFAULT clock_timestamp())`;

function server(): string {
  return process.env['FERRY_BENCH_PG'] ?? process.env['FERRY_TEST_PG'] ?? 'postgres://postgres@127.0.0.1:5432/postgres';
}

export async function benchPostgres(options: { rows: number; e2eMessages: number; log: (line: string) => void }): Promise<PostgresBenchResult> {
  const url = server();
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  const schema = `ferry_bench_${process.pid}_${Date.now().toString(36)}`;
  await admin.query(`CREATE SCHEMA ${schema}`);
  try {
    options.log(`  postgres sink vs raw COPY: ${options.rows} rows, alternating rounds...`);
    const sink = await sinkVsCopy(admin, url, schema, options.rows);
    options.log(`  devices to PostgreSQL: ${options.e2eMessages} QoS 1 messages from 50 devices through ferry run...`);
    const e2e = await endToEnd(admin, url, schema, options.e2eMessages);
    return { server: url.replace(/:[^:@/]*@/, '@'), sink, e2e };
  } finally {
    await admin.query(`DROP SCHEMA ${schema} CASCADE`);
    await admin.end();
  }
}

function envelopes(count: number): Envelope[] {
  return Array.from({ length: count }, (_, i) =>
    createEnvelope({
      topic: `devices/d${i % 50}/telemetry/bench`,
      payload: JSON.stringify({ seq: i, celsius: 20 + (i % 100) / 10, pad: 'x'.repeat(140) }),
      origin: { source: 'mqtt', clientId: `d${i % 50}`, qos: 1 },
    }),
  );
}

async function sinkVsCopy(admin: pg.Client, url: string, schema: string, rows: number): Promise<PostgresBenchResult['sink']> {
  await admin.query(`${TABLE(schema, 'sink_rows')}; ${TABLE(schema, 'copy_rows')}; ${TABLE(schema, 'bare_rows')}`);
  const batchSize = Number(process.env['FERRY_BENCH_PG_BATCH'] ?? 500);
  const rounds = Number(process.env['FERRY_BENCH_PG_ROUNDS'] ?? 5);
  const concurrency = process.env['FERRY_BENCH_PG_CONCURRENCY'];

  // The sink, as a YAML bridge configures it, with its default batch size and concurrency.
  const config = postgresSink.schema.parse({
    url,
    table: `${schema}.sink_rows`,
    columns: { id: '${id}', device: '${1}', topic: '${topic}', received_at: '${timestamp}', body: '${payload}' },
    batchSize,
    ...(concurrency === undefined ? {} : { concurrency: Number(concurrency) }),
  });
  const sink = createPostgresSink(config, {
    logger: pino({ level: 'silent' }),
    counters: new CounterRegistry(),
    dataDir: '/nonexistent',
    bridge: 'bench',
    sourceFilters: ['devices/+/telemetry/#'],
  });
  // In a running gateway a bridge's pool lives as long as the bridge. Here each round
  // subscribes anew, and the last lease closing would close the pool: held, the warm-up's
  // connection serves every round, as a bridge's does (a new backend costs the server more
  // CPU on its first statements).
  const held = processPools.acquire(poolSettings(config, 'ferry', '.', 'bench'), () => {});
  const client = new pg.Client({ connectionString: url });
  try {
    // Warm-up: the sink reads the table's columns and opens its pool before the clock starts.
    await lastValueFrom(sink(from(envelopes(1).map((e) => createDelivery(e, { onAck: () => {}, onNack: () => {} })))), { defaultValue: undefined });
    await client.connect();
  } catch (error) {
    await held.release();
    throw error;
  }
  // Alternating rounds (sink, then COPY, then the bare statement, on emptied tables), each with messages of its own.
  const measured: { ferry: number; copy: number; bare: number; ratio: number }[] = [];
  try {
    const { from: copyFrom } = (await import('pg-copy-streams' as string)) as { from: (sql: string) => Writable };
    // The statement the sink runs first for a batch (planned the sink's way), into a table of its own.
    const { plainStatement: bare } = await planInsert(client, {
      table: (parseTableName(`${schema}.bare_rows`) as { table: TableName }).table,
      columns: ['id', 'device', 'topic', 'received_at', 'body'],
      conflictColumns: ['id'],
      onConflict: 'ignore',
    });
    await client.query({ name: 'bare', text: bare, values: [[], [], [], [], []].map((values) => textArray(values)) });
    for (let round = 0; round < rounds; round++) {
      const messages = envelopes(rows);
      await admin.query(`TRUNCATE ${schema}.sink_rows, ${schema}.copy_rows, ${schema}.bare_rows`);

      let acked = 0;
      let settled!: () => void;
      const done = new Promise<void>((resolve) => (settled = resolve));
      const deliveries: Delivery[] = messages.map((envelope) =>
        createDelivery(envelope, {
          onAck: () => {
            acked += 1;
            if (acked === rows) settled();
          },
          onNack: (error) => {
            throw error;
          },
        }),
      );
      const sinkStarted = performance.now();
      const subscription = sink(from(deliveries)).subscribe();
      await done;
      const sinkMs = performance.now() - sinkStarted;
      subscription.unsubscribe();

      // Raw COPY of the same rows: text format, one statement, no conflict handling.
      const lines = messages.map((e) => {
        const device = e.topic.split('/')[1] as string;
        const body = Buffer.from(e.payload).toString().replace(/\\/g, '\\\\');
        return `${e.id}\t${device}\t${e.topic}\t${new Date(e.timestamp).toISOString()}\t${body}\n`;
      });
      const copyStarted = performance.now();
      const stream = client.query(copyFrom(`COPY ${schema}.copy_rows (id, device, topic, received_at, body) FROM STDIN`) as never) as unknown as Writable;
      await pipeline(Readable.from(chunks(lines, batchSize)), stream);
      const copyMs = performance.now() - copyStarted;

      // The bare statement: the values ready as the COPY's lines are, each batch encoded and
      // committed (autocommit) before the next is sent.
      const values = messages.map((e) => [e.id, e.topic.split('/')[1] as string, e.topic, new Date(e.timestamp).toISOString(), Buffer.from(e.payload).toString()]);
      const bareStarted = performance.now();
      for (let i = 0; i < rows; i += batchSize) {
        const part = values.slice(i, i + batchSize);
        await client.query({ name: 'bare', text: bare, values: [0, 1, 2, 3, 4].map((c) => textArray(part.map((row) => row[c] as string))) });
      }
      const bareMs = performance.now() - bareStarted;

      const counts = await admin.query<{ s: number; c: number; b: number }>(
        `SELECT (SELECT count(*) FROM ${schema}.sink_rows)::int AS s, (SELECT count(*) FROM ${schema}.copy_rows)::int AS c, (SELECT count(*) FROM ${schema}.bare_rows)::int AS b`,
      );
      const count = counts.rows[0];
      if (count?.s !== rows || count.c !== rows || count.b !== rows) throw new Error(`rows written: sink ${count?.s}, COPY ${count?.c}, bare ${count?.b}, of ${rows}`);
      const ferry = Math.round((rows * 1000) / sinkMs);
      const copy = Math.round((rows * 1000) / copyMs);
      measured.push({ ferry, copy, bare: Math.round((rows * 1000) / bareMs), ratio: ratio(ferry, copy) });
    }
  } finally {
    await client.end();
    await held.release();
  }
  const ratios = measured.map((m) => m.ratio);
  return {
    rows,
    batchSize,
    concurrency: config.concurrency,
    ferry: median(measured.map((m) => m.ferry)),
    copy: median(measured.map((m) => m.copy)),
    ratio: median(ratios),
    ratioRange: [Math.min(...ratios), Math.max(...ratios)],
    bare: median(measured.map((m) => m.bare)),
    bareRatio: median(measured.map((m) => ratio(m.bare, m.copy))),
    ofBare: median(measured.map((m) => ratio(m.ferry, m.bare))),
    rounds: measured,
  };
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((x, y) => x - y);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[mid] as number) : Math.round((((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2) * 100) / 100;
}

function* chunks(lines: readonly string[], size: number): Generator<string> {
  for (let i = 0; i < lines.length; i += size) yield lines.slice(i, i + size).join('');
}

async function endToEnd(admin: pg.Client, url: string, schema: string, messages: number): Promise<PostgresBenchResult['e2e']> {
  const devices = 50;
  await admin.query(TABLE(schema, 'e2e_rows'));
  const bridge = [
    'name: bench-postgres',
    'from: { mqtt: { topics: ["devices/+/telemetry/#"] } }',
    'to:',
    '  - postgres:',
    `      url: ${url}`,
    `      table: ${schema}.e2e_rows`,
    '      columns: { id: "${id}", device: "${1}", topic: "${topic}", received_at: "${timestamp}", body: "${payload}" }',
    ...(process.env['FERRY_BENCH_PG_CONCURRENCY'] === undefined ? [] : [`      concurrency: ${Number(process.env['FERRY_BENCH_PG_CONCURRENCY'])}`]),
    '',
  ].join('\n');
  const target = await startFerryTarget({ bridge });
  try {
    const firstPublish = Date.now();
    const ackedPerSec = await publishFleet({
      url: target.url,
      devices,
      window: 20,
      count: messages,
      prefix: 'pgb',
      payload: (device, seq) => Buffer.from(JSON.stringify({ t: performance.timeOrigin + performance.now(), d: device, s: seq, pad: 'x'.repeat(120) })),
    });
    const deadline = Date.now() + 120_000;
    for (;;) {
      const n = (await admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${schema}.e2e_rows`)).rows[0]?.n ?? 0;
      if (n >= messages) break;
      if (Date.now() > deadline) throw new Error(`${n} of ${messages} rows in PostgreSQL after 120 s`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const stats = await admin.query<{ rows: number; distinct: number; last: number; p50: number; p99: number; max: number }>(
      `SELECT count(*)::int AS rows, count(DISTINCT (body->>'d', body->>'s'))::int AS distinct,
              extract(epoch FROM max(written_at)) * 1000 AS last,
              percentile_cont(0.5) WITHIN GROUP (ORDER BY lat) AS p50,
              percentile_cont(0.99) WITHIN GROUP (ORDER BY lat) AS p99, max(lat) AS max
         FROM (SELECT body, written_at, extract(epoch FROM written_at) * 1000 - (body->>'t')::float8 AS lat FROM ${schema}.e2e_rows) r`,
    );
    const s = stats.rows[0] as { rows: number; distinct: number; last: number; p50: number; p99: number; max: number };
    const round = (n: number) => Math.round(Number(n) * 10) / 10;
    return {
      devices,
      messages,
      rows: s.rows,
      duplicates: s.rows - s.distinct,
      perSec: Math.round((s.distinct * 1000) / (Number(s.last) - firstPublish)),
      ackedPerSec,
      latencyMs: { p50: round(s.p50), p99: round(s.p99), max: round(s.max) },
    };
  } finally {
    await target.stop();
  }
}
