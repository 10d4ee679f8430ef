// Durable buffer throughput against raw better-sqlite3 on the same machine, in one run.
//   enqueue: BufferWriter group commits (synchronous=FULL), deliveries arriving 1,000 per
//            event-loop turn, acked after each commit, vs. raw INSERTs of the same rows in
//            transactions of 1,000 (FULL, WAL), the best a store on this disk can do.
//   drain:   a cursor source handing every message to a sink that acks at once (cursor
//            commits and deletes included), vs. the raw queue pattern (select a batch,
//            delete it) on the same rows.
//   status:  the buffer's part of /api/status and /metrics for a bridge holding a long outage's
//            backlog (one sink down, one up), with the counts kept, vs. counted from the packs'
//            index on every call (as `ferry buffer stats` does).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { bufferPolicySchema, bufferSettingsSchema } from '../src/buffer/config.ts';
import { openBuffer } from '../src/buffer/open.ts';
import { cursorSource } from '../src/buffer/reader.ts';
import { BufferWriter } from '../src/buffer/writer.ts';
import { createDelivery, type Delivery } from '../src/core/delivery.ts';
import { createEnvelope, type Envelope } from '../src/core/envelope.ts';
import { CounterRegistry } from '../src/observability/counters.ts';
import { openSqlite } from '../src/sqlite/connection.ts';
import { fillBuffer } from './startup-backlog.ts';

export interface BufferBenchResult {
  readonly messages: number;
  readonly payloadBytes: number;
  readonly enqueue: { ferry: number; raw: number; ratio: number };
  readonly drain: { ferry: number; raw: number; ratio: number };
  /** Stats calls per second with `backlog` messages buffered. */
  readonly status: { backlog: number; ferry: number; raw: number; ratio: number };
}

const TURN = 1000;

function envelopes(count: number, size: number): Envelope[] {
  const payload = Buffer.alloc(size, 'x');
  return Array.from({ length: count }, (_, i) =>
    createEnvelope({ topic: `devices/d${i % 100}/telemetry/t`, payload, origin: { source: 'mqtt', clientId: `d${i % 100}`, qos: 1 } }),
  );
}

function raw(dir: string, rows: readonly Envelope[]): { enqueue: number; drain: number } {
  const db = openSqlite(join(dir, 'raw.db'), { synchronous: 'full' });
  db.exec('CREATE TABLE m (seq INTEGER PRIMARY KEY AUTOINCREMENT, bridge TEXT, id TEXT, topic TEXT, key TEXT, headers TEXT, origin TEXT, payload BLOB, created_at INTEGER)');
  const insert = db.prepare('INSERT INTO m (bridge, id, topic, key, headers, origin, payload, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)');
  const batch = db.transaction((chunk: readonly Envelope[]) => {
    for (const e of chunk) insert.run('b', e.id, e.topic, null, JSON.stringify(e.headers), JSON.stringify(e.origin), e.payload, e.timestamp);
  });
  const started = performance.now();
  for (let i = 0; i < rows.length; i += TURN) batch(rows.slice(i, i + TURN));
  const enqueue = rows.length / ((performance.now() - started) / 1000);
  const select = db.prepare('SELECT * FROM m ORDER BY seq LIMIT ?');
  const remove = db.prepare('DELETE FROM m WHERE seq <= ?');
  const drainStarted = performance.now();
  for (;;) {
    const got = select.all(TURN) as { seq: number }[];
    if (got.length === 0) break;
    remove.run((got[got.length - 1] as { seq: number }).seq);
  }
  const drain = rows.length / ((performance.now() - drainStarted) / 1000);
  db.close();
  return { enqueue, drain };
}

async function ferryEnqueueAndDrain(dir: string, rows: readonly Envelope[]): Promise<{ enqueue: number; drain: number }> {
  const logger = pino({ level: 'silent' });
  const counters = new CounterRegistry();
  const { store } = openBuffer(dir, logger);
  const writer = new BufferWriter(store, bufferSettingsSchema().parse({}), logger, counters);
  const policy = bufferPolicySchema().parse({ windowSize: TURN });
  store.registerBridge('b', ['null']);
  writer.setPolicy('b', policy);

  let acked = 0;
  const started = performance.now();
  await new Promise<void>((resolve) => {
    const handlers = {
      onAck: () => ++acked === rows.length && resolve(),
      onNack: (e: Error) => {
        throw e;
      },
    };
    let i = 0;
    const turn = () => {
      for (const end = Math.min(i + TURN, rows.length); i < end; i++) writer.enqueue('b', createDelivery(rows[i] as Envelope, handlers));
      if (i < rows.length) setImmediate(turn);
    };
    turn();
  });
  const enqueue = rows.length / ((performance.now() - started) / 1000);

  const drainStarted = performance.now();
  const reader = cursorSource({ store, writer, bridge: 'b', sink: 'null', policy, logger, counters });
  let delivered = 0;
  await new Promise<void>((resolve) => {
    reader.deliveries.subscribe((d: Delivery) => {
      d.ack();
      if (++delivered === rows.length) resolve();
    });
  });
  // The last window's commit follows its acks by a microtask.
  while (store.usage('b').messages > 0) await new Promise((r) => setImmediate(r));
  const drain = rows.length / ((performance.now() - drainStarted) / 1000);
  reader.stop();
  writer.close();
  store.close();
  return { enqueue, drain };
}

/** Stats calls per second on a bridge with `backlog` messages its 'kafka' sink has not confirmed and its 'history' sink has: kept, and counted each time. */
function statusCost(dir: string, backlog: number, payloadBytes: number): { ferry: number; raw: number } {
  fillBuffer(dir, backlog, 'b', payloadBytes);
  const { store } = openBuffer(dir, pino({ level: 'silent' }));
  try {
    // Both sinks start at the oldest message; 'history' then confirms them all.
    store.registerBridge('b', ['history', 'kafka']);
    store.commit('b', 'history', store.tail('b'));
    const rate = (call: () => void) => {
      call(); // the kept counts are counted once, at the first call (at startup, in the gateway)
      const rounds = 3;
      const started = performance.now();
      for (let i = 0; i < rounds; i++) call();
      return rounds / ((performance.now() - started) / 1000);
    };
    const ferry = rate(() => store.stats('b', { kept: true }));
    const raw = rate(() => store.stats('b'));
    return { ferry, raw };
  } finally {
    store.close();
  }
}

export async function benchBuffer(messages = 100_000, payloadBytes = 200, backlog = 1_000_000): Promise<BufferBenchResult> {
  const rows = envelopes(messages, payloadBytes);
  const dir = mkdtempSync(join(tmpdir(), 'ferry-bench-buffer-'));
  const statusDir = mkdtempSync(join(tmpdir(), 'ferry-bench-status-'));
  try {
    const base = raw(dir, rows);
    const ferry = await ferryEnqueueAndDrain(dir, rows);
    const status = statusCost(statusDir, backlog, payloadBytes);
    const compare = (f: number, r: number) => ({ ferry: Math.round(f), raw: Math.round(r), ratio: round(f / r) });
    return {
      messages,
      payloadBytes,
      enqueue: compare(ferry.enqueue, base.enqueue),
      drain: compare(ferry.drain, base.drain),
      status: { backlog, ferry: round(status.ferry), raw: round(status.raw), ratio: round(status.ferry / status.raw) },
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(statusDir, { recursive: true, force: true });
  }
}

const round = (n: number) => Math.round(n * 100) / 100;
