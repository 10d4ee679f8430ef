// The embedded broker's state on SQLite (mqtt.persistence: sqlite, synchronous=FULL) against
// the same broker with it in memory, alternating: QoS 1 ingest through `ferry run` (history
// bridge), then in one process QoS 1 publishes queued for offline persistent sessions (committed
// before the publisher's PUBACK), a reconnecting session's queue sent to it (QoS 1, QoS 2), SUBSCRIBE and
// UNSUBSCRIBE churn of a persistent session (SUBACK after the commit), retained message churn
// (PUBACK after the commit), and startup with 10,000 saved sessions and 100,000 retained messages.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, connectAsync } from 'mqtt';
import pino from 'pino';
import { EmbeddedBroker } from '../src/mqtt/embedded-broker.ts';
import { openBrokerState } from '../src/mqtt/persistence/open.ts';
import { CounterRegistry } from '../src/observability/counters.ts';
import { ackedRate } from './ingest.ts';
import { startFerryTarget } from './targets.ts';
import { median } from './stats.ts';

const SESSIONS = 100;
const PUBLISHES = 1000;
const WINDOW = 20;
const QUEUED = 3000;
const SAVED_SESSIONS = 10_000;
const SAVED_RETAINED = 100_000;
const INGEST = 20_000;
const CHURN = 2_000;
const PAYLOAD = Buffer.alloc(100, 'x');

interface Compared {
  readonly sqlite: number;
  readonly memory: number;
  readonly ratio: number;
}

export interface BrokerStateBenchResult {
  /** QoS 1 ingest through `ferry run` with the history bridge, 50 devices, msgs/s. */
  readonly ingest: Compared;
  readonly fanOut: Compared;
  /** A reconnecting persistent session's queue of 3,000 QoS 1 messages sent to it (MQTT 3.1.1), msgs/s. */
  readonly drain: Compared;
  /** The same at QoS 2 (each message's packet id, then its PUBREL state, on disk before the packet leaves), msgs/s. */
  readonly drainQos2: Compared;
  /** SUBSCRIBE + UNSUBSCRIBE pairs of one persistent session, 20 in flight, pairs/s. */
  readonly subscribeChurn: Compared;
  /** QoS 1 retained publishes over 500 topics, 20 in flight, msgs/s. */
  readonly retainedChurn: Compared;
  readonly startup: { readonly savedSessions: number; readonly retained: number; readonly ms: number; readonly emptyMs: number };
}

type Mode = 'sqlite' | 'memory';

async function broker(mode: Mode, path: string): Promise<EmbeddedBroker> {
  return EmbeddedBroker.start({
    host: '127.0.0.1',
    port: 0,
    logger: pino({ level: 'silent' }),
    counters: new CounterRegistry(),
    ...(mode === 'sqlite' ? { state: { path, synchronous: 'full' as const } } : {}),
    beforeListen: (b) => b.tap('bench', ['#']).subscribe((d) => d.ack()),
  });
}

interface Round {
  fanOut: number;
  drain: number;
  drainQos2: number;
  subscribeChurn: number;
  retainedChurn: number;
}

/** Runs `make(i)` CHURN times with at most WINDOW pending; per second. */
async function windowed(make: (i: number) => Promise<unknown>): Promise<number> {
  const started = performance.now();
  const window: Promise<unknown>[] = [];
  for (let i = 0; i < CHURN; i++) {
    window.push(make(i));
    if (window.length >= WINDOW) await window.shift();
  }
  await Promise.all(window);
  return CHURN / ((performance.now() - started) / 1000);
}

/** Publishes/s of QoS 1 messages each queued for SESSIONS offline sessions, msgs/s of one session's queue sent on reconnect, subscribe and retained churn. */
async function round(mode: Mode, dir: string): Promise<Round> {
  const b = await broker(mode, join(dir, `${mode}-${Math.random().toString(36).slice(2)}.db`));
  const url = `mqtt://127.0.0.1:${b.port}`;
  try {
    for (let i = 0; i < SESSIONS; i++) {
      const c = await connectAsync(url, { clientId: `s${i}`, clean: false, reconnectPeriod: 0 });
      await c.subscribeAsync('cmd/#', { qos: 1 });
      await c.endAsync();
    }
    const pub = await connectAsync(url, { clientId: 'pub', reconnectPeriod: 0 });
    const started = performance.now();
    const window: Promise<unknown>[] = [];
    for (let i = 0; i < PUBLISHES; i++) {
      window.push(pub.publishAsync('cmd/x', PAYLOAD, { qos: 1 }));
      if (window.length >= WINDOW) await window.shift();
    }
    await Promise.all(window);
    const fanOut = PUBLISHES / ((performance.now() - started) / 1000);
    // Fill one more session's queue to QUEUED, then time its reconnect; at QoS 1, then QoS 2.
    const drained = async (qos: 1 | 2): Promise<number> => {
      const clientId = `drain-qos${qos}`;
      const one = await connectAsync(url, { clientId, clean: false, reconnectPeriod: 0 });
      await one.subscribeAsync(`q${qos}/#`, { qos });
      await one.endAsync();
      for (let i = 0; i < QUEUED; i++) {
        window.push(pub.publishAsync(`q${qos}/x`, PAYLOAD, { qos }));
        if (window.length >= WINDOW) await window.shift();
      }
      await Promise.all(window);
      const reconnected = performance.now();
      const back = connect(url, { clientId, clean: false, reconnectPeriod: 0 });
      let received = 0;
      await new Promise<void>((done) => back.on('message', () => (++received === QUEUED ? done() : undefined)));
      const rate = QUEUED / ((performance.now() - reconnected) / 1000);
      await back.endAsync();
      return rate;
    };
    const drain = await drained(1);
    const drainQos2 = await drained(2);
    await pub.endAsync();
    const churner = await connectAsync(url, { clientId: 'churn', clean: false, reconnectPeriod: 0 });
    const subscribeChurn = await windowed(async (i) => {
      await churner.subscribeAsync(`churn/${i}/#`, { qos: 1 });
      await churner.unsubscribeAsync(`churn/${i}/#`);
    });
    const retainedChurn = await windowed((i) => churner.publishAsync(`retained/${i % 500}`, PAYLOAD, { qos: 1, retain: true }));
    await churner.endAsync();
    return { fanOut, drain, drainQos2, subscribeChurn, retainedChurn };
  } finally {
    await b.close();
  }
}

async function startup(dir: string): Promise<{ ms: number; emptyMs: number }> {
  // Written with synchronous=NORMAL: only the reading at startup is measured.
  const path = join(dir, 'saved.db');
  const state = openBrokerState({ path, synchronous: 'normal' }, { logger: pino({ level: 'silent' }), counters: new CounterRegistry() });
  await state.setup({ id: 'earlier-run' });
  const writes: Promise<unknown>[] = [];
  for (let i = 0; i < SAVED_SESSIONS; i++) {
    const id = `dev-${i}`;
    writes.push(
      state.addSubscriptions({ id }, [
        { topic: `devices/${id}/commands/#`, qos: 1 },
        { topic: `devices/${id}/config/#`, qos: 1 },
      ]),
    );
    writes.push(
      state.outgoingEnqueue(
        { clientId: id },
        { cmd: 'publish', topic: `devices/${id}/commands/x`, payload: PAYLOAD, qos: 1, retain: false, dup: false, brokerId: 'earlier-run', brokerCounter: i + 1 },
      ),
    );
    state.owners.saveOwner(id, id);
  }
  await Promise.all(writes);
  for (let i = 0; i < SAVED_RETAINED; i += 5000) {
    const batch: Promise<unknown>[] = [];
    for (let j = i; j < i + 5000; j++) {
      batch.push(
        state.storeRetained({
          cmd: 'publish',
          topic: `devices/dev-${j % SAVED_SESSIONS}/state/${j}`,
          payload: PAYLOAD,
          qos: 0,
          retain: true,
          clientId: `dev-${j % SAVED_SESSIONS}`,
        }),
      );
    }
    await Promise.all(batch);
  }
  await state.destroy();
  const time = async (mode: Mode) => {
    const started = performance.now();
    const b = await broker(mode, path);
    const ms = performance.now() - started;
    await b.close();
    return ms;
  };
  const emptyMs = await time('memory');
  return { ms: await time('sqlite'), emptyMs };
}

const round2 = (x: number) => Math.round(x * 100) / 100;

export async function benchBrokerState(rounds = 3): Promise<BrokerStateBenchResult> {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-bench-state-'));
  try {
    const runs: Record<Mode, Round[]> = { sqlite: [], memory: [] };
    const ingest: Record<Mode, number[]> = { sqlite: [], memory: [] };
    for (let i = 0; i < rounds; i++) {
      for (const mode of ['memory', 'sqlite'] as const) {
        const gateway = await startFerryTarget({ persistence: mode });
        try {
          await ackedRate(gateway.url, 1, 2_000);
          ingest[mode].push(await ackedRate(gateway.url, 1, INGEST));
        } finally {
          await gateway.stop();
        }
        runs[mode].push(await round(mode, dir));
      }
    }
    const compare = (values: Record<Mode, number[]>): Compared => {
      const sqlite = Math.round(median(values.sqlite));
      const memory = Math.round(median(values.memory));
      return { sqlite, memory, ratio: round2(sqlite / memory) };
    };
    const of = (what: keyof Round) => compare({ sqlite: runs.sqlite.map((r) => r[what]), memory: runs.memory.map((r) => r[what]) });
    const started = await startup(dir);
    return {
      ingest: compare(ingest),
      fanOut: of('fanOut'),
      drain: of('drain'),
      drainQos2: of('drainQos2'),
      subscribeChurn: of('subscribeChurn'),
      retainedChurn: of('retainedChurn'),
      startup: { savedSessions: SAVED_SESSIONS, retained: SAVED_RETAINED, ms: Math.round(started.ms), emptyMs: Math.round(started.emptyMs) },
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
