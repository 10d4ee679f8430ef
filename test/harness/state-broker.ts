// The embedded broker with its state in a broker.db of the test's choosing, started and
// stopped as often as a test needs (a restart is a stop and a start on the same file), and
// mqtt.js clients whose messages are recorded. Everything started is closed after the file's
// tests.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { type IClientOptions, type MqttClient, connect } from 'mqtt';
import pino from 'pino';
import { EmbeddedBroker, type EmbeddedBrokerOptions } from '../../src/mqtt/embedded-broker.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';

export interface StateBroker {
  readonly broker: EmbeddedBroker;
  readonly url: string;
  readonly counters: CounterRegistry;
  /** What the bridges' tap got, as "topic payload". */
  readonly tapped: string[];
  /** The broker's warnings and errors, as their messages. */
  readonly warnings: string[];
}

export interface StateClient {
  readonly client: MqttClient;
  readonly sessionPresent: boolean;
  /** Messages received, as "topic payload", from the moment of connecting (queued ones come with the CONNACK). */
  readonly seen: string[];
  /** The retain flag of each message in `seen`. */
  readonly retained: boolean[];
}

export interface StateBrokers {
  /**
   * A broker on a free loopback port with its state in `path` (synchronous FULL), or in memory
   * when `path` is null; a tap on '#' acking everything.
   */
  start(path: string | null, extra?: Partial<EmbeddedBrokerOptions>): Promise<StateBroker>;
  /** Closes the broker (a graceful stop: its state stays in the file). */
  stop(running: StateBroker): Promise<void>;
  /** An mqtt.js client that does not reconnect, resolved at its CONNACK. */
  connectClient(url: string, options: IClientOptions): Promise<StateClient>;
}

/** Brokers and clients for one test file; call it once at the top level (it registers an `after`). */
export function stateBrokers(): StateBrokers {
  const open: EmbeddedBroker[] = [];
  const clients: MqttClient[] = [];
  after(async () => {
    for (const c of clients) c.end(true);
    await Promise.all(open.map((b) => b.close().catch(() => {})));
  });
  return {
    async start(path, extra = {}) {
      const counters = new CounterRegistry();
      const tapped: string[] = [];
      const warnings: string[] = [];
      const logger = pino({ level: 'warn' }, { write: (line: string) => void warnings.push((JSON.parse(line) as { msg: string }).msg) });
      const broker = await EmbeddedBroker.start({
        host: '127.0.0.1',
        port: 0,
        logger,
        counters,
        ...(path === null ? {} : { state: { path, synchronous: 'full' as const } }),
        beforeListen: (b) =>
          b.tap('test', ['#']).subscribe((d) => {
            tapped.push(`${d.envelope.topic} ${d.envelope.payload.toString()}`);
            d.ack();
          }),
        ...extra,
      });
      open.push(broker);
      return { broker, url: `mqtt://127.0.0.1:${broker.port}`, counters, tapped, warnings };
    },
    async stop(running) {
      await running.broker.close();
      open.splice(open.indexOf(running.broker), 1);
    },
    async connectClient(url, options) {
      const client = connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...options });
      clients.push(client);
      const seen: string[] = [];
      const retained: boolean[] = [];
      client.on('message', (topic, payload, packet) => {
        seen.push(`${topic} ${payload.toString()}`);
        retained.push(packet.retain);
      });
      const connack = await new Promise<{ sessionPresent: boolean }>((resolve, reject) => {
        client.once('connect', resolve);
        client.once('error', reject);
        client.once('close', () => reject(new Error('closed before CONNACK')));
      });
      return { client, sessionPresent: connack.sessionPresent, seen, retained };
    },
  };
}

export async function until(check: () => boolean, what: string, ms = 5000): Promise<void> {
  for (const end = Date.now() + ms; !check(); ) {
    if (Date.now() > end) assert.fail(`${what}: not within ${ms} ms`);
    await sleep(20);
  }
}

/** What a second connection sees in broker.db: only what was committed. */
export function committed(path: string, sql: string, ...params: unknown[]): unknown[] {
  const db = new Database(path, { readonly: true });
  try {
    return db.prepare(sql).all(...params);
  } finally {
    db.close();
  }
}

/**
 * broker.db as a kill -9 of the running broker would leave it: its committed state, copied by
 * SQLite's backup into `dir`. Returns the copy's path.
 */
export async function crashCopy(path: string, dir: string): Promise<string> {
  const copy = join(dir, 'broker.db');
  const db = new Database(path, { readonly: true });
  try {
    await db.backup(copy);
  } finally {
    db.close();
  }
  return copy;
}
