// While the mqttClient source has stopped reading its socket (the window of unstored QoS 1
// messages full under MQTT 3.1.1, or a QoS 2 message waiting for its commit), the connection
// stays up: it used to miss the broker's PINGRESPs and reconnect every 1.5 keepalives, and the
// broker delivered what Ferry held again each time.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { type Socket, connect, createServer } from 'node:net';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { connectAsync } from 'mqtt';
import pino from 'pino';
import type { Delivery } from '../../src/core/delivery.ts';
import { mqttClientSource } from '../../src/mqtt/client-source.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { eventually } from '../harness/eventually.ts';
import { type PrivateMosquitto, startPrivateMosquitto } from '../harness/private-mosquitto.ts';
import { randomName } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-mqtt-client-paused-');

interface Held {
  readonly mosquitto: PrivateMosquitto;
  readonly clientId: string;
  readonly counters: CounterRegistry;
  /** Every delivery the source emitted, in order; none acked until the test does. */
  readonly deliveries: Delivery[];
  stop(): Promise<void>;
}

/**
 * A source with a 1 s keepalive on a private Mosquitto, fed `messages` messages and acking none of
 * them: its window (maxInFlight 5) fills under QoS 1, and the first message blocks the read under
 * QoS 2.
 */
async function holdingSource(protocolVersion: 4 | 5, qos: 1 | 2, messages: number, via?: (mosquitto: PrivateMosquitto) => Promise<string>): Promise<Held> {
  const mosquitto = await startPrivateMosquitto(tempDir());
  const url = via === undefined ? mosquitto.url : await via(mosquitto);
  const counters = new CounterRegistry();
  const topic = randomName('ext/paused/');
  const clientId = randomName('ferry-src-');
  const config = mqttClientSource.schema.parse({
    url,
    clientId,
    topics: [topic],
    qos,
    protocolVersion,
    maxInFlight: 5,
    keepaliveSec: 1,
    reconnectMinMs: 50,
    reconnectMaxMs: 100,
  });
  const deliveries: Delivery[] = [];
  const subscription = mqttClientSource.create(config, { logger: pino({ level: 'silent' }), counters, dataDir: tempDir(), bridge: 'test' }).subscribe((d) => deliveries.push(d));
  await eventually(() => assert.match(mosquitto.log(), new RegExp(`Received SUBSCRIBE from ${clientId}`)));
  const publisher = await connectAsync(mosquitto.url, { clientId: randomName('pub-'), reconnectPeriod: 0 });
  for (let i = 0; i < messages; i++) await publisher.publishAsync(topic, `m${i}`, { qos });
  await publisher.endAsync();
  return {
    mosquitto,
    clientId,
    counters,
    deliveries,
    stop: async () => {
      subscription.unsubscribe();
      await mosquitto.stop('SIGKILL');
    },
  };
}

const payloads = (deliveries: readonly Delivery[]) => deliveries.map((d) => Buffer.from(d.envelope.payload).toString());

// QoS 2 with no more messages than Receive Maximum: past it, Mosquitto 2.0 sends more QoS 2
// messages than the Receive Maximum allows once a backlog drains, which mqtt.js takes for a
// protocol error and disconnects for.
for (const [protocolVersion, qos, messages, pausedBy] of [
  [4, 1, 30, 'a full window under MQTT 3.1.1'],
  [5, 2, 5, 'a QoS 2 message waiting for its commit'],
] as const) {
  test(`${pausedBy}: the connection stays up for many keepalives, and every message arrives once when the buffer takes them`, { timeout: 60_000 }, async () => {
    const held = await holdingSource(protocolVersion, qos, messages);
    try {
      const window = qos === 1 ? 5 : 1;
      await eventually(() => assert.equal(held.deliveries.length, window));
      // Five keepalives: mqtt.js would have ended the connection after 1.5.
      await sleep(5_000);
      assert.equal(held.counters.get('mqtt.client.disconnected{bridge=test}'), 0, 'the source reconnected while paused');
      assert.deepEqual(payloads(held.deliveries), payloads(held.deliveries.slice(0, window)));
      // The broker kept hearing from the client while it was paused.
      const pings = held.mosquitto
        .log()
        .split('\n')
        .filter((line) => line.includes(`Received PINGREQ from ${held.clientId}`)).length;
      assert.ok(pings >= 3, `${pings} PINGREQs while paused`);
      // The buffer catches up: everything arrives, once, in order, on the same connection.
      for (let acked = 0; acked < messages; ) {
        await eventually(() => assert.ok(held.deliveries.length > acked));
        // An ack can make the source read on at once (the next message waits in mqtt.js'
        // Writable), so a delivery may arrive inside this loop: it is acked on the next pass.
        const batch = held.deliveries.slice(acked);
        acked += batch.length;
        for (const delivery of batch) delivery.ack();
      }
      assert.deepEqual(
        payloads(held.deliveries),
        Array.from({ length: messages }, (_, i) => `m${i}`),
      );
      assert.equal(held.counters.get('mqtt.client.connected{bridge=test}'), 1);
    } finally {
      await held.stop();
    }
  });
}

test('a paused source still notices a broker that went away, and reconnects', { timeout: 60_000 }, async () => {
  const held = await holdingSource(4, 1, 30);
  try {
    await eventually(() => assert.equal(held.deliveries.length, 5));
    await held.mosquitto.stop('SIGKILL');
    // The next PINGREQs go to a closed socket: the write fails and the connection ends.
    await eventually(() => assert.ok(held.counters.get('mqtt.client.disconnected{bridge=test}') >= 1), { timeoutMs: 10_000 });
  } finally {
    await held.stop();
  }
});

interface BlackHolingRelay {
  readonly port: number;
  /** From now on the connections open so far carry nothing either way and stay open; later ones are carried. */
  blackHole(): void;
  close(): void;
}

/**
 * A TCP relay in front of the broker that can turn its open connections into black holes: the
 * client's writes are taken and go nowhere, nothing comes back, nothing is closed (a host gone
 * without closing, or a NAT that forgot the connection, while a new connection gets through).
 * A pulled cable would not even acknowledge the writes at TCP level; only root could make that
 * happen on loopback, and to the client's MQTT both are the same silence.
 */
async function blackHolingRelay(target: number): Promise<BlackHolingRelay> {
  const pairs = new Set<{ readonly client: Socket; readonly upstream: Socket; dead: boolean }>();
  const server = createServer((client) => {
    const pair = { client, upstream: connect(target, '127.0.0.1'), dead: false };
    pairs.add(pair);
    const carry = (from: Socket, to: Socket) => {
      from.on('data', (chunk: Buffer) => {
        if (!pair.dead) to.write(chunk);
      });
      from.on('error', () => {});
      from.on('close', () => {
        if (!pair.dead) to.destroy();
      });
    };
    carry(client, pair.upstream);
    carry(pair.upstream, client);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as { port: number }).port,
    blackHole: () => {
      for (const pair of pairs) pair.dead = true;
    },
    close: () => {
      for (const { client, upstream } of pairs) {
        client.destroy();
        upstream.destroy();
      }
      server.close();
    },
  };
}

// mqtt.js' own keepalive is held while reading is paused, and a PINGREQ written into a black hole
// fails only at TCP's retransmission timeout (15 minutes and more; never, when something still
// acknowledges it): a paused source stayed on a dead connection that long.
test('a paused source notices a broker gone silent without closing within 3 keepalives, and reconnects', { timeout: 60_000 }, async () => {
  let relay: BlackHolingRelay | undefined;
  const held = await holdingSource(4, 1, 30, async (mosquitto) => {
    relay = await blackHolingRelay(mosquitto.port);
    return `mqtt://127.0.0.1:${relay.port}`;
  });
  try {
    await eventually(() => assert.equal(held.deliveries.length, 5));
    // Paused for a few keepalives while the broker answers: the connection stays.
    await sleep(3_000);
    assert.equal(held.counters.get('mqtt.client.disconnected{bridge=test}'), 0, 'the source reconnected while paused');
    relay?.blackHole();
    // Silent for at most 3 keepalives (keepaliveSec 1), then a reconnect (reconnectMaxMs 100) and
    // a CONNACK; a second more for a slow machine.
    await eventually(() => assert.equal(held.counters.get('mqtt.client.connected{bridge=test}'), 2), { timeoutMs: 3 * 1_000 + 100 + 1_000 + 1_000 });
    assert.equal(held.counters.get('mqtt.client.disconnected{bridge=test}'), 1);
    // The broker delivers again, on the new connection, what Ferry had not acknowledged.
    await eventually(() => assert.equal(held.deliveries.length, 10));
    assert.deepEqual(payloads(held.deliveries.slice(5)), ['m0', 'm1', 'm2', 'm3', 'm4']);
  } finally {
    relay?.close();
    await held.stop();
  }
});
