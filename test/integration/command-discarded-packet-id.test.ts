// A command's copy the broker discards for one client (larger than the Maximum Packet Size it
// announced) while the command still waits for another client: aedes frees the packet id that
// copy was given, and the client's next message can be sent under it. That message's PUBACK is
// not an answer to the command. Real embedded broker, real mqtt.js MQTT 5 devices on loopback.
//
// Which id comes next is chance (a counter starting at random, wrapping after 65,535): the test
// sets the client's counter back to the freed id, as the counter does by itself once it wraps.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { Aedes } from 'aedes';
import { type MqttClient, connectAsync } from 'mqtt';
import pino from 'pino';
import { aedesInternals, clientInternals } from '../../src/mqtt/aedes-internals.ts';
import type { CommandOutcome } from '../../src/mqtt/command-types.ts';
import { EmbeddedBroker } from '../../src/mqtt/embedded-broker.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { recordAedesInstances } from '../harness/aedes-instances.ts';
import { eventually } from '../harness/eventually.ts';

// The aedes instance of the broker, to set where a connection's counter stands.
const aedesInstances = await recordAedesInstances();
const created = aedesInstances.created;

const devices: MqttClient[] = [];
let broker: EmbeddedBroker | undefined;
after(async () => {
  aedesInstances.restore();
  for (const d of devices) d.end(true);
  await broker?.close();
});

test("a command discarded for one client (too large for it) is not settled by that client's PUBACK of a later message sent under the freed packet id", {
  timeout: 30_000,
}, async () => {
  broker = await EmbeddedBroker.start({ host: '127.0.0.1', port: 0, logger: pino({ level: 'silent' }), counters: new CounterRegistry() });
  const aedes = created.at(-1) as Aedes;
  const url = `mqtt://127.0.0.1:${broker.port}`;

  // The device that answers: it holds its PUBACK, so the command waits for it.
  let answer: (() => void) | undefined;
  const device = await connectAsync(url, {
    clientId: 'device',
    protocolVersion: 5,
    reconnectPeriod: 0,
    customHandleAcks: (_topic, _message, _packet, done) => {
      answer = () => done(0);
    },
  });
  devices.push(device);
  await device.subscribeAsync('cmd/dev', { qos: 1 });

  // A monitor that takes only small packets, and acknowledges every message at once.
  const seen: string[] = [];
  const monitor = await connectAsync(url, { clientId: 'monitor', protocolVersion: 5, reconnectPeriod: 0, properties: { maximumPacketSize: 256 } });
  devices.push(monitor);
  monitor.on('message', (_topic, payload) => seen.push(payload.toString()));
  await monitor.subscribeAsync('cmd/dev', { qos: 1 });
  await monitor.subscribeAsync('status/dev', { qos: 1 });

  const FREED = 4242;
  const monitorClient = () => {
    const client = aedesInternals(aedes).clients['monitor'];
    assert.ok(client !== undefined, 'the monitor is connected');
    return clientInternals(client);
  };
  // The patch's set of the packet ids in flight to a client (lib/qos-packet.js).
  const inFlight = (id: number) => (monitorClient() as unknown as { _packetIds: Set<number> })._packetIds.has(id);
  monitorClient()._nextId = FREED;
  let outcome: CommandOutcome | undefined;
  const command = broker.publishCommand({ topic: 'cmd/dev', payload: Buffer.alloc(1000, 'c'), qos: 1, retain: false, expiresAt: Date.now() + 20_000 });
  void command.outcome.then((o) => (outcome = o));
  await eventually(() => assert.ok(answer !== undefined, 'the device got the command'));
  // The monitor's copy was discarded, and its packet id freed.
  assert.equal(inFlight(FREED), false, 'the packet id of the discarded copy is free');

  // The monitor's next message goes out under that id, and its PUBACK comes back.
  monitorClient()._nextId = FREED;
  const publisher = await connectAsync(url, { clientId: 'publisher', protocolVersion: 5, reconnectPeriod: 0 });
  devices.push(publisher);
  await publisher.publishAsync('status/dev', 'online', { qos: 1 });
  await eventually(() => assert.deepEqual(seen, ['online']));
  await eventually(() => assert.equal(inFlight(FREED), false, 'the monitor acknowledged the message'));
  assert.equal(outcome, undefined, `the command is still waiting for the device, not ${JSON.stringify(outcome)}`);

  // The device's answer settles it.
  answer?.();
  await eventually(() => assert.deepEqual(outcome, { status: 'acked', clientId: 'device' }));
});
