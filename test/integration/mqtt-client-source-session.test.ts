// The mqttClient source across reconnects against a real Mosquitto: what it subscribes to, when
// it reports a lost session, and what becomes of the messages its writer held when their
// connection closed.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import { type Server, type Socket, connect, createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, test } from 'node:test';
import { connectAsync } from 'mqtt';
import pino from 'pino';
import type { Delivery } from '../../src/core/delivery.ts';
import { mqttClientSource } from '../../src/mqtt/client-source.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { eventually } from '../harness/eventually.ts';
import { type PrivateMosquitto, startPrivateMosquitto } from '../harness/private-mosquitto.ts';
import { randomName } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-mqtt-client-session-');
/** Mosquitto's dynamic security plugin (Debian and Ubuntu's `mosquitto` package). */
const DYNSEC_PLUGIN = '/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so';
let mosquitto: PrivateMosquitto;
before(async () => {
  mosquitto = await startPrivateMosquitto(tempDir());
});
after(() => mosquitto.stop('SIGKILL'));

interface Proxy {
  readonly port: number;
  /** Connections made through it so far. */
  readonly connections: number;
  /** Cuts every open connection (the broker and the client each see theirs close). */
  cut(): void;
  close(): void;
}

/** A TCP proxy to `port`; with `dropFirstSubscribe`, the first connection is cut when its client sends a SUBSCRIBE, before the broker got it. */
async function proxy(port: number, dropFirstSubscribe = false): Promise<Proxy> {
  let connections = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const n = ++connections;
    const upstream = connect(port, '127.0.0.1');
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('error', () => {});
      socket.on('close', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    upstream.pipe(client);
    client.on('data', (chunk: Buffer) => {
      // 0x82: SUBSCRIBE. The client sends it in a write of its own after the CONNACK.
      if (dropFirstSubscribe && n === 1 && chunk[0] === 0x82) client.destroy();
      else upstream.write(chunk);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const cut = () => {
    for (const socket of sockets) socket.destroy();
    sockets.clear();
  };
  return {
    port: (server.address() as { port: number }).port,
    get connections() {
      return connections;
    },
    cut,
    close: () => {
      cut();
      server.close();
    },
  };
}

interface Run {
  readonly counters: CounterRegistry;
  readonly received: Delivery[];
  readonly logs: { level: number; msg: string }[];
  stop(): void;
}

function run(overrides: Record<string, unknown>, onDelivery: (d: Delivery) => void = (d) => d.ack()): Run {
  const config = mqttClientSource.schema.parse({
    clientId: randomName('ferry-src-'),
    qos: 1,
    reconnectMinMs: 50,
    reconnectMaxMs: 200,
    lossWatch: { brokerTopics: false },
    ...overrides,
  });
  const counters = new CounterRegistry();
  const logs: { level: number; msg: string }[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => logs.push(JSON.parse(line)) });
  const received: Delivery[] = [];
  const subscription = mqttClientSource.create(config, { logger, counters, dataDir: tempDir(), bridge: 'test' }).subscribe((d) => {
    received.push(d);
    onDelivery(d);
  });
  return { counters, received, logs, stop: () => subscription.unsubscribe() };
}

const text = (d: Delivery) => Buffer.from(d.envelope.payload).toString();
const connected = (r: Run) => r.counters.get('mqtt.client.connected{bridge=test}');

for (const protocolVersion of [4, 5] as const) {
  test(`MQTT ${protocolVersion === 4 ? '3.1.1' : '5'}: a SUBSCRIBE lost with the first connection is sent again on the next, whose session is present`, async () => {
    const cutting = await proxy(mosquitto.port, true);
    const topic = randomName('ext/session/');
    const source = run({ url: `mqtt://127.0.0.1:${cutting.port}`, topics: [topic], protocolVersion });
    const publisher = await connectAsync(mosquitto.url, { clientId: randomName('pub-'), reconnectPeriod: 0 });
    try {
      // The first connection made the persistent session, so the second finds it present.
      await eventually(() => assert.ok(connected(source) >= 2, 'reconnected'));
      await eventually(() => assert.ok(mosquitto.log().includes(topic), 'the source subscribed'));
      await publisher.publishAsync(topic, 'after the cut', { qos: 1 });
      await eventually(() => assert.deepEqual(source.received.map(text), ['after the cut']));
    } finally {
      source.stop();
      await publisher.endAsync(true);
      cutting.close();
    }
  });
}

test('a filter the broker refuses is counted and logged with its reason code, and the others are received', async () => {
  const root = tempDir();
  const allowed = randomName('ext/acl/');
  mkdirSync(join(root, 'broker'));
  // Mosquitto's acl_file grants every subscription and filters deliveries; its dynamic security plugin refuses the SUBSCRIBE.
  const dynsec = join(root, 'broker', 'dynsec.json');
  writeFileSync(
    dynsec,
    JSON.stringify({
      defaultACLAccess: { publishClientSend: true, publishClientReceive: true, subscribe: false, unsubscribe: true },
      clients: [],
      groups: [{ groupname: 'anonymous', roles: [{ rolename: 'reader' }], clients: [] }],
      roles: [{ rolename: 'reader', acls: [{ acltype: 'subscribePattern', topic: allowed, allow: true }] }],
      anonymousGroup: 'anonymous',
    }),
  );
  const guarded = await startPrivateMosquitto(join(root, 'broker'), `plugin ${DYNSEC_PLUGIN}\nplugin_opt_config_file ${dynsec}`);
  const source = run({ url: guarded.url, topics: [allowed, `${allowed}-denied/#`], protocolVersion: 5 });
  const publisher = await connectAsync(guarded.url, { clientId: randomName('pub-'), reconnectPeriod: 0 });
  try {
    await eventually(() => assert.equal(source.counters.get('mqtt.client.subscribe_refused{bridge=test}'), 1));
    const refusal = source.logs.find((l) => l.msg.includes('refused the subscription'));
    assert.match(String(refusal?.msg), new RegExp(`'${allowed}-denied/#' with 0x87 \\(not authorized\\)`));
    await publisher.publishAsync(allowed, 'allowed', { qos: 1 });
    await eventually(() => assert.deepEqual(source.received.map(text), ['allowed']));
  } finally {
    source.stop();
    await publisher.endAsync(true);
    await guarded.stop('SIGKILL');
  }
});

test('MQTT 5 with sessionExpiryIntervalSec 0: a reconnect is no lost session (the session ends with each connection) and subscribes again', async () => {
  const cutting = await proxy(mosquitto.port);
  const topic = randomName('ext/expiry0/');
  const source = run({ url: `mqtt://127.0.0.1:${cutting.port}`, topics: [topic], protocolVersion: 5, sessionExpiryIntervalSec: 0 });
  const publisher = await connectAsync(mosquitto.url, { clientId: randomName('pub-'), reconnectPeriod: 0 });
  try {
    await eventually(() => assert.equal(connected(source), 1));
    cutting.cut();
    await eventually(() => assert.equal(connected(source), 2));
    await eventually(async () => {
      await publisher.publishAsync(topic, 'after the reconnect', { qos: 1 });
      assert.ok(source.received.length > 0, 'subscribed again');
    });
    assert.equal(source.counters.get('mqtt.client.session_lost{bridge=test}'), 0);
  } finally {
    source.stop();
    await publisher.endAsync(true);
    cutting.close();
  }
});

test('held messages whose connection closed are abandoned; the copies the broker sends again are not', async () => {
  const cutting = await proxy(mosquitto.port);
  const topic = randomName('ext/held/');
  // Nothing is settled: the writer holds them, as it does with a full buffer under `refuse`.
  const source = run({ url: `mqtt://127.0.0.1:${cutting.port}`, topics: [topic], protocolVersion: 5 }, () => {});
  const publisher = await connectAsync(mosquitto.url, { clientId: randomName('pub-'), reconnectPeriod: 0 });
  try {
    await eventually(() => assert.ok(mosquitto.log().includes(topic), 'the source subscribed'));
    for (const payload of ['a', 'b', 'c']) await publisher.publishAsync(topic, payload, { qos: 1 });
    await eventually(() => assert.equal(source.received.length, 3));
    assert.deepEqual(
      source.received.map((d) => d.abandoned?.()),
      [false, false, false],
    );
    cutting.cut();
    await eventually(() => assert.equal(source.received.length, 6, 'the broker delivered them again'));
    const [held, again] = [source.received.slice(0, 3), source.received.slice(3)];
    assert.deepEqual(
      held.map((d) => d.abandoned?.()),
      [true, true, true],
    );
    assert.deepEqual(again.map(text), ['a', 'b', 'c']);
    assert.deepEqual(
      again.map((d) => d.abandoned?.()),
      [false, false, false],
    );
    for (const d of held) d.nack(new Error('abandoned'));
    for (const d of again) d.ack();
    await sleep(200);
    assert.equal(source.counters.get('mqtt.client.not_stored{bridge=test}'), 0, 'an abandoned message is no failure of the buffer');
    assert.equal(cutting.connections, 2, 'the nacks of abandoned messages did not drop the new connection');
  } finally {
    source.stop();
    await publisher.endAsync(true);
    cutting.close();
  }
});

test('MQTT 5: with its window of maxInFlight full, the source keeps reading its PINGRESPs and stays connected', async () => {
  const topic = randomName('ext/window/');
  const source = run({ url: mosquitto.url, topics: [topic], protocolVersion: 5, maxInFlight: 2, keepaliveSec: 1 }, () => {});
  const publisher = await connectAsync(mosquitto.url, { clientId: randomName('pub-'), reconnectPeriod: 0 });
  try {
    await eventually(() => assert.ok(mosquitto.log().includes(topic), 'the source subscribed'));
    for (const payload of ['a', 'b', 'c']) await publisher.publishAsync(topic, payload, { qos: 1 });
    await eventually(() => assert.equal(source.received.length, 2));
    // mqtt.js ends a connection whose PINGRESP did not come within 1.5 keepalives.
    await sleep(2_500);
    assert.equal(source.counters.get('mqtt.client.disconnected{bridge=test}'), 0);
    assert.equal(source.received.length, 2, 'the broker kept to Receive Maximum');
    for (const d of source.received) d.ack();
    await eventually(() => assert.deepEqual(source.received.map(text), ['a', 'b', 'c']));
  } finally {
    source.stop();
    await publisher.endAsync(true);
  }
});
