import assert from 'node:assert/strict';
import { once } from 'node:events';
import { type AddressInfo, type Socket, connect, createServer } from 'node:net';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Aedes } from 'aedes';
import { connectAsync, type MqttClient } from 'mqtt';
import { guardConnection } from '../../src/mqtt/packet-guard.ts';
import type { PacketRefusalReason } from '../../src/mqtt/packet-scanner.ts';
import { connectPacket, connectPacketV5, packet, payloadForTotal, publishPacket, publishPacketV5 } from '../harness/mqtt-wire.ts';

const LIMIT = 64 * 1024;
/** The largest remaining length MQTT can express: a 256 MB CONNECT. */
const HUGE_CONNECT_HEADER = Buffer.from([0x10, 0xff, 0xff, 0xff, 0x7f]);

interface Refusal {
  readonly reason: PacketRefusalReason;
  readonly detail: string;
  /** The client's local port, to tell connections apart. */
  readonly port: number;
}

/** A real aedes broker on a TCP port, every connection guarded at LIMIT bytes a packet. */
async function startBroker(options: { recordChunks?: boolean; authenticateDelayMs?: number } = {}) {
  const delay = options.authenticateDelayMs ?? 0;
  const aedes = await Aedes.createBroker({
    connectTimeout: 2000,
    authenticate: (_client, _username, _password, done) => void setTimeout(() => done(null, true), delay),
  });
  const refusals: Refusal[] = [];
  /** Sizes of the chunks each connection read, by client port (with recordChunks). */
  const chunks = new Map<number, number[]>();
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    const port = socket.remotePort ?? 0;
    const guarded = guardConnection(socket, { maxPacketBytes: LIMIT, onRefuse: (reason, detail) => refusals.push({ reason, detail, port }) });
    if (options.recordChunks === true) {
      const sizes: number[] = [];
      chunks.set(port, sizes);
      const push = guarded.push;
      guarded.push = function (this: Socket, chunk: unknown, encoding?: BufferEncoding) {
        if (chunk instanceof Uint8Array) sizes.push(chunk.length);
        return push.call(this, chunk, encoding);
      };
    }
    aedes.handle(guarded);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    aedes,
    port,
    url: `mqtt://127.0.0.1:${port}`,
    refusals,
    chunks,
    close: async () => {
      server.close();
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((done) => aedes.close(() => done()));
    },
  };
}

async function rawSocket(port: number): Promise<Socket> {
  const socket = connect(port, '127.0.0.1');
  socket.setNoDelay(true);
  socket.on('error', () => {}); // resets are expected: the broker hangs up mid-write
  socket.resume(); // read, or the broker's FIN goes unnoticed
  await once(socket, 'connect');
  return socket;
}

/** True once `socket` closed, false if it is still open after `ms`. */
function whenClosed(socket: Socket, ms = 2000): Promise<boolean> {
  if (socket.closed) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

async function until(check: () => boolean, what: string, ms = 5000): Promise<void> {
  for (const end = Date.now() + ms; !check(); ) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

async function writeByteByByte(socket: Socket, bytes: Uint8Array): Promise<void> {
  for (const byte of bytes) {
    socket.write(Buffer.from([byte]));
    await sleep(5);
  }
}

/** Connects a raw socket with a valid CONNECT and waits for the CONNACK. */
async function rawSession(port: number, clientId: string): Promise<Socket> {
  const socket = await rawSocket(port);
  let received = Buffer.alloc(0);
  socket.on('data', (data: Buffer) => (received = Buffer.concat([received, data])));
  socket.write(connectPacket(clientId));
  await until(() => received.length >= 4, `CONNACK for ${clientId}`);
  assert.deepEqual([...received.subarray(0, 4)], [0x20, 0x02, 0x00, 0x00]);
  return socket;
}

/** Type byte plus remaining length: up to the first length byte without the continuation bit. */
function headerLength(message: Buffer): number {
  return 2 + message.subarray(1).findIndex((byte) => (byte & 0x80) === 0);
}

function collect(client: MqttClient): { topic: string; payload: Buffer }[] {
  const messages: { topic: string; payload: Buffer }[] = [];
  client.on('message', (topic, payload) => messages.push({ topic, payload }));
  return messages;
}

test('a well-behaved client is unaffected: QoS 0 and 1, 60 KiB, and a packet of exactly the limit', async (t) => {
  const broker = await startBroker();
  t.after(broker.close);
  const subscriber = await connectAsync(broker.url, { clientId: 'sub', reconnectPeriod: 0 });
  const publisher = await connectAsync(broker.url, { clientId: 'pub', reconnectPeriod: 0 });
  t.after(() => Promise.all([subscriber.endAsync(true), publisher.endAsync(true)]));
  await subscriber.subscribeAsync('ok/#', { qos: 1 });
  const received = collect(subscriber);
  const sixty = Buffer.alloc(60 * 1024, 'a');
  const sent: [string, Buffer, 0 | 1][] = [
    ['ok/small0', Buffer.from('hello 0'), 0],
    ['ok/small1', Buffer.from('hello 1'), 1],
    ['ok/sixty0', sixty, 0],
    ['ok/sixty1', sixty, 1],
    ['ok/exact', Buffer.alloc(payloadForTotal('ok/exact', LIMIT), 'e'), 0],
  ];
  for (const [topic, payload, qos] of sent) await publisher.publishAsync(topic, payload, { qos });
  await until(() => received.length === sent.length, 'every message');
  assert.deepEqual(
    received.map((m) => [m.topic, m.payload]),
    sent.map(([topic, payload]) => [topic, payload]),
  );
  assert.deepEqual(broker.refusals, []);
});

test('a CONNECT announcing 256 MB is refused at its header: prompt close, and 50 of them with 1 MB each do not grow memory', { timeout: 60_000 }, async (t) => {
  const broker = await startBroker();
  t.after(broker.close);
  const junk = Buffer.alloc(1024 * 1024, 0x41);
  const announce = async (): Promise<{ ms: number; port: number }> => {
    const socket = await rawSocket(broker.port);
    const started = performance.now();
    socket.write(Buffer.concat([HUGE_CONNECT_HEADER, Buffer.from([0x00, 0x04, 0x4d, 0x51])]));
    socket.write(junk);
    assert.equal(await whenClosed(socket), true, 'the connection was not closed');
    return { ms: performance.now() - started, port: socket.localPort ?? 0 };
  };
  for (let i = 0; i < 3; i++) await announce(); // warm up before sampling
  const before = process.memoryUsage();
  const runs: { ms: number; port: number }[] = [];
  for (let i = 0; i < 50; i++) runs.push(await announce());
  const after = process.memoryUsage();

  const slowest = Math.max(...runs.map((r) => r.ms));
  assert.ok(slowest < 1000, `slowest close took ${Math.round(slowest)} ms`);
  assert.equal(broker.refusals.length, 53);
  assert.ok(
    broker.refusals.every((r) => r.reason === 'packet_too_large' && r.detail.includes('announces 268435460 bytes')),
    JSON.stringify(broker.refusals[0]),
  );
  assert.equal(new Set(broker.refusals.map((r) => r.port)).size, 53, 'onRefuse once per connection');
  const mb = (bytes: number) => Math.round(bytes / 1024 / 1024);
  t.diagnostic(`growth over 50 connections: rss ${mb(after.rss - before.rss)} MB, arrayBuffers ${mb(after.arrayBuffers - before.arrayBuffers)} MB`);
  assert.ok(after.rss - before.rss < 20 * 1024 * 1024, `rss grew by ${mb(after.rss - before.rss)} MB`);
  assert.ok(after.arrayBuffers - before.arrayBuffers < 20 * 1024 * 1024, `arrayBuffers grew by ${mb(after.arrayBuffers - before.arrayBuffers)} MB`);
  assert.equal(broker.aedes.connectedClients, 0);
});

test('a PUBLISH one byte over the limit closes its connection; what the client sent before was delivered', async (t) => {
  const broker = await startBroker();
  t.after(broker.close);
  const subscriber = await connectAsync(broker.url, { clientId: 'sub', reconnectPeriod: 0 });
  const publisher = await connectAsync(broker.url, { clientId: 'pub', reconnectPeriod: 0 });
  publisher.on('error', () => {}); // the reset may surface as an error
  t.after(() => Promise.all([subscriber.endAsync(true), publisher.endAsync(true)]));
  await subscriber.subscribeAsync('big/#', { qos: 1 });
  const received = collect(subscriber);
  await publisher.publishAsync('big/a', 'first', { qos: 1 });
  await publisher.publishAsync('big/b', 'second', { qos: 0 });
  const closed = new Promise<void>((resolve) => publisher.once('close', () => resolve())); // not once(): it rejects on 'error'
  publisher.publish('big/c', Buffer.alloc(payloadForTotal('big/c', LIMIT + 1), 'c'), { qos: 0 });
  await closed;
  await sleep(100);
  assert.deepEqual(
    received.map((m) => `${m.topic}=${m.payload.toString()}`),
    ['big/a=first', 'big/b=second'],
  );
  assert.equal(broker.refusals.length, 1);
  assert.equal(broker.refusals[0]?.reason, 'packet_too_large');
  assert.match(broker.refusals[0]?.detail ?? '', new RegExp(`packet type 3 announces ${LIMIT + 1} bytes; the limit is ${LIMIT}`));
});

test('whole packets before a refused header are still delivered, from the same read or from the socket buffer', async (t) => {
  const broker = await startBroker({ authenticateDelayMs: 300 });
  t.after(broker.close);
  const subscriber = await connectAsync(broker.url, { clientId: 'sub', reconnectPeriod: 0 });
  t.after(() => subscriber.endAsync(true));
  await subscriber.subscribeAsync('pre/#', { qos: 1 });
  const received = collect(subscriber);
  const oversized = Buffer.from([0x30, 0xff, 0xff, 0x04]);

  // One write, so one read: two PUBLISHes and the refused header after them.
  const sameRead = await rawSession(broker.port, 'same-read');
  sameRead.write(Buffer.concat([publishPacket('pre/a', Buffer.from('one')), publishPacket('pre/b', Buffer.from('two'), { qos: 1, id: 1 }), oversized, noise(1, 1000)]));
  assert.equal(await whenClosed(sameRead, 1000), true);

  // While aedes is paused authenticating, a PUBLISH waits unread in the socket; then the refused header comes.
  const buffered = await rawSocket(broker.port);
  buffered.write(connectPacket('buffered'));
  await sleep(50);
  buffered.write(publishPacket('pre/c', Buffer.from('three')));
  await sleep(50);
  buffered.write(oversized);
  assert.equal(await whenClosed(buffered, 2000), true);

  await until(() => received.length === 3, 'the three messages');
  assert.deepEqual(
    received.map((m) => `${m.topic}=${m.payload.toString()}`),
    ['pre/a=one', 'pre/b=two', 'pre/c=three'],
  );
  assert.deepEqual(
    broker.refusals.map((r) => r.reason),
    ['packet_too_large', 'packet_too_large'],
  );
});

test('headers arriving one byte per read are parsed: an allowed size passes, a refused one is refused at its last length byte', async (t) => {
  const broker = await startBroker({ recordChunks: true });
  t.after(broker.close);
  const subscriber = await connectAsync(broker.url, { clientId: 'sub', reconnectPeriod: 0 });
  t.after(() => subscriber.endAsync(true));
  await subscriber.subscribeAsync('slow/#', { qos: 0 });
  const received = collect(subscriber);

  // Allowed: a CONNECT entirely byte by byte, then PUBLISHes whose headers come byte by byte
  // (one with a 3-byte remaining length) and whose bodies come in uneven pieces.
  const slow = await rawSocket(broker.port);
  t.after(() => slow.destroy());
  let fromBroker = Buffer.alloc(0);
  slow.on('data', (data: Buffer) => (fromBroker = Buffer.concat([fromBroker, data])));
  await writeByteByByte(slow, connectPacket('slow'));
  await until(() => fromBroker.length >= 4, 'CONNACK');
  assert.deepEqual([...fromBroker], [0x20, 0x02, 0x00, 0x00]);
  const big = Buffer.alloc(20_000, 'b');
  for (const message of [publishPacket('slow/big', big), publishPacket('slow/small', Buffer.from('tiny'))]) {
    const header = message.subarray(0, headerLength(message));
    await writeByteByByte(slow, header);
    for (let at = header.length; at < message.length; at += 7001) {
      slow.write(message.subarray(at, Math.min(message.length, at + 7001)));
      await sleep(5);
    }
  }
  await until(() => received.length === 2, 'both messages');
  assert.deepEqual(
    received.map((m) => [m.topic, m.payload]),
    [
      ['slow/big', big],
      ['slow/small', Buffer.from('tiny')],
    ],
  );
  const reads = broker.chunks.get(slow.localPort ?? 0) ?? [];
  assert.ok(reads.filter((n) => n === 1).length >= connectPacket('slow').length + 4 + 2, `the broker read ${JSON.stringify(reads)}`);
  assert.equal(broker.refusals.length, 0);

  // Refused: 0x30 0x81 0x80 0x04 is a PUBLISH of 1 + 3 + 65,537 bytes; nothing happens until the 0x04.
  const refused = await rawSession(broker.port, 'slow-refused');
  await writeByteByByte(refused, Buffer.from([0x30, 0x81, 0x80]));
  await sleep(100);
  assert.equal(refused.closed, false, 'closed before the remaining length was complete');
  assert.equal(broker.refusals.length, 0);
  refused.write(Buffer.from([0x04]));
  assert.equal(await whenClosed(refused, 1000), true);
  assert.equal(broker.refusals.length, 1);
  assert.equal(broker.refusals[0]?.reason, 'packet_too_large');
  assert.match(broker.refusals[0]?.detail ?? '', /announces 65541 bytes/);
  assert.equal(received.length, 2);
});

test('a remaining length of 5 bytes is refused as malformed', async (t) => {
  const broker = await startBroker();
  t.after(broker.close);
  const socket = await rawSocket(broker.port);
  socket.write(Buffer.from([0x10, 0x80, 0x80, 0x80, 0x80, 0x01]));
  assert.equal(await whenClosed(socket, 1000), true);
  assert.deepEqual(
    broker.refusals.map((r) => r.reason),
    ['malformed_header'],
  );
});

/** Deterministic bytes, so a failure replays. */
function noise(seed: number, length: number): Buffer {
  const bytes = Buffer.alloc(length);
  let state = seed;
  for (let i = 0; i < length; i++) {
    state = (state * 1103515245 + 12345) % 2 ** 31;
    bytes[i] = state >> 16;
  }
  return bytes;
}

/** Ways to misbehave; each gets a fresh socket and the abuser's number. */
const abuses: ((socket: Socket, n: number) => Promise<void> | void)[] = [
  (socket, n) => void socket.write(noise(n, 1 + ((n * 97) % 3000))),
  (socket, n) => void socket.end(connectPacket(`abuser-${n}`).subarray(0, 5 + (n % 10))),
  (socket, n) => {
    // Remaining length 3 short of the body: the rest is read as the next packet.
    const whole = connectPacket(`abuser-${n}`);
    socket.write(Buffer.concat([Buffer.from([0x10, (whole[1] as number) - 3]), whole.subarray(2)]));
  },
  (socket, n) => {
    // Remaining length 50 past the body, which never comes.
    const whole = connectPacket(`abuser-${n}`);
    socket.write(Buffer.concat([Buffer.from([0x10, (whole[1] as number) + 50]), whole.subarray(2)]));
  },
  (socket, n) => {
    socket.write(connectPacket(`abuser-${n}`));
    socket.write(packet(0x36, Buffer.concat([Buffer.from([0, 7]), Buffer.from('abuse/t'), Buffer.from([0, 1]), Buffer.from('qos 3')])));
  },
  (socket, n) => {
    socket.write(connectPacket(`abuser-${n}`));
    socket.write(publishPacket('abuse/t', Buffer.alloc(0), { qos: 1 })); // no packet id
  },
  (socket) => void socket.write(Buffer.concat([HUGE_CONNECT_HEADER, noise(7, 64 * 1024)])),
  (socket) => void socket.write(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01])),
  (socket, n) => {
    socket.write(connectPacket(`abuser-${n}`));
    socket.write(noise(n, 100 * 1024));
  },
  (socket, n) => {
    // Valid packets up to a body cut short, then a hang-up.
    socket.write(connectPacket(`abuser-${n}`));
    socket.end(publishPacket('abuse/t', Buffer.alloc(10_000), { qos: 1, id: 1 }).subarray(0, 5_000));
  },
  // MQTT 5: properties that lie about their length, unknown or forbidden ones, bad topic aliases.
  (socket, n) => void socket.write(connectPacketV5(`abuser-${n}`, Buffer.from([0x7f, 0x11, 0, 0]))),
  (socket, n) => void socket.write(connectPacketV5(`abuser-${n}`, Buffer.from([2, 0xff, 0x01]))),
  (socket, n) => void socket.write(connectPacketV5(`abuser-${n}`, Buffer.from([3, 0x21, 0, 0]))), // Receive Maximum 0
  (socket, n) => {
    socket.write(connectPacketV5(`abuser-${n}`));
    socket.write(publishPacketV5('abuse/t', Buffer.from('alias 0'), Buffer.from([3, 0x23, 0, 0]), { qos: 1, id: 1 }));
  },
  (socket, n) => {
    socket.write(connectPacketV5(`abuser-${n}`));
    socket.write(publishPacketV5('', Buffer.from('unknown alias'), Buffer.from([3, 0x23, 0, 5]), { qos: 1, id: 1 }));
  },
  (socket, n) => {
    socket.write(connectPacketV5(`abuser-${n}`));
    // A user property whose name claims 300 bytes inside a 10-byte properties section.
    socket.write(publishPacketV5('abuse/t', Buffer.from('x'), Buffer.from([10, 0x26, 0x01, 0x2c, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61]), { qos: 1, id: 1 }));
  },
];

test('over 40 misbehaving sockets (MQTT 3.1.1 and 5) do not disturb a well-behaved client: nothing lost, broker up', { timeout: 60_000 }, async (t) => {
  const broker = await startBroker();
  t.after(broker.close);
  const good = await connectAsync(broker.url, { clientId: 'good', reconnectPeriod: 0 });
  t.after(() => good.endAsync(true));
  const errors: Error[] = [];
  let closes = 0;
  good.on('error', (error) => errors.push(error));
  good.on('close', () => (closes += 1));
  await good.subscribeAsync('good/#', { qos: 1 });
  const received = collect(good);

  let abusing = true;
  const sent: string[] = [];
  const publishing = (async () => {
    for (let i = 0; abusing || i < 100; i++) {
      await good.publishAsync('good/t', `m${i}`, { qos: 1 });
      sent.push(`m${i}`);
      await sleep(2);
    }
  })();
  const abusers = abuses.length * 3;
  for (let wave = 0; wave < abusers; wave += 10) {
    await Promise.all(
      Array.from({ length: 10 }, async (_, i) => {
        const n = wave + i;
        const socket = await rawSocket(broker.port);
        await (abuses[n % abuses.length] as (typeof abuses)[number])(socket, n);
        await whenClosed(socket, 500);
        socket.destroy();
      }),
    );
  }
  abusing = false;
  await publishing;
  await until(() => received.length === sent.length, 'the good client to receive all it sent');

  assert.ok(sent.length >= 100);
  assert.deepEqual(
    received.map((m) => m.payload.toString()),
    sent,
  );
  assert.equal(closes, 0, 'the good client was disconnected');
  assert.deepEqual(errors, []);
  const reasons = new Set(broker.refusals.map((r) => r.reason));
  assert.ok(reasons.has('packet_too_large') && reasons.has('malformed_header'), JSON.stringify(broker.refusals));
  const late = await connectAsync(broker.url, { clientId: 'late', reconnectPeriod: 0 });
  await late.publishAsync('good/t', 'late', { qos: 1 });
  await late.endAsync();
  await until(() => received.at(-1)?.payload.toString() === 'late', 'a new client after the abuse');
});
