import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createConnection } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { connectAsync } from 'mqtt';
import pino from 'pino';
import { EmbeddedBroker } from '../../src/mqtt/embedded-broker.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { connectPacket, subscribePacket } from '../harness/mqtt-wire.ts';
import { eventually } from '../harness/eventually.ts';

test('a subscriber that stops reading is disconnected and counted; another subscriber keeps receiving', async () => {
  const counters = new CounterRegistry();
  const broker = await EmbeddedBroker.start({ host: '127.0.0.1', port: 0, logger: pino({ level: 'silent' }), counters, drainTimeoutMs: 500 });
  const publisher = await connectAsync(`mqtt://127.0.0.1:${broker.port}`, { clientId: 'pub', reconnectPeriod: 0 });
  const fast = await connectAsync(`mqtt://127.0.0.1:${broker.port}`, { clientId: 'fast', reconnectPeriod: 0 });
  let fastReceived = 0;
  fast.on('message', () => (fastReceived += 1));
  await fast.subscribeAsync('load/#', { qos: 0 });

  // The slow subscriber subscribes, then never reads again.
  const slow = createConnection({ host: '127.0.0.1', port: broker.port });
  await once(slow, 'connect');
  slow.write(connectPacket('slow'));
  slow.write(subscribePacket('load/#'));
  await sleep(200);
  slow.pause();
  const slowClosed = once(slow, 'close');

  try {
    const payload = Buffer.alloc(16 * 1024, 1);
    let sent = 0;
    const deadline = Date.now() + 10_000;
    while (counters.get('mqtt.connections.closed_slow') === 0 && Date.now() < deadline) {
      for (let i = 0; i < 20; i++) publisher.publish('load/x', payload, { qos: 0 });
      sent += 20;
      await sleep(10);
    }
    assert.equal(counters.get('mqtt.connections.closed_slow'), 1, `the slow subscriber was not disconnected after ${sent} messages`);
    // Reading again lets the paused socket see that the broker closed it.
    slow.resume();
    await slowClosed;
    const before = fastReceived;
    await publisher.publishAsync('load/after', 'after', { qos: 1 });
    await eventually(() => assert.ok(!(fastReceived === before), 'still: fastReceived === before'), { timeoutMs: 5000 });
    assert.ok(fastReceived > before, 'the fast subscriber kept receiving');
  } finally {
    slow.destroy();
    await publisher.endAsync(true);
    await fast.endAsync(true);
    await broker.close();
  }
});
