import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PacketScanner } from '../../../src/mqtt/packet-scanner.ts';
import { connectPacket, packet, publishPacket } from '../../harness/mqtt-wire.ts';

/** Deterministic chunk sizes, so a failure replays. */
function* chunkSizes(seed: number): Generator<number> {
  let state = seed;
  for (;;) {
    state = (state * 1103515245 + 12345) % 2 ** 31;
    yield 1 + (state % 300);
  }
}

function feed(scanner: PacketScanner, stream: Buffer, seed: number) {
  const sizes = chunkSizes(seed);
  for (let at = 0; at < stream.length; ) {
    const end = Math.min(stream.length, at + (sizes.next().value as number));
    const verdict = scanner.scan(stream.subarray(at, end));
    if (verdict !== undefined) return { ...verdict, at: end };
    at = end;
  }
  return undefined;
}

// Remaining lengths on each side of every change in the number of length bytes.
const bodies = [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152].map((n) => packet(0x30, Buffer.alloc(n, 7)));
const stream = Buffer.concat([connectPacket('c'), packet(0xc0), packet(0xc0), ...bodies, publishPacket('t', Buffer.from('x'), { qos: 1, id: 9 })]);
const largest = 1 + 4 + 2_097_152;

test('finds every packet boundary whatever the chunking, refusing nothing within the limit', () => {
  for (let seed = 1; seed <= 20; seed++) {
    assert.equal(feed(new PacketScanner(largest), stream, seed), undefined, `seed ${seed}`);
  }
  const byteByByte = new PacketScanner(largest);
  for (let i = 0; i < stream.length; i++) assert.equal(byteByByte.scan(stream.subarray(i, i + 1)), undefined);
});

test('refuses the first packet over the limit as soon as its remaining length is complete', () => {
  for (let seed = 1; seed <= 20; seed++) {
    const refusal = feed(new PacketScanner(largest - 1), stream, seed);
    assert.equal(refusal?.reason, 'packet_too_large');
    assert.match(refusal.detail, new RegExp(`announces ${largest} bytes; the limit is ${largest - 1}`));
    // The header of the last big packet ends 5 bytes into it; no chunk reaching further in was needed.
    const headerEnd = stream.length - publishPacket('t', Buffer.from('x'), { qos: 1, id: 9 }).length - largest + 5;
    assert.ok(refusal.at >= headerEnd && refusal.at < headerEnd + 300, `refused at ${refusal.at}, header ends at ${headerEnd}`);
  }
});

test('a packet exactly at the limit passes; one byte more does not', () => {
  const exact = packet(0x30, Buffer.alloc(200));
  assert.equal(new PacketScanner(exact.length).scan(exact), undefined);
  assert.equal(new PacketScanner(exact.length - 1).scan(exact)?.reason, 'packet_too_large');
});

test('a remaining length that continues past 4 bytes is malformed, detected at the 4th', () => {
  const scanner = new PacketScanner(1 << 30);
  for (const byte of [0x10, 0x80, 0x80, 0x80]) assert.equal(scanner.scan(Buffer.from([byte])), undefined);
  assert.equal(scanner.scan(Buffer.from([0x80, 0x01]))?.reason, 'malformed_header');
  // The largest legal remaining length is 4 bytes long and passes when allowed.
  assert.equal(new PacketScanner(1 << 30).scan(Buffer.from([0x10, 0xff, 0xff, 0xff, 0x7f])), undefined);
});

test('a refusal tells how much of the chunk came before the refused packet', () => {
  const ping = packet(0xc0);
  const tooBig = Buffer.from([0x30, 0xff, 0x7f]);
  assert.equal(new PacketScanner(1000).scan(Buffer.concat([ping, ping, tooBig]))?.offset, 4);
  // A header begun in an earlier chunk: nothing of this chunk precedes it.
  const split = new PacketScanner(1000);
  assert.equal(split.scan(Buffer.concat([ping, tooBig.subarray(0, 2)])), undefined);
  assert.equal(split.scan(tooBig.subarray(2))?.offset, 0);
});
