// A message a broker refuses by closing the connection (MQTT 3.1.1 has no negative PUBACK:
// Mosquitto closes it for a PUBLISH over max_packet_size or message_size_limit) is found and
// refused alone by the mqttClient sink, and the rest of its batch is published: the whole batch
// used to fail on every retry, and the message held the bridge up for good.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Subject } from 'rxjs';
import pino from 'pino';
import { type Delivery, createDelivery } from '../../src/core/delivery.ts';
import { type Envelope, createEnvelope } from '../../src/core/envelope.ts';
import { mqttClientSink } from '../../src/mqtt/client-sink.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { eventually } from '../harness/eventually.ts';
import { mqttClientSinkTarget } from '../harness/mqtt-client-sink-target.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-mqtt-sink-closes-');
const BIG = 'x'.repeat(5000);

interface Outcome {
  /** Payloads acknowledged by the sink, in order. */
  readonly acked: string[];
  /** Payloads refused for good, with the error. */
  readonly refused: Map<string, Error & { code?: string }>;
  /** Payloads still failing (retryable) after the last attempt. */
  readonly failing: string[];
  /** Payloads the broker delivered to a subscriber. */
  readonly received: string[];
  readonly attempts: number;
  readonly counters: CounterRegistry;
}

/**
 * Writes `rounds` of payloads (topic `up/<n>`) through one mqttClient sink to a private Mosquitto
 * with `brokerConfig`, and, as the bridge's buffer does, sends every delivery nacked as retryable
 * again, in order, with the next round's, up to `attempts` writes.
 */
async function publishWithRetries(brokerConfig: string, sink: Record<string, unknown>, rounds: readonly (readonly string[])[], attempts: number): Promise<Outcome> {
  const dir = tempDir();
  const target = await mqttClientSinkTarget(dir, () => brokerConfig, 'ext/closes/', sink);
  const { config, received } = target;
  const counters = new CounterRegistry();
  const input = new Subject<Delivery>();
  const events = mqttClientSink
    .create(config, { logger: pino({ level: 'silent' }), counters, dataDir: dir, bridge: 'test' })(input)
    .subscribe();
  const acked: string[] = [];
  const refused: Outcome['refused'] = new Map();
  let pending: Envelope[] = [];
  let attempt = 0;
  try {
    while (attempt < attempts && (pending.length > 0 || attempt < rounds.length)) {
      const round = rounds[attempt] ?? [];
      pending.push(...round.map((payload, i) => createEnvelope({ topic: `up/${attempt}-${i}`, payload, origin: { source: 'test' } })));
      attempt += 1;
      const retry: Envelope[] = [];
      await Promise.all(
        pending.map(
          (envelope) =>
            new Promise<void>((settled) => {
              const payload = Buffer.from(envelope.payload).toString();
              const onNack = (error: Error & { code?: string; retryable?: boolean }) => {
                if (error.retryable === false) refused.set(payload, error);
                else retry.push(envelope);
                settled();
              };
              input.next(createDelivery(envelope, { onAck: () => (acked.push(payload), settled()), onNack }));
            }),
        ),
      );
      pending = retry;
    }
    await eventually(() => assert.deepEqual(new Set(received), new Set(acked)));
    return { acked, refused, failing: pending.map((e) => Buffer.from(e.payload).toString()), received, attempts: attempt, counters };
  } finally {
    events.unsubscribe();
    await target.close();
  }
}

function assertRefusedAlone(outcome: Outcome, published: readonly string[]): void {
  assert.deepEqual(outcome.failing, []);
  assert.deepEqual([...outcome.refused.keys()], [BIG]);
  const error = outcome.refused.get(BIG);
  assert.equal(error?.code, 'MESSAGE_INVALID');
  assert.match(String(error?.message), /closed the connection each time message \S+ was sent alone \(2 times or more\) and took other messages/);
  assert.deepEqual(new Set(outcome.acked), new Set(published));
  assert.equal(outcome.counters.get('mqtt.client.messages.rejected{bridge=test,reason=broker_closed}'), 1);
}

for (const [protocolVersion, limit] of [
  [4, 'max_packet_size 2000'],
  [4, 'message_size_limit 2000'],
  // Mosquitto 2.0 closes the connection for message_size_limit under MQTT 5 as well, without a DISCONNECT.
  [5, 'message_size_limit 2000'],
] as const) {
  test(`MQTT ${protocolVersion === 4 ? '3.1.1' : '5'}, ${limit}: the message the broker closes the connection for is refused alone after a few tries; the rest is published`, {
    timeout: 60_000,
  }, async () => {
    const outcome = await publishWithRetries(limit, { protocolVersion }, [['first', BIG, 'third']], 8);
    assertRefusedAlone(outcome, ['first', 'third']);
    // One write with the batch, two with it sent alone, one that refuses it.
    assert.equal(outcome.attempts, 4);
  });
}

test('MQTT 3.1.1: at the head of the buffer, the message is held back once while the next is tried, then refused', { timeout: 60_000 }, async () => {
  const outcome = await publishWithRetries('max_packet_size 2000', { protocolVersion: 4 }, [[BIG, 'second', 'third']], 8);
  assertRefusedAlone(outcome, ['second', 'third']);
});

test('MQTT 3.1.1: alone in the buffer, the message is tried again until another arrives to tell a refused message from a refusing broker', { timeout: 60_000 }, async () => {
  const outcome = await publishWithRetries('max_packet_size 2000', { protocolVersion: 4 }, [[BIG], [], [], [], ['later']], 10);
  assertRefusedAlone(outcome, ['later']);
  assert.ok(outcome.attempts >= 5);
});

test('MQTT 3.1.1: a broker that closes the connection for every message (QoS over its max_qos) gets nothing refused: the sink holds', { timeout: 60_000 }, async () => {
  const outcome = await publishWithRetries('max_qos 1', { protocolVersion: 4, qos: 2 }, [['first', 'second', 'third']], 8);
  assert.deepEqual(outcome.refused, new Map());
  assert.deepEqual(outcome.failing, ['first', 'second', 'third']);
  assert.equal(outcome.counters.get('mqtt.client.messages.rejected{bridge=test,reason=broker_closed}'), 0);
});

// A broker of MQTT 3.1.1 cannot tell its packet size limit: the sink's maxPacketSize tells it,
// and a larger message is refused before it is sent, as under MQTT 5 with the broker's Maximum
// Packet Size, instead of costing closed connections and tries until it is found.
test("MQTT 3.1.1, max_packet_size 2000: with the sink's maxPacketSize, the larger message is refused before it is sent and the connection stays up", {
  timeout: 60_000,
}, async () => {
  // Without the setting Mosquitto closes the connection for it: the batch fails and is tried again.
  const unset = await publishWithRetries('max_packet_size 2000', { protocolVersion: 4 }, [['first', BIG, 'third']], 8);
  assert.ok(unset.attempts > 1, `${unset.attempts} tries`);

  const outcome = await publishWithRetries('max_packet_size 2000', { protocolVersion: 4, maxPacketSize: 2000 }, [['first', BIG, 'third']], 8);
  // One write: no close failed the batch, nothing was tried again.
  assert.equal(outcome.attempts, 1);
  assert.deepEqual(outcome.failing, []);
  assert.deepEqual([...outcome.refused.keys()], [BIG]);
  const error = outcome.refused.get(BIG);
  assert.equal(error?.code, 'MESSAGE_INVALID');
  assert.match(String(error?.message), /is a PUBLISH of 50\d\d bytes, over the sink's maxPacketSize for \S+ \(2000 bytes\)/);
  assert.deepEqual(outcome.acked, ['first', 'third']);
  assert.equal(outcome.counters.get('mqtt.client.messages.rejected{bridge=test,reason=too_large}'), 1);
  assert.equal(outcome.counters.get('mqtt.client.messages.rejected{bridge=test,reason=broker_closed}'), 0);
});

test("MQTT 5: the smaller of the sink's maxPacketSize and the broker's Maximum Packet Size applies", { timeout: 60_000 }, async () => {
  const MIDDLE = 'y'.repeat(1500);
  // The broker's 2000 bytes is the smaller: BIG is refused by it, MIDDLE published.
  const broker = await publishWithRetries('max_packet_size 2000', { protocolVersion: 5, maxPacketSize: 10_000 }, [['first', MIDDLE, BIG]], 8);
  assert.equal(broker.attempts, 1);
  assert.deepEqual(broker.acked, ['first', MIDDLE]);
  assert.match(String(broker.refused.get(BIG)?.message), /over the Maximum Packet Size of \S+ \(2000 bytes\)/);
  // The sink's 1000 bytes is the smaller: MIDDLE is refused too.
  const sink = await publishWithRetries('max_packet_size 2000', { protocolVersion: 5, maxPacketSize: 1000 }, [['first', MIDDLE, BIG]], 8);
  assert.equal(sink.attempts, 1);
  assert.deepEqual(sink.acked, ['first']);
  assert.deepEqual(new Set(sink.refused.keys()), new Set([MIDDLE, BIG]));
  assert.match(String(sink.refused.get(MIDDLE)?.message), /over the sink's maxPacketSize for \S+ \(1000 bytes\)/);
  assert.equal(sink.counters.get('mqtt.client.messages.rejected{bridge=test,reason=too_large}'), 2);
});
