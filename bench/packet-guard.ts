// Cost of guardConnection on the MQTT ingest path, against aedes without it, in one run:
// one mqtt.js client publishes QoS 0 messages of 200 bytes, one subscriber receives them
// through an in-process aedes broker. The publisher keeps at most WINDOW messages ahead of
// the subscriber, so nothing piles up in a buffer. Plain and guarded runs alternate and
// each side reports its median, so drift (JIT, GC, CPU boost) hits both alike.
import { once } from 'node:events';
import { createServer, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { Aedes } from 'aedes';
import { connectAsync } from 'mqtt';
import { guardConnection } from '../src/mqtt/packet-guard.ts';
import { median } from './stats.ts';

const WINDOW = 1000;
const PAYLOAD = Buffer.alloc(200, 'x');
const ROUNDS = 5;

async function throughput(messages: number, wrap: ((socket: Socket) => Duplex) | undefined): Promise<number> {
  const aedes = await Aedes.createBroker();
  const server = createServer((socket) => aedes.handle(wrap === undefined ? socket : wrap(socket)));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  const url = `mqtt://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`;
  const subscriber = await connectAsync(url, { clientId: 'bench-sub', reconnectPeriod: 0 });
  const publisher = await connectAsync(url, { clientId: 'bench-pub', reconnectPeriod: 0 });
  try {
    await subscriber.subscribeAsync('bench/t', { qos: 0 });
    let sent = 0;
    let received = 0;
    const pump = (): void => {
      while (sent < messages && sent - received < WINDOW) {
        publisher.publish('bench/t', PAYLOAD, { qos: 0 });
        sent += 1;
      }
    };
    const started = performance.now();
    await new Promise<void>((done) => {
      subscriber.on('message', () => {
        received += 1;
        if (received === messages) done();
        else if (sent - received <= WINDOW / 2) pump();
      });
      pump();
    });
    return Math.round(messages / ((performance.now() - started) / 1000));
  } finally {
    await Promise.all([subscriber.endAsync(true), publisher.endAsync(true)]);
    server.close();
    await new Promise<void>((done) => aedes.close(() => done()));
  }
}

export async function benchPacketGuard(messages = 50_000): Promise<{ plain: number; guarded: number; ratio: number }> {
  const guard = (socket: Socket): Duplex => guardConnection(socket, { maxPacketBytes: 256 * 1024, onRefuse: () => {} });
  await throughput(Math.min(messages, 10_000), undefined);
  await throughput(Math.min(messages, 10_000), guard);
  const plain: number[] = [];
  const guarded: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    plain.push(await throughput(messages, undefined));
    guarded.push(await throughput(messages, guard));
  }
  const result = { plain: median(plain), guarded: median(guarded) };
  return { ...result, ratio: Math.round((result.guarded / result.plain) * 1000) / 1000 };
}
