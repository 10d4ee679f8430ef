import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { leanBufferLists, onOneTick } from '../../../src/mqtt/lean-mqtt-packet.ts';

// Each case runs in a Node process of its own: what it checks is how modules load.
const leanModule = fileURLToPath(new URL('../../../src/mqtt/lean-mqtt-packet.ts', import.meta.url));

/** Loads mqtt-packet (through lean-mqtt-packet first, or not), parses a PUBLISH; returns stderr, where `debug` writes. */
function parseIn(options: { readonly lean: boolean; readonly debugEnv?: string; readonly enableLater?: string }): { stderr: string; stdout: string } {
  const script = `
    import { createRequire } from 'node:module';
    const require = createRequire(${JSON.stringify(leanModule)});
    const createDebug = require('debug');
    ${options.lean ? `(await import(${JSON.stringify(leanModule)})).loadLeanMqttPacket();` : ''}
    console.log(require('debug') === createDebug ? 'debug restored' : 'debug replaced');
    ${options.enableLater === undefined ? '' : `createDebug.enable(${JSON.stringify(options.enableLater)});`}
    const mqtt = require('mqtt-packet');
    const parser = mqtt.parser({ protocolVersion: 4 });
    let parsed = 0;
    parser.on('packet', () => { parsed += 1; });
    // A PUBLISH in three pieces, then two packets in one chunk: the list keeps what is not parsed yet.
    const publish = mqtt.generate({ cmd: 'publish', topic: 'a/b', payload: Buffer.from('x'.repeat(300)), qos: 1, messageId: 7 });
    for (const piece of [publish.subarray(0, 1), publish.subarray(1, 40), publish.subarray(40)]) parser.parse(piece);
    parser.parse(Buffer.concat([mqtt.generate({ cmd: 'pingreq' }), mqtt.generate({ cmd: 'puback', messageId: 9 })]));
    console.log('parsed ' + parsed);
    const loaded = Object.keys(require.cache);
    console.log('list ' + parser._list.constructor.name + (typeof parser._list.pipe === 'function' ? ' stream' : ''));
    console.log('readable-stream ' + (loaded.some((p) => p.includes('/readable-stream/')) ? 'loaded' : 'not loaded'));
    console.log('numbers cached ' + Object.keys(require(createRequire(require.resolve('mqtt-packet')).resolve('./numbers.js')).cache).length);
    console.log('bl later ' + (typeof require(createRequire(require.resolve('mqtt-packet')).resolve('bl'))().pipe === 'function' ? 'stream' : 'plain'));
  `;
  const env = { ...process.env };
  delete env.DEBUG;
  if (options.debugEnv !== undefined) env.DEBUG = options.debugEnv;
  const result = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', env });
  assert.equal(result.status, 0, result.stderr);
  return { stderr: result.stderr, stdout: result.stdout };
}

test("mqtt-packet's loggers that are off when it loads do nothing, even when turned on later", () => {
  const quiet = parseIn({ lean: true, enableLater: 'mqtt-packet:*' });
  assert.match(quiet.stdout, /debug restored/);
  assert.match(quiet.stdout, /parsed 3/);
  assert.doesNotMatch(quiet.stderr, /mqtt-packet:parser/);
  // Without it, the same late enable makes them write: the check above can fail.
  const plain = parseIn({ lean: false, enableLater: 'mqtt-packet:*' });
  assert.match(plain.stderr, /mqtt-packet:parser/);
});

test('a namespace DEBUG turns on at start keeps its real logger', () => {
  const { stderr, stdout } = parseIn({ lean: true, debugEnv: 'mqtt-packet:parser' });
  assert.match(stdout, /parsed 3/);
  assert.match(stderr, /mqtt-packet:parser/);
});

test("mqtt-packet's writer does not make its 65,536 number buffers on the first packet it writes", () => {
  const lean = parseIn({ lean: true });
  assert.match(lean.stdout, /parsed 3/);
  assert.match(lean.stdout, /numbers cached 0\n/);
  const plain = parseIn({ lean: false });
  assert.match(plain.stdout, /numbers cached 65536\n/);
});

test("mqtt-packet's parser keeps its bytes in bl's plain BufferList: readable-stream is not loaded, and bl is the stream again for anyone after", () => {
  const lean = parseIn({ lean: true });
  assert.match(lean.stdout, /parsed 3/);
  assert.match(lean.stdout, /list LeanBufferList\n/);
  assert.match(lean.stdout, /readable-stream not loaded/);
  assert.match(lean.stdout, /bl later stream/);
  // Loaded as it comes, the parser's list is the stream, and it loads readable-stream.
  const plain = parseIn({ lean: false });
  assert.match(plain.stdout, /parsed 3/);
  assert.match(plain.stdout, /list BufferListStream stream/);
  assert.match(plain.stdout, /readable-stream loaded/);
});

test("the lean list's reads of numbers and strings equal bl's, in its first buffer and across buffers", () => {
  const require = createRequire(import.meta.url);
  const BufferList = require(createRequire(require.resolve('mqtt-packet')).resolve('bl/BufferList.js'));
  const bytes = Buffer.from(Array.from({ length: 64 }, (_, i) => (i * 37 + 11) & 0xff));
  // The same bytes in one buffer, and split at each place into two and three.
  const splits = [[64], ...Array.from({ length: 63 }, (_, i) => [i + 1, 64]), ...Array.from({ length: 20 }, (_, i) => [i + 1, i + 30, 64])];
  for (const ends of splits) {
    const lean = leanBufferLists(BufferList)();
    const plain = new BufferList();
    let from = 0;
    for (const end of ends) {
      (lean as unknown as { append(b: Buffer): void }).append(bytes.subarray(from, end));
      plain.append(bytes.subarray(from, end));
      from = end;
    }
    for (let offset = 0; offset < 64; offset++) {
      assert.equal(lean.readUInt8(offset), plain.readUInt8(offset), `readUInt8(${offset}) split at ${ends}`);
      if (offset + 2 <= 64) assert.equal(lean.readUInt16BE(offset), plain.readUInt16BE(offset), `readUInt16BE(${offset}) split at ${ends}`);
      if (offset + 4 <= 64) assert.equal(lean.readUInt32BE(offset), plain.readUInt32BE(offset), `readUInt32BE(${offset}) split at ${ends}`);
      assert.equal(lean.toString('latin1', offset, Math.min(64, offset + 9)), plain.toString('latin1', offset, Math.min(64, offset + 9)));
    }
    // Past the end, both refuse alike.
    assert.throws(() => plain.readUInt16BE(63));
    assert.throws(() => lean.readUInt16BE(63));
  }
});

/** Writes three PUBACKs to each of two sockets in one turn; returns what each got, in how many writes, and the ticks queued. */
function writeIn(lean: boolean): { bytes: string[]; writes: number[]; ticks: number; expected: string[] } {
  const script = `
    import { createRequire } from 'node:module';
    import { Writable } from 'node:stream';
    const require = createRequire(${JSON.stringify(leanModule)});
    // Counted from before mqtt-packet loads: it keeps the nextTick it found then.
    let ticks = 0;
    let counting = false;
    const nextTick = process.nextTick;
    process.nextTick = (...args) => { if (counting) ticks += 1; return nextTick(...args); };
    ${lean ? `(await import(${JSON.stringify(leanModule)})).loadLeanMqttPacket();` : ''}
    const mqtt = require('mqtt-packet');
    const sockets = [0, 1].map(() => {
      const socket = new Writable({
        writev(chunks, done) { socket.got.push(Buffer.concat(chunks.map((c) => c.chunk))); done(); },
        write(chunk, _encoding, done) { socket.got.push(chunk); done(); },
      });
      socket.got = [];
      return socket;
    });
    const expected = ['', ''];
    counting = true;
    for (let id = 1; id <= 3; id++) for (const [i, socket] of sockets.entries()) {
      mqtt.writeToStream({ cmd: 'puback', messageId: id * 10 + i }, socket, { protocolVersion: 4 });
      expected[i] += mqtt.generate({ cmd: 'puback', messageId: id * 10 + i }).toString('hex');
    }
    const counted = ticks;
    counting = false;
    await new Promise((resolve) => setTimeout(resolve, 20));
    console.log(JSON.stringify({ bytes: sockets.map((s) => Buffer.concat(s.got).toString('hex')), writes: sockets.map((s) => s.got.length), ticks: counted, expected }));
  `;
  const result = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(result.status, 0, result.stderr);
  return JSON.parse(result.stdout);
}

test("mqtt-packet's writer uncorks every socket written to in a turn from one tick: the same bytes, in one write per socket", () => {
  const lean = writeIn(true);
  assert.deepEqual(lean.bytes, lean.expected);
  assert.deepEqual(lean.writes, [1, 1]);
  assert.equal(lean.ticks, 1);
  // Loaded as it comes: the same bytes and writes, and a tick per packet.
  const plain = writeIn(false);
  assert.deepEqual(plain.bytes, plain.expected);
  assert.deepEqual(plain.writes, [1, 1]);
  assert.equal(plain.ticks, 6);
});

test('onOneTick runs the calls of a turn from one tick, in order; a call made while they run gets a tick of its own', async () => {
  const nextTick = onOneTick();
  const ran: string[] = [];
  const real = process.nextTick;
  let ticks = 0;
  process.nextTick = ((...args: Parameters<typeof real>) => {
    ticks += 1;
    return real(...args);
  }) as typeof real;
  try {
    nextTick((x) => {
      ran.push(String(x));
      const before = ticks;
      nextTick((y) => ran.push(String(y)), 'c');
      ran.push(`ticks queued ${ticks - before}`);
    }, 'a');
    nextTick((x) => ran.push(String(x)), 'b');
    assert.deepEqual(ran, []);
    assert.equal(ticks, 1);
    await new Promise<void>((resolve) => setImmediate(resolve));
  } finally {
    process.nextTick = real;
  }
  assert.deepEqual(ran, ['a', 'ticks queued 1', 'b', 'c']);
});
