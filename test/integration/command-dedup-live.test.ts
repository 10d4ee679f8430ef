// A command its source delivers again while its first delivery still waits for the device: a
// Kafka partition taken away and given back to the same gateway (its new generation reads from
// the committed offset, behind the waiting command), or an outbox row read again after the
// transaction that locked it was lost. The same message id to the same topic: the device gets it
// once, and its PUBACK settles every delivery, at once and not at `expiryMs`. Real embedded
// brokers and real MQTT devices.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import { Subject } from 'rxjs';
import { createDelivery, type Delivery } from '../../src/core/delivery.ts';
import { createEnvelope, newId } from '../../src/core/envelope.ts';
import { deviceSink } from '../../src/mqtt/device-sink.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { type CommandDevice, connectCommandDevice } from '../harness/command-device.ts';
import { type BrokerPersistence, startLoopbackBroker } from '../harness/embedded-broker.ts';
import { eventually } from '../harness/eventually.ts';
import { randomName } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-command-dedup-live-');
const logger = pino({ level: 'silent' });

async function brokerWith(persistence: BrokerPersistence) {
  const counters = new CounterRegistry();
  const broker = await startLoopbackBroker(persistence, tempDir(), logger, counters);
  /** A devices sink (a bridge) on this broker, sending to devices/<key>/commands with an hour's expiry. */
  const sink = () => {
    const input = new Subject<Delivery>();
    const subscription = deviceSink
      .create(
        deviceSink.schema.parse({ topic: 'devices/${key}/commands' }),
        { logger, counters, dataDir: '/nonexistent', bridge: 'commands' },
        { broker },
      )(input)
      .subscribe();
    const send = (device: string, id: string, payload: string) => {
      let acked = false;
      input.next(
        createDelivery(createEnvelope({ id, topic: 'ferry.commands', key: device, payload, origin: { source: 'kafka' } }), { onAck: () => (acked = true), onNack: () => {} }),
      );
      return { acked: () => acked };
    };
    return { send, stop: () => subscription.unsubscribe() };
  };
  return { url: `mqtt://127.0.0.1:${broker.port}`, counters, sink, close: () => broker.close() };
}

const payloads = (device: CommandDevice) => device.received.map((c) => c.payload.toString());

for (const persistence of ['sqlite', 'memory'] as const) {
  test(`[${persistence}] a command delivered again while the first delivery waits for its offline device reaches it once; its PUBACK settles both`, {
    timeout: 30_000,
  }, async () => {
    const gateway = await brokerWith(persistence);
    const bridge = gateway.sink();
    const clientId = randomName('pump-');
    const filter = `devices/${clientId}/commands`;
    try {
      await (await connectCommandDevice(gateway.url, { clientId, filter, clean: false })).end();
      const x = newId();
      const first = bridge.send(clientId, x, 'start');
      const again = bridge.send(clientId, x, 'start');
      assert.equal(gateway.counters.get('commands.deduplicated{bridge=commands,how=held}'), 1);
      const back = await connectCommandDevice(gateway.url, { clientId, filter, clean: false, subscribe: false });
      try {
        await back.waitFor(1);
        await eventually(() => assert.ok(first.acked() && again.acked(), "the device's PUBACK settles both deliveries"));
        // A new command after it is the next the device gets: the first was not sent twice.
        const next = bridge.send(clientId, newId(), 'stop');
        await back.waitFor(2);
        await eventually(() => assert.ok(next.acked()));
        assert.deepEqual(payloads(back), ['start', 'stop']);
      } finally {
        await back.end();
      }
    } finally {
      bridge.stop();
      await gateway.close();
    }
  });

  test(`[${persistence}] a command delivered again while its device holds the PUBACK of the copy it was sent is not sent again`, { timeout: 30_000 }, async () => {
    const gateway = await brokerWith(persistence);
    const bridge = gateway.sink();
    const clientId = randomName('fan-');
    const device = await connectCommandDevice(gateway.url, { clientId, filter: `devices/${clientId}/commands`, holdAcks: true });
    try {
      const x = newId();
      const first = bridge.send(clientId, x, 'on');
      await device.waitFor(1);
      const again = bridge.send(clientId, x, 'on');
      device.releaseAcks();
      await eventually(() => assert.ok(first.acked() && again.acked(), 'the PUBACK of the copy sent settles both deliveries'));
      const next = bridge.send(clientId, newId(), 'off');
      await device.waitFor(2);
      await eventually(() => assert.ok(next.acked()));
      assert.deepEqual(payloads(device), ['on', 'off']);
    } finally {
      await device.end();
      bridge.stop();
      await gateway.close();
    }
  });

  test(`[${persistence}] a delivery that stops waiting (its bridge stopped) leaves the other waiting for the device`, { timeout: 30_000 }, async () => {
    const gateway = await brokerWith(persistence);
    const [before, after] = [gateway.sink(), gateway.sink()];
    const clientId = randomName('valve-');
    const filter = `devices/${clientId}/commands`;
    try {
      await (await connectCommandDevice(gateway.url, { clientId, filter, clean: false })).end();
      const x = newId();
      before.send(clientId, x, 'open');
      const again = after.send(clientId, x, 'open');
      // The bridge's earlier version stops: its delivery is left unsettled, the command stays queued.
      before.stop();
      const back = await connectCommandDevice(gateway.url, { clientId, filter, clean: false, subscribe: false });
      try {
        await back.waitFor(1);
        await eventually(() => assert.ok(again.acked(), "the device's PUBACK settles the delivery still waiting"));
        const next = after.send(clientId, newId(), 'close');
        await back.waitFor(2);
        await eventually(() => assert.ok(next.acked()));
        assert.deepEqual(payloads(back), ['open', 'close']);
      } finally {
        await back.end();
      }
    } finally {
      after.stop();
      await gateway.close();
    }
  });
}

// Sent at QoS 0 only, the command counted as delivered at once, at most once: delivered again by
// its source (a partition given back), it is not sent again. broker.db keeps that; memory keeps
// nothing (a command answered before is sent again there too).
test('[sqlite] a command sent at QoS 0 only (its device subscribed at QoS 0) and delivered again is not sent again', { timeout: 30_000 }, async () => {
  const gateway = await brokerWith('sqlite');
  const bridge = gateway.sink();
  const clientId = randomName('horn-');
  const filter = `devices/${clientId}/commands`;
  const device = await connectCommandDevice(gateway.url, { clientId, filter, subscribe: false });
  try {
    await device.client.subscribeAsync(filter, { qos: 0 });
    const x = newId();
    const first = bridge.send(clientId, x, 'beep');
    await device.waitFor(1);
    await eventually(() => assert.ok(first.acked()));
    const again = bridge.send(clientId, x, 'beep');
    await eventually(() => assert.ok(again.acked()));
    assert.equal(gateway.counters.get('commands.deduplicated{bridge=commands,how=answered}'), 1);
    const next = bridge.send(clientId, newId(), 'quiet');
    await device.waitFor(2);
    await eventually(() => assert.ok(next.acked()));
    assert.deepEqual(payloads(device), ['beep', 'quiet']);
  } finally {
    await device.end();
    bridge.stop();
    await gateway.close();
  }
});
