// The embedded broker's state on SQLite (mqtt.persistence: sqlite, synchronous=FULL) against
// the same broker with it in memory, in one process, alternating: QoS 1 publishes queued for
// offline persistent sessions (each a row per session, committed before the publisher's
// PUBACK), a reconnecting session's queue sent to it, and startup with 10,000 saved sessions.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, connectAsync } from 'mqtt';
import pino from 'pino';
import { EmbeddedBroker } from '../src/mqtt/embedded-broker.ts';
import { openBrokerState } from '../src/mqtt/persistence/open.ts';
import { CounterRegistry } from '../src/observability/counters.ts';

const SESSIONS = 100;
const PUBLISHES = 1000;
const WINDOW = 20;
const QUEUED = 3000;
const SAVED_SESSIONS = 10_000;
const PAYLOAD = Buffer.alloc(100, 'x');

export interface BrokerStateBenchResult {
  readonly fanOut: { readonly sqlite: number; readonly memory: number; readonly ratio: number };
  readonly drain: { readonly sqlite: number; readonly memory: number; readonly ratio: number };
  readonly startup: { readonly savedSessions: number; readonly ms: number; readonly emptyMs: number };
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

/** Publishes/s of QoS 1 messages each queued for SESSIONS offline sessions, and msgs/s of one session's queue sent on reconnect. */
async function round(mode: Mode, dir: string): Promise<{ fanOut: number; drain: number }> {
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
    // Fill one more session's queue to QUEUED, then time its reconnect.
    const one = await connectAsync(url, { clientId: 'drain', clean: false, reconnectPeriod: 0 });
    await one.subscribeAsync('q/#', { qos: 1 });
    await one.endAsync();
    for (let i = 0; i < QUEUED; i++) {
      window.push(pub.publishAsync('q/x', PAYLOAD, { qos: 1 }));
      if (window.length >= WINDOW) await window.shift();
    }
    await Promise.all(window);
    await pub.endAsync();
    const reconnected = performance.now();
    const back = connect(url, { clientId: 'drain', clean: false, reconnectPeriod: 0 });
    let received = 0;
    await new Promise<void>((done) => back.on('message', () => (++received === QUEUED ? done() : undefined)));
    const drain = QUEUED / ((performance.now() - reconnected) / 1000);
    await back.endAsync();
    return { fanOut, drain };
  } finally {
    await b.close();
  }
}

async function startup(dir: string): Promise<{ ms: number; emptyMs: number }> {
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

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
const round2 = (x: number) => Math.round(x * 100) / 100;

export async function benchBrokerState(rounds = 3): Promise<BrokerStateBenchResult> {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-bench-state-'));
  try {
    const runs: Record<Mode, { fanOut: number; drain: number }[]> = { sqlite: [], memory: [] };
    for (let i = 0; i < rounds; i++) for (const mode of ['memory', 'sqlite'] as const) runs[mode].push(await round(mode, dir));
    const pick = (mode: Mode, what: 'fanOut' | 'drain') => Math.round(median(runs[mode].map((r) => r[what])));
    const fanOut = { sqlite: pick('sqlite', 'fanOut'), memory: pick('memory', 'fanOut') };
    const drain = { sqlite: pick('sqlite', 'drain'), memory: pick('memory', 'drain') };
    const started = await startup(dir);
    return {
      fanOut: { ...fanOut, ratio: round2(fanOut.sqlite / fanOut.memory) },
      drain: { ...drain, ratio: round2(drain.sqlite / drain.memory) },
      startup: { savedSessions: SAVED_SESSIONS, ms: Math.round(started.ms), emptyMs: Math.round(started.emptyMs) },
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
