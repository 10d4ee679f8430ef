// Issue 17: the crash test with persistent-session subscribers. Devices publish QoS 1 into
// `ferry run` (embedded broker, broker state on SQLite) while two subscribers with persistent
// sessions take every message: one stays connected whenever the gateway is up, the other comes
// and goes, so its messages wait in its session. The gateway is killed with SIGKILL again and
// again and started on the same data directory and port. Every message the broker acknowledged
// to its publisher must reach both subscribers (at least once: QoS 1 allows a second copy).
// The sessions' queue limit is raised: the visitor's queue holds most of the run.
//
// Before aedes' QoS 1 PUBACK waited for the message to be queued (patches/aedes...patch,
// handlers/publish.js), the steady subscriber lost the publishers' last window before each
// kill: the PUBACK had left before the copies for the sessions were committed.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { type MqttClient, connect } from 'mqtt';
import { startFleet } from '../harness/devices.ts';
import { eventually } from '../harness/eventually.ts';
import { type RunningFerry, startFerry } from '../harness/ferry-process.ts';
import { freePorts } from '../harness/net.ts';
import { randomName } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-issue17-crash-');
const DEVICES = 6;
const TOTAL = 6_000;
const KILLS = 8;

interface Subscriber {
  readonly clientId: string;
  readonly seen: Set<string>;
  client: MqttClient | undefined;
}

/** Every client the test made, ended when it ends (a reconnecting client keeps the process alive). */
const clients: MqttClient[] = [];

/** A persistent session subscribed once to every device's telemetry; mqtt.js reconnects it. */
function subscriber(url: string, clientId: string, seen = new Set<string>()): Subscriber {
  const s: Subscriber = { clientId, seen, client: undefined };
  const client = connect(url, { clientId, clean: false, reconnectPeriod: 100, connectTimeout: 2000, resubscribe: false });
  clients.push(client);
  client.on('message', (_topic, payload) => {
    const { device, seq } = JSON.parse(payload.toString()) as { device: string; seq: number };
    s.seen.add(`${device}/${seq}`);
  });
  client.on('connect', (connack) => {
    if (!connack.sessionPresent) client.subscribe('devices/+/telemetry/#', { qos: 1 });
  });
  client.on('error', () => {});
  s.client = client;
  return s;
}

test(`QoS 1 messages acknowledged to their publishers reach two persistent-session subscribers, one of them mostly offline, across ${KILLS} SIGKILLs of the gateway`, {
  timeout: 300_000,
}, async () => {
  const root = tempDir();
  mkdirSync(root, { recursive: true });
  writeFileSync(
    join(root, 'gateway.yaml'),
    'gateway: {name: crash}\nmqtt: {host: 127.0.0.1, allowAnonymous: loopback, limits: {queuedPerSession: 100000, queuedBytesPerSession: 100000000}}\nbridges: []\ndevices: []\n',
  );
  const [port] = (await freePorts(1)) as [number];
  const url = `mqtt://127.0.0.1:${port}`;
  const args = ['--config', join(root, 'gateway.yaml'), '--data-dir', join(root, 'data'), '--mqtt-port', String(port)];
  let gateway: RunningFerry = await startFerry(args);

  const steady = subscriber(url, randomName('steady-'));
  await eventually(() => assert.ok(steady.client?.connected));
  // The visitor's first connection makes its session and subscription; afterwards it comes for a moment and leaves.
  const visitorId = randomName('visitor-');
  const visitor = subscriber(url, visitorId);
  await eventually(() => assert.ok(visitor.client?.connected));
  await sleep(200);
  let running = true;
  const visiting = (async () => {
    while (running) {
      // Leaves with a DISCONNECT when connected; a client waiting for the gateway to come back just stops.
      const leaving = visitor.client;
      if (leaving?.connected) await new Promise<void>((resolve) => leaving.end(false, {}, () => resolve()));
      else leaving?.end(true);
      await sleep(600);
      if (!running) break;
      visitor.client = subscriber(url, visitorId, visitor.seen).client;
      await sleep(300);
    }
  })();

  const fleet = startFleet({ url, devices: DEVICES, total: TOTAL, window: 10, clientIdPrefix: randomName('pub-'), reconnectPeriodMs: 100 });
  let kills = 0;
  try {
    while (kills < KILLS) {
      await sleep(400 + Math.floor(Math.random() * 900));
      gateway.child.kill('SIGKILL');
      await gateway.exited;
      kills += 1;
      gateway = await startFerry(args);
    }
    await fleet.done;
    running = false;
    await visiting;
    const acknowledged = fleet.devices.flatMap((d) => [...d.acked].map((seq) => `${d.clientId}/${seq}`));
    assert.equal(acknowledged.length, TOTAL);
    // The visitor comes back once more and stays: its session holds what it missed.
    visitor.client = subscriber(url, visitorId, visitor.seen).client;
    const missing = (s: Subscriber) => acknowledged.filter((id) => !s.seen.has(id));
    await eventually(
      () => {
        const lost = { steady: missing(steady), visitor: missing(visitor) };
        assert.deepEqual(
          { steady: lost.steady.length, visitor: lost.visitor.length },
          { steady: 0, visitor: 0 },
          `after ${kills} kills, missing (device:seqs): steady ${ranges(lost.steady)}; visitor ${ranges(lost.visitor)}`,
        );
      },
      { timeoutMs: 60_000 },
    );
  } finally {
    running = false;
    await fleet.close();
    for (const client of clients) client.end(true);
    gateway.child.kill('SIGKILL');
    await gateway.exited;
  }
});

/** `003:370-389 004:12-12`: missing seqs by device (the last three characters of its id). */
function ranges(ids: readonly string[]): string {
  const out: string[] = [];
  let prev: [string, number, number] | undefined;
  for (const id of ids) {
    const [dev, seqText] = id.split('/') as [string, string];
    const seq = Number(seqText);
    if (prev && prev[0] === dev && prev[2] === seq - 1) prev[2] = seq;
    else {
      if (prev) out.push(`${prev[0].slice(-3)}:${prev[1]}-${prev[2]}`);
      prev = [dev, seq, seq];
    }
  }
  if (prev) out.push(`${prev[0].slice(-3)}:${prev[1]}-${prev[2]}`);
  return out.join(' ');
}
