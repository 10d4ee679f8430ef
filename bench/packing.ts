// What the buffer's packs save over a row a message, over raw better-sqlite3 (no gateway): the
// messages of the ingest benchmark's shape (200-byte payloads, 50 devices, commits of 1,024, the
// WAL under synchronous=NORMAL with a checkpoint every 4,000 pages, as the buffer opens it) written
//   rows:      as versions before packs wrote them, a row each in `messages` and its index (their
//              schema), 32 rows a statement with the bridge, key and headers in the statement's
//              text;
//   buffer:    by the buffer itself (BufferStore.append, src/buffer/packs.ts): a pack a commit;
//   bare:      a row per commit, a length-prefixed blob of the messages' ids, topics, origins,
//              payloads and times encoded in JavaScript, with the group's first seq, count and
//              payload bytes beside it in an index, and nothing around it: the bound the
//              buffer's packs are held against;
// then read back in seq order in windows of 1,024 and deleted behind the reader (the rows as
// earlier versions' reader selected them; the buffer's by a sink's read and cursor commit; the
// bare groups decoded into objects of the same fields).
// Alternating rounds; medians of wall and CPU time per message.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type Database from 'better-sqlite3';
import { BUFFER_CHECKPOINT_PAGES } from '../src/buffer/open.ts';
import { BufferStore } from '../src/buffer/store.ts';
import { NO_HEADERS, type Envelope, type Origin } from '../src/core/envelope.ts';
import { openSqlite } from '../src/sqlite/connection.ts';
import { median } from './stats.ts';

const COMMIT = 1024;
const DEVICES = 50;
const BRIDGE = 'bench-history';
const ROUNDS = 3;
/** Rows per INSERT statement in the rows' store, as the earlier log (and history) wrote them. */
const INSERT_ROWS = 32;
/** The log of versions before packs: a row a message, its payload's length in the index. */
const ROWS_SCHEMA = `
CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, bridge TEXT NOT NULL, id TEXT NOT NULL, topic TEXT NOT NULL, key TEXT,
  headers TEXT NOT NULL, origin TEXT NOT NULL, payload BLOB NOT NULL, created_at INTEGER NOT NULL);
CREATE INDEX messages_bridge_seq_bytes ON messages (bridge, seq, length(payload));`;

interface Cost {
  /** Microseconds per message, wall and CPU (user + system). */
  readonly wallUs: number;
  readonly cpuUs: number;
}

export interface PackingBenchResult {
  readonly messages: number;
  readonly rounds: number;
  /** Writing: a row a message as before packs, the buffer's packs, a bare row per commit. */
  readonly write: { readonly rows: Cost; readonly buffer: Cost; readonly bare: Cost };
  /** Reading back and deleting, the same three. */
  readonly readDelete: { readonly rows: Cost; readonly buffer: Cost; readonly bare: Cost };
  /** Database pages after writing, the same three. */
  readonly pages: { readonly rows: number; readonly buffer: number; readonly bare: number };
}

interface Messages {
  /** The same messages as envelopes, for the buffer's own append. */
  readonly envelopes: readonly Envelope[];
  readonly ids: readonly string[];
  readonly topics: readonly string[];
  readonly origins: readonly string[];
  readonly payload: Buffer;
}

function messages(count: number): Messages {
  // Ids of a UUID's shape, made beforehand: the id's making is not what is measured.
  const ids = Array.from({ length: count }, (_, i) => `0190f1c2-7a3b-7c4d-8e5f-${i.toString(16).padStart(12, '0')}`);
  const topics = Array.from({ length: DEVICES }, (_, d) => `devices/bench-${d}/telemetry/bench`);
  const origins = Array.from({ length: DEVICES }, (_, d) => JSON.stringify({ source: 'mqtt', clientId: `bench-${d}`, qos: 0, retain: false }));
  const payload = Buffer.alloc(200, 'x');
  const originObjects = origins.map((o) => JSON.parse(o) as Origin);
  const envelopes = ids.map((id, i) => ({
    id,
    topic: topics[i % DEVICES] as string,
    payload,
    headers: NO_HEADERS,
    timestamp: Date.now(),
    origin: originObjects[i % DEVICES] as Origin,
  }));
  return { envelopes, ids, topics, origins, payload };
}

/** A database opened as the buffer opens its own (src/buffer/open.ts). */
function open(dir: string, name: string): Database.Database {
  const db = openSqlite(join(dir, `${name}.db`), { synchronous: 'normal', walAutocheckpointPages: BUFFER_CHECKPOINT_PAGES });
  db.pragma('auto_vacuum = INCREMENTAL');
  return db;
}

interface Store {
  /** Pages of the database file. */
  pages(): number;
  close(): void;
  /** Writes messages [from, from + COMMIT) in one transaction. */
  commit(from: number): void;
  /** The next messages after seq `after`, read as the reader would: how many, and the seq that ends them; undefined at the end. */
  next(after: number): { readonly count: number; readonly last: number } | undefined;
  /** Deletes what the reader is past: everything up to `last`. */
  release(last: number): void;
}

/** Reads every message back in seq order, deleting behind the reader; returns how many. */
function drain(store: Store): number {
  let read = 0;
  for (let next = store.next(0); next !== undefined; next = store.next(next.last)) {
    read += next.count;
    store.release(next.last);
  }
  return read;
}

function rowStore(dir: string, m: Messages): Store {
  const db = open(dir, 'rows');
  db.exec(ROWS_SCHEMA);
  const row = `('${BRIDGE}', ?, ?, NULL, '{}', ?, ?, ?)`;
  const insert = db.prepare(`INSERT INTO messages (bridge, id, topic, key, headers, origin, payload, created_at) VALUES ${new Array<string>(INSERT_ROWS).fill(row).join(', ')}`);
  const params = new Array<unknown>(INSERT_ROWS * 5);
  const commit = db.transaction((from: number) => {
    for (let i = from; i < from + COMMIT; i += INSERT_ROWS) {
      for (let j = 0; j < INSERT_ROWS; j++) {
        const k = j * 5;
        const device = (i + j) % DEVICES;
        params[k] = m.ids[i + j];
        params[k + 1] = m.topics[device];
        params[k + 2] = m.origins[device];
        params[k + 3] = m.payload;
        params[k + 4] = Date.now();
      }
      insert.run(params);
    }
  });
  const select = db.prepare('SELECT * FROM messages WHERE bridge = ? AND seq > ? ORDER BY seq LIMIT ?');
  const release = db.prepare('DELETE FROM messages WHERE bridge = ? AND seq <= ?');
  return {
    pages: () => db.pragma('page_count', { simple: true }) as number,
    close: () => db.close(),
    commit,
    next(after) {
      const rows = select.all(BRIDGE, after, COMMIT) as { seq: number }[];
      const last = rows.at(-1);
      return last === undefined ? undefined : { count: rows.length, last: last.seq };
    },
    release: (last) => release.run(BRIDGE, last),
  };
}

/** The buffer itself: its append, a sink's read of a window and its cursor's commit (which releases what it passed). */
function bufferStore(dir: string, m: Messages): Store {
  const store = new BufferStore(open(dir, 'buffer'));
  store.registerBridge(BRIDGE, ['out']);
  return {
    pages: () => store.pragma('page_count', { simple: true }) as number,
    close: () => store.close(),
    commit(from) {
      store.append(m.envelopes.slice(from, from + COMMIT).map((envelope) => ({ bridge: BRIDGE, envelope })));
    },
    next(after) {
      const read = store.read(BRIDGE, after, COMMIT);
      const last = read.at(-1);
      return last === undefined ? undefined : { count: read.length, last: last.seq };
    },
    release: (last) => store.commit(BRIDGE, 'out', last),
  };
}

function packedStore(dir: string, m: Messages, perRow: number): Store {
  const db = open(dir, `packed-${perRow}`);
  db.exec(`CREATE TABLE groups (first_seq INTEGER PRIMARY KEY, bridge TEXT NOT NULL, count INTEGER NOT NULL, bytes INTEGER NOT NULL, body BLOB NOT NULL);
    CREATE INDEX groups_bridge_seq ON groups (bridge, first_seq, count, bytes);`);
  const insert = db.prepare(`INSERT INTO groups (first_seq, bridge, count, bytes, body) VALUES (?, '${BRIDGE}', ?, ?, ?)`);
  const body = Buffer.allocUnsafe(perRow * 512);
  let seq = 1;
  const commit = db.transaction((from: number) => {
    for (let i = from; i < from + COMMIT; i += perRow) {
      let at = 0;
      let bytes = 0;
      for (let j = i; j < i + perRow; j++) {
        const device = j % DEVICES;
        at = writeText(body, at, m.ids[j] as string);
        at = writeText(body, at, m.topics[device] as string);
        at = writeText(body, at, m.origins[device] as string);
        at = body.writeUInt32LE(m.payload.length, at);
        at += m.payload.copy(body, at);
        at = body.writeDoubleLE(Date.now(), at);
        bytes += m.payload.length;
      }
      insert.run(seq, perRow, bytes, body.subarray(0, at));
      seq += perRow;
    }
  });
  const select = db.prepare('SELECT first_seq, count, body FROM groups WHERE bridge = ? AND first_seq > ? ORDER BY first_seq LIMIT 1');
  const release = db.prepare('DELETE FROM groups WHERE bridge = ? AND first_seq <= ?');
  return {
    pages: () => db.pragma('page_count', { simple: true }) as number,
    close: () => db.close(),
    commit,
    next(after) {
      const group = select.get(BRIDGE, after) as { first_seq: number; count: number; body: Buffer } | undefined;
      return group === undefined ? undefined : { count: decode(group.first_seq, group.count, group.body).length, last: group.first_seq };
    },
    release: (last) => release.run(BRIDGE, last),
  };
}

function writeText(body: Buffer, at: number, text: string): number {
  const length = body.write(text, at + 2);
  body.writeUInt16LE(length, at);
  return at + 2 + length;
}

function decode(firstSeq: number, count: number, body: Buffer): object[] {
  const out: object[] = [];
  let at = 0;
  const text = () => {
    const length = body.readUInt16LE(at);
    const value = body.toString('utf8', at + 2, at + 2 + length);
    at += 2 + length;
    return value;
  };
  for (let i = 0; i < count; i++) {
    const id = text();
    const topic = text();
    const origin = text();
    const length = body.readUInt32LE(at);
    const payload = body.subarray(at + 4, at + 4 + length);
    at += 4 + length;
    const createdAt = body.readDoubleLE(at);
    at += 8;
    out.push({ seq: firstSeq + i, id, topic, origin, payload, created_at: createdAt });
  }
  return out;
}

function timed(count: number, work: () => void): Cost {
  const cpu = process.cpuUsage();
  const started = performance.now();
  work();
  const used = process.cpuUsage(cpu);
  return { wallUs: ((performance.now() - started) * 1000) / count, cpuUs: (used.user + used.system) / count };
}

interface Round {
  readonly write: Cost;
  readonly readDelete: Cost;
  readonly pages: number;
}

function round(make: (dir: string) => Store, count: number): Round {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-bench-packing-'));
  const store = make(dir);
  try {
    const write = timed(count, () => {
      for (let from = 0; from < count; from += COMMIT) store.commit(from);
    });
    const pages = store.pages();
    let read = 0;
    const readDelete = timed(count, () => {
      read = drain(store);
    });
    if (read !== count) throw new Error(`read ${read} of ${count} messages back`);
    return { write, readDelete, pages };
  } finally {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const middle = (costs: readonly Cost[]): Cost => ({
  wallUs: Math.round(median(costs.map((c) => c.wallUs)) * 100) / 100,
  cpuUs: Math.round(median(costs.map((c) => c.cpuUs)) * 100) / 100,
});

export function benchPacking(requested = 307_200): PackingBenchResult {
  if (!Number.isInteger(requested) || requested < COMMIT) {
    throw new Error(`FERRY_BENCH_PACKING_MESSAGES must be a whole number of at least ${COMMIT}, not ${requested}`);
  }
  const count = Math.floor(requested / COMMIT) * COMMIT;
  const m = messages(count);
  const runs: Record<'rows' | 'buffer' | 'bare', Round[]> = { rows: [], buffer: [], bare: [] };
  for (let r = 0; r < ROUNDS; r++) {
    runs.rows.push(round((dir) => rowStore(dir, m), count));
    runs.buffer.push(round((dir) => bufferStore(dir, m), count));
    runs.bare.push(round((dir) => packedStore(dir, m, COMMIT), count));
  }
  const write = (runsOf: Round[]) => middle(runsOf.map((r) => r.write));
  const readDelete = (runsOf: Round[]) => middle(runsOf.map((r) => r.readDelete));
  return {
    messages: count,
    rounds: ROUNDS,
    write: { rows: write(runs.rows), buffer: write(runs.buffer), bare: write(runs.bare) },
    readDelete: { rows: readDelete(runs.rows), buffer: readDelete(runs.buffer), bare: readDelete(runs.bare) },
    pages: { rows: runs.rows[0]?.pages ?? 0, buffer: runs.buffer[0]?.pages ?? 0, bare: runs.bare[0]?.pages ?? 0 },
  };
}
