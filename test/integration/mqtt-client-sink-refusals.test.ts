// A message the external broker will not take is refused alone by the mqttClient sink (dead-
// lettered), and the rest of its batch is published: it used to fail the batch on every retry.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Subject, lastValueFrom, toArray } from 'rxjs';
import pino from 'pino';
import { type Delivery, createDelivery } from '../../src/core/delivery.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import { mqttClientSink } from '../../src/mqtt/client-sink.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { eventually } from '../harness/eventually.ts';
import { mqttClientSinkTarget } from '../harness/mqtt-client-sink-target.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-mqtt-sink-refusals-');

interface Outcome {
  readonly acked: string[];
  readonly nacked: Map<string, Error & { code?: string; retryable?: boolean }>;
  readonly received: string[];
  readonly counters: CounterRegistry;
}

/**
 * Writes one batch of `messages` (topic, payload, key) through an mqttClient sink to a private
 * Mosquitto with `brokerConfig` (`$DIR` is its directory), and collects what a subscriber of
 * the sink's topics received. `topic`: the sink's topic template after its random prefix
 * (`${topic}` unless given).
 */
async function writeBatch(
  brokerConfig: (dir: string) => string,
  sink: Record<string, unknown>,
  messages: readonly (readonly [string, string, string?])[],
  topic?: string,
): Promise<Outcome> {
  const dir = tempDir();
  const target = await mqttClientSinkTarget(dir, brokerConfig, 'ext/refusals/', sink);
  const { received } = target;
  const config = topic === undefined ? target.config : { ...target.config, topic: target.config.topic.replace(/\$\{topic\}$/, topic) };
  const counters = new CounterRegistry();
  const acked: string[] = [];
  const nacked: Outcome['nacked'] = new Map();
  const input = new Subject<Delivery>();
  const done = lastValueFrom(
    mqttClientSink
      .create(config, { logger: pino({ level: 'silent' }), counters, dataDir: dir, bridge: 'test' })(input)
      .pipe(toArray()),
  );
  try {
    for (const [topic, payload, key] of messages) {
      const envelope = createEnvelope({ topic, payload, origin: { source: 'test' }, ...(key === undefined ? {} : { key }) });
      input.next(createDelivery(envelope, { onAck: () => acked.push(payload), onNack: (e) => nacked.set(payload, e) }));
    }
    input.complete();
    await done;
    const published = messages.length - nacked.size;
    await eventually(() => assert.equal(received.length, published));
    return { acked, nacked, received, counters };
  } finally {
    await target.close();
  }
}

/** What a refused message's nack says, and that the others went through. */
function assertRefusedAlone(outcome: Outcome, refused: string, reason: RegExp): void {
  assert.deepEqual([...outcome.nacked.keys()], [refused]);
  const error = outcome.nacked.get(refused);
  assert.equal(error?.code, 'MESSAGE_INVALID');
  assert.equal(error?.retryable, false);
  assert.match(String(error?.message), reason);
  assert.deepEqual(outcome.received.sort(), outcome.acked.sort());
}

const batch = (poison: readonly [string, string]) => [['up/a', 'first'], poison, ['up/c', 'third']] as const;

test("MQTT 5: a message over the broker's Maximum Packet Size is refused alone, before it is sent", async () => {
  const outcome = await writeBatch(() => 'max_packet_size 2000', { protocolVersion: 5 }, batch(['up/big', 'x'.repeat(5000)]));
  assertRefusedAlone(outcome, 'x'.repeat(5000), /PUBLISH of 50\d\d bytes, over the Maximum Packet Size .* \(2000 bytes\)/);
  assert.equal(outcome.counters.get('mqtt.client.messages.rejected{bridge=test,reason=too_large}'), 1);
});

for (const protocolVersion of [4, 5] as const) {
  test(`MQTT ${protocolVersion === 4 ? '3.1.1' : '5'}: a topic with a Unicode noncharacter, which Mosquitto disconnects for, is refused alone`, async () => {
    const outcome = await writeBatch(() => '', { protocolVersion }, batch(['up/\uffff', 'nonchar']));
    assertRefusedAlone(outcome, 'nonchar', /noncharacter U\+FFFF/);
  });
}

test('a topic field with an empty value (an empty Kafka key) is refused alone, escaped or not: it would publish to a topic with an empty level', async () => {
  for (const onUnsafeTopicValue of ['refuse', 'escape']) {
    // `<prefix>//data` is a valid MQTT topic the broker takes, but it addresses nothing.
    const outcome = await writeBatch(
      () => '',
      { onUnsafeTopicValue },
      [
        ['up/a', 'first', 'k-1'],
        ['up/b', 'empty key', ''],
        ['up/c', 'third', 'k-3'],
      ],
      '${key}/data',
    );
    assertRefusedAlone(outcome, 'empty key', /no topic for message .*\$\{key\} is empty/);
    assert.equal(outcome.counters.get('mqtt.client.messages.rejected{bridge=test,reason=topic}'), 1);
  }
});

test("MQTT 5: QoS 2 is published at the broker's Maximum QoS of 1", async () => {
  const outcome = await writeBatch(() => 'max_qos 1', { protocolVersion: 5, qos: 2 }, batch(['up/b', 'second']));
  assert.deepEqual(outcome.nacked, new Map());
  assert.deepEqual(outcome.received.sort(), ['first', 'second', 'third']);
});
