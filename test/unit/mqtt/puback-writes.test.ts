// The PUBACKs aedes (as patched) sends: those made ready in one tick leave in one socket write,
// in the order they were readied, byte for byte what mqtt-packet writes for a plain PUBACK, for
// MQTT 3.1.1 and 5. A real broker on a TCP port; the devices are raw sockets, so every byte is seen.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { type AddressInfo, type Socket, connect, createServer } from 'node:net';
import { test } from 'node:test';
import { Aedes } from 'aedes';
import mqttPacket from 'mqtt-packet';
import { connectPacket, connectPacketV5, publishPacket, publishPacketV5 } from '../../harness/mqtt-wire.ts';
import { eventually } from '../../harness/eventually.ts';

/** Aedes whose publishes are all held until `release`, as the gateway holds them until its commit. */
async function startBroker() {
  const held: (() => void)[] = [];
  const aedes = await Aedes.createBroker({
    authorizePublish: (_client, _packet, callback) => {
      held.push(() => callback(null));
    },
  });
  /** Socket writes the broker made, per connection. */
  const writes: number[] = [];
  const server = createServer((socket) => {
    const index = writes.push(0) - 1;
    const write = socket.write.bind(socket) as (...args: unknown[]) => boolean;
    socket.write = ((...args: unknown[]) => {
      writes[index] = (writes[index] as number) + 1;
      return write(...args);
    }) as Socket['write'];
    aedes.handle(socket);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    held,
    writes,
    /** Lets every held publish through, in one tick, as a group commit acks its messages. */
    release: () => {
      for (const go of held.splice(0)) go();
    },
    close: async () => {
      server.close();
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
    },
  };
}

/** A raw device: every packet it receives, decoded. */
async function device(port: number, version: 4 | 5, hello: Buffer) {
  const socket = connect(port, '127.0.0.1');
  await once(socket, 'connect');
  const received: mqttPacket.Packet[] = [];
  const bytes: Buffer[] = [];
  const parser = mqttPacket.parser({ protocolVersion: version });
  parser.on('packet', (p: mqttPacket.Packet) => received.push(p));
  socket.on('data', (chunk: Buffer) => {
    bytes.push(chunk);
    parser.parse(chunk);
  });
  socket.write(hello);
  await eventually(() => assert.equal(received[0]?.cmd, 'connack'));
  return { socket, received, bytes: () => Buffer.concat(bytes) };
}

// Packet ids across both bytes (0x00ff, 0x0100, 0xfffe...), not in order of value.
const IDS = [1, 2, 255, 256, 0x1234, 0xfffe, 0xffff, 3, ...Array.from({ length: 200 }, (_, i) => 1000 + i)];

for (const version of [4, 5] as const) {
  test(`MQTT ${version === 4 ? '3.1.1' : '5'}: PUBACKs readied in one tick leave in one write, in order, as mqtt-packet writes them`, async (t) => {
    const broker = await startBroker();
    t.after(broker.close);
    const d = await device(broker.port, version, version === 4 ? connectPacket('acks') : connectPacketV5('acks'));
    t.after(() => d.socket.destroy());
    const connackBytes = d.bytes().length;
    const publishes = IDS.map((id) =>
      version === 4 ? publishPacket('t/acks', Buffer.from(`m${id}`), { qos: 1, id }) : publishPacketV5('t/acks', Buffer.from(`m${id}`), Buffer.from([0]), { qos: 1, id }),
    );
    d.socket.write(Buffer.concat(publishes));
    await eventually(() => assert.equal(broker.held.length, IDS.length));
    const writesBefore = broker.writes[0] as number;
    broker.release();

    await eventually(() => assert.equal(d.received.length, 1 + IDS.length));
    const acks = d.received.slice(1) as mqttPacket.IPubackPacket[];
    assert.deepEqual(
      acks.map((p) => [p.cmd, p.messageId]),
      IDS.map((id) => ['puback', id]),
    );
    // MQTT 5 lets a PUBACK leave out a Success reason code with no properties (3.4.2.1).
    const expected = Buffer.concat(
      IDS.map((id) => mqttPacket.generate({ cmd: 'puback', messageId: id, ...(version === 5 ? { reasonCode: 0 } : {}) }, { protocolVersion: version })),
    );
    assert.deepEqual(d.bytes().subarray(connackBytes), expected);
    // mqtt-packet alone wrote three pieces per PUBACK (header, length, packet id).
    assert.equal((broker.writes[0] as number) - writesBefore, 1);
  });
}

test('a PUBACK readied alone leaves at once; those readied later together leave together', async (t) => {
  const broker = await startBroker();
  t.after(broker.close);
  const d = await device(broker.port, 4, connectPacket('ticks'));
  t.after(() => d.socket.destroy());
  d.socket.write(Buffer.concat([1, 2, 3].map((id) => publishPacket('t/ticks', Buffer.from('x'), { qos: 1, id }))));
  await eventually(() => assert.equal(broker.held.length, 3));
  const writesBefore = broker.writes[0] as number;
  const [first, ...rest] = broker.held.splice(0) as (() => void)[];
  first?.();
  await eventually(() =>
    assert.deepEqual(
      d.received.slice(1).map((p) => (p as mqttPacket.IPubackPacket).messageId),
      [1],
    ),
  );
  assert.equal((broker.writes[0] as number) - writesBefore, 1);
  for (const go of rest) go();
  await eventually(() =>
    assert.deepEqual(
      d.received.slice(1).map((p) => (p as mqttPacket.IPubackPacket).messageId),
      [1, 2, 3],
    ),
  );
  assert.equal((broker.writes[0] as number) - writesBefore, 2);
});
