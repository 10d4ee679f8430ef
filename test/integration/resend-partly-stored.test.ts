// A QoS 1 message for two bridges, one of which took it and one of which did not (a rate limit
// full, a handler that held it too long): the device is refused and sends it again with DUP on
// a new connection; the resend goes to the bridge that did not take it, not again to the one
// that did. A raw MQTT 3.1.1 device, since it must resend with DUP under the same packet id.
import assert from 'node:assert/strict';
import { type Socket, createConnection } from 'node:net';
import { once } from 'node:events';
import { test } from 'node:test';
import pino from 'pino';
import { FerryError } from '../../src/core/errors.ts';
import { EmbeddedBroker } from '../../src/mqtt/embedded-broker.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { connectPacket, publishPacket } from '../harness/mqtt-wire.ts';

/** A connection that has its CONNACK, and the bytes it received since. */
async function connectDevice(port: number, clientId: string): Promise<{ socket: Socket; received: () => Buffer; closed: Promise<unknown> }> {
  const socket = createConnection({ host: '127.0.0.1', port });
  let bytes = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    bytes = Buffer.concat([bytes, chunk]);
  });
  const closed = once(socket, 'close');
  await once(socket, 'connect');
  socket.write(connectPacket(clientId, 60, false));
  const deadline = Date.now() + 5000;
  while (bytes.length < 4) {
    if (Date.now() > deadline) throw new Error('no CONNACK');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.deepEqual([...bytes.subarray(0, 4)].slice(0, 1), [0x20], 'CONNACK');
  assert.equal(bytes[3], 0, 'connection accepted');
  bytes = bytes.subarray(4);
  return { socket, received: () => bytes, closed };
}

async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

test('a resend (DUP) of a message one bridge stored and another refused goes to the one that refused it only', async (t) => {
  const counters = new CounterRegistry();
  const broker = await EmbeddedBroker.start({ host: '127.0.0.1', port: 0, logger: pino({ level: 'silent' }), counters });
  t.after(() => broker.close());
  const stored: string[] = [];
  const limited: string[] = [];
  let refuse = true;
  const history = broker.tap('history', ['devices/#']).subscribe((d) => {
    stored.push(Buffer.from(d.envelope.payload).toString());
    d.ack();
  });
  const rateLimited = broker.tap('limited', ['devices/#']).subscribe((d) => {
    limited.push(Buffer.from(d.envelope.payload).toString());
    if (!refuse) {
      d.ack();
      return;
    }
    refuse = false;
    // Settled after the other bridge stored it.
    setTimeout(() => d.nack(new FerryError('MESSAGE_REJECTED', 'rate limit of bridge limited: full', { bridge: 'limited', retryable: true })), 50);
  });
  t.after(() => {
    history.unsubscribe();
    rateLimited.unsubscribe();
  });

  const first = await connectDevice(broker.port, 'dev-1');
  first.socket.write(publishPacket('devices/dev-1/telemetry/t', Buffer.from('reading-1'), { qos: 1, id: 7 }));
  await first.closed; // MQTT 3.1.1 has no negative PUBACK: refused, the connection is closed
  assert.deepEqual([...first.received()], [], 'a PUBACK for a message one bridge refused');
  assert.deepEqual(stored, ['reading-1']);
  assert.deepEqual(limited, ['reading-1']);

  const again = await connectDevice(broker.port, 'dev-1');
  t.after(() => again.socket.destroy());
  again.socket.write(publishPacket('devices/dev-1/telemetry/t', Buffer.from('reading-1'), { qos: 1, id: 7, dup: true }));
  await until(() => again.received().length >= 4, 'the PUBACK of the resend');
  assert.deepEqual([...again.received().subarray(0, 4)], [0x40, 0x02, 0x00, 0x07]);
  assert.deepEqual(limited, ['reading-1', 'reading-1'], 'the bridge that refused it did not get the resend');
  assert.deepEqual(stored, ['reading-1'], 'the bridge that stored it got the resend again');
});
