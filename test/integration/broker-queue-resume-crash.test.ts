// A persistent session's queue being sent on reconnect when the gateway is killed (SIGKILL):
// `ferry run` (embedded broker, broker state in broker.db), three persistent sessions whose
// devices are away while a thousand QoS 2 messages are queued for them: MQTT 5 at QoS 2 (with a
// small Receive Maximum, so that copies also wait for a slot), MQTT 3.1.1 at QoS 2, MQTT 5 at
// QoS 1. The devices come back, and the gateway is killed while their queues are sent: right
// after the CONNACK, after some PUBLISHes, while PUBRECs wait for their PUBREL, as PUBRELs
// arrive. It is started again on the same data directory and port, the devices reconnect and
// take the rest, then leave while the next thousand are queued; ten rounds.
//
// The promise (docs/devices-and-security.md, "When it is on disk"): nothing queued is lost, a
// QoS 2 message is delivered once, a QoS 1 message at least once. A resumed queue is numbered
// ahead (up to 256 messages, their packet ids written in one commit) and each PUBLISH leaves only
// once its own id is committed: otherwise a message sent before a crash goes again under another
// id after it, and a device takes it twice. (Checked: with the PUBLISH let out before its id is
// committed, a QoS 2 message came again under another id.)
//
// Each device keeps its QoS 2 state (the PUBLISHes it answered with PUBREC) across its
// connections, as a device must for the promise to hold. Counted per message (its sequence
// number): what mqtt.js hands the application (a QoS 2 message at its PUBREL), and what a device
// handing a QoS 2 message over as its PUBLISH arrives would take (once per PUBLISH under a packet
// id it holds no message under).
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { type IClientOptions, type MqttClient, Store, connect, connectAsync } from 'mqtt';
import { CrashingGateway } from '../harness/crashing-gateway.ts';
import { eventually } from '../harness/eventually.ts';
import { freePorts } from '../harness/net.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-resume-crash-');
/** Messages queued for each device while it is away, before each kill. */
const PER_ROUND = 1_000;

/** Where the gateway is killed, counted on the MQTT 5 QoS 2 device's current connection. */
type KillPoint =
  | { readonly at: 'connack' }
  | { readonly at: 'publish'; readonly after: number }
  | { readonly at: 'pubrec'; readonly after: number }
  | { readonly at: 'pubrel'; readonly after: number };

const KILL_POINTS: readonly KillPoint[] = [
  { at: 'connack' },
  { at: 'publish', after: 300 },
  { at: 'pubrec', after: 120 },
  { at: 'pubrel', after: 60 },
  { at: 'connack' },
  { at: 'publish', after: 1 },
  { at: 'pubrec', after: 1 },
  { at: 'pubrel', after: 1 },
  { at: 'publish', after: 700 },
  { at: 'pubrec', after: 400 },
];
const ROUNDS = KILL_POINTS.length;

interface Device {
  readonly name: string;
  readonly qos: 1 | 2;
  readonly options: IClientOptions;
  /** How many times mqtt.js handed each message to the application (a QoS 2 one at its PUBREL), by sequence number. */
  readonly delivered: Map<number, number>;
  /**
   * QoS 2: how many times a device that hands a message over as its PUBLISH arrives would have
   * (once for each PUBLISH under a packet id it holds no message under), by sequence number.
   */
  readonly takenOnPublish: Map<number, number>;
  /** The packet ids of the QoS 2 PUBLISHes received and not yet released (PUBREL), across its connections. */
  readonly held: Set<number>;
  /** Its QoS 2 messages received and not yet released (PUBREL), kept across its connections. */
  readonly store: Store;
  client?: MqttClient;
}

function device(name: string, qos: 1 | 2, protocolVersion: 4 | 5, properties: IClientOptions['properties'] = {}): Device {
  return {
    name,
    qos,
    delivered: new Map(),
    takenOnPublish: new Map(),
    held: new Set(),
    store: new Store({ clean: false }),
    options: {
      clientId: name,
      clean: false,
      protocolVersion,
      connectTimeout: 2_000,
      resubscribe: false,
      ...(protocolVersion === 5 ? { properties: { sessionExpiryInterval: 3_600, ...properties } } : {}),
    },
  };
}

/** What happened on the watched device's connection since the gateway was last started. */
class Watch {
  toJSON() {
    return { c: this.#connected, p: this.#publishes, r: this.#pubrecs, l: this.#pubrels };
  }
  #connected = false;
  #publishes = 0;
  #pubrecs = 0;
  #pubrels = 0;
  #point: KillPoint | undefined;
  #reached: (() => void) | undefined;

  /** Resolves once `point` is reached on the device's connection to the running gateway. */
  until(point: KillPoint): Promise<void> {
    this.#point = point;
    return new Promise((resolve) => {
      this.#reached = resolve;
      this.#check('connack');
    });
  }

  /** The gateway was killed: what comes next is on the next connection. */
  reset(): void {
    this.#connected = false;
    this.#publishes = 0;
    this.#pubrecs = 0;
    this.#pubrels = 0;
  }

  connected(): void {
    this.reset();
    this.#connected = true;
    this.#check('connack');
  }

  sent(cmd: string): void {
    if (cmd !== 'pubrec') return;
    this.#pubrecs += 1;
    // A PUBREC on its way while others still wait for their PUBREL.
    if (this.#pubrecs > this.#pubrels + 1) this.#check('pubrec');
  }

  received(cmd: string): void {
    if (cmd === 'publish') this.#publishes += 1;
    else if (cmd === 'pubrel') this.#pubrels += 1;
    else return;
    this.#check(cmd);
  }

  #check(event: string): void {
    const point = this.#point;
    if (point === undefined || this.#reached === undefined || point.at !== event || !this.#connected) return;
    if (point.at !== 'connack' && this.#count(point.at) < point.after) return;
    const reached = this.#reached;
    this.#point = undefined;
    this.#reached = undefined;
    reached();
  }

  #count(at: 'publish' | 'pubrec' | 'pubrel'): number {
    return at === 'publish' ? this.#publishes : at === 'pubrec' ? this.#pubrecs : this.#pubrels;
  }
}

test(`${ROUNDS} resumed queues of ${PER_ROUND} QoS 2 messages for MQTT 5 and 3.1.1 QoS 2 and a QoS 1 session, the gateway killed while each is sent: every message arrives, each QoS 2 one once`, {
  timeout: 120_000,
}, async () => {
  const root = tempDir();
  mkdirSync(root, { recursive: true });
  writeFileSync(
    join(root, 'gateway.yaml'),
    'gateway: {name: resume-crash}\nmqtt: {host: 127.0.0.1, allowAnonymous: loopback, limits: {queuedPerSession: 100000, queuedBytesPerSession: 100000000}}\nbridges: []\ndevices: []\n',
  );
  const [port] = (await freePorts(1)) as [number];
  const url = `mqtt://127.0.0.1:${port}`;
  const gateway = await CrashingGateway.start(['--config', join(root, 'gateway.yaml'), '--data-dir', join(root, 'data'), '--mqtt-port', String(port)], {});
  const devices = [device('v5-qos2', 2, 5, { receiveMaximum: 20 }), device('v311-qos2', 2, 4), device('v5-qos1', 1, 5)];
  const [watched] = devices as [Device];
  const watch = new Watch();
  const clients: MqttClient[] = [];
  const sessionsLost: string[] = [];
  const kills: string[] = [];
  const report = () => `kills: ${kills.join(', ')}; ${devices.map((d) => `${d.name}: ${summary(d, kills.length * PER_ROUND)}`).join('; ')}`;

  /** The device connects, and reconnects by itself until it is told to leave. */
  const comeBack = (d: Device) => {
    const client = connect(url, { ...d.options, incomingStore: d.store, reconnectPeriod: 50 });
    clients.push(client);
    d.client = client;
    client.on('error', () => {});
    client.on('connect', (connack) => {
      if (!connack.sessionPresent) sessionsLost.push(d.name);
    });
    client.on('message', (_topic, payload) => {
      const seq = Number(payload.toString());
      d.delivered.set(seq, (d.delivered.get(seq) ?? 0) + 1);
    });
    client.on('packetreceive', (packet) => {
      if (packet.cmd === 'pubrel') d.held.delete(packet.messageId as number);
      if (packet.cmd !== 'publish' || packet.qos !== 2 || d.held.has(packet.messageId as number)) return;
      d.held.add(packet.messageId as number);
      const seq = Number(packet.payload.toString());
      d.takenOnPublish.set(seq, (d.takenOnPublish.get(seq) ?? 0) + 1);
    });
    if (d === watched) {
      client.on('connect', () => watch.connected());
      client.on('packetsend', (packet) => watch.sent(packet.cmd));
      client.on('packetreceive', (packet) => watch.received(packet.cmd));
    }
  };

  try {
    // Each device's session subscribed, its device away.
    for (const d of devices) {
      const first = await connectAsync(url, { ...d.options, reconnectPeriod: 0 });
      clients.push(first);
      await first.subscribeAsync('queued/#', { qos: d.qos });
      await first.endAsync();
    }
    let seq = 0;
    for (const point of KILL_POINTS) {
      // The queue fills while the devices are away.
      const publisher = await connectAsync(url, { clientId: 'publisher', reconnectPeriod: 0 });
      clients.push(publisher);
      const window: Promise<unknown>[] = [];
      for (const end = seq + PER_ROUND; seq < end; seq++) {
        window.push(publisher.publishAsync('queued/x', String(seq), { qos: 2 }));
        if (window.length >= 100) await window.shift();
      }
      await Promise.all(window);
      await publisher.endAsync();

      // They come back, and the gateway is killed while their queues are sent.
      watch.reset();
      const reached = watch.until(point);
      for (const d of devices) comeBack(d);
      await reached;
      await gateway.kill();
      watch.reset();
      kills.push(`${point.at}${'after' in point ? ` ${point.after}` : ''} (${received(watched)} delivered)`);
      await gateway.restart();

      // They reconnect to the restarted gateway and take the rest; then they leave again, with
      // nothing in flight (their last PUBCOMP sent: the DISCONNECT follows it).
      const total = seq;
      await eventually(
        () => {
          for (const d of devices) assert.equal(received(d), total, `not all arrived: ${report()}`);
        },
        { timeoutMs: 30_000, intervalMs: 50 },
      );
      for (const d of devices) await d.client?.endAsync();
    }

    assert.deepEqual(sessionsLost, [], 'devices told their session was not present');
    for (const d of devices.filter((d) => d.qos === 2)) {
      assert.equal(ranges(moreThanOnce(d.delivered)), '', `${d.name}: QoS 2 messages delivered more than once: ${report()}`);
      assert.equal(ranges(moreThanOnce(d.takenOnPublish)), '', `${d.name}: QoS 2 messages sent again under another packet id: ${report()}`);
    }
  } finally {
    for (const client of clients) client.end(true);
    gateway.forceKill();
  }
});

/** How many different messages the device's application was handed. */
function received(d: Device): number {
  return d.delivered.size;
}

function summary(d: Device, sent: number): string {
  const missing: number[] = [];
  for (let seq = 0; seq < sent; seq++) if (!d.delivered.has(seq)) missing.push(seq);
  const again = d.qos === 2 ? `, sent again under another packet id ${ranges(moreThanOnce(d.takenOnPublish)) || 'none'}` : '';
  return `${d.delivered.size} delivered, missing ${ranges(missing) || 'none'}, more than once ${ranges(moreThanOnce(d.delivered)) || 'none'}${again}`;
}

function moreThanOnce(counts: ReadonlyMap<number, number>): number[] {
  return [...counts].filter(([, n]) => n > 1).map(([seq]) => seq);
}

/** `3-7 12 20-21`: sequence numbers as ranges. */
function ranges(seqs: readonly number[]): string {
  const sorted = [...seqs].sort((a, b) => a - b);
  const out: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === (sorted[j] as number) + 1) j++;
    out.push(i === j ? String(sorted[i]) : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return out.join(' ');
}
