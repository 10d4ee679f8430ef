// mqtt-packet parses and writes every MQTT packet for aedes. It is loaded here, before aedes
// (src/mqtt/embedded-broker.ts imports aedes only after this ran), with two of its
// dependencies swapped for the time of its loading:
//
// - `debug`: mqtt-packet calls its logger about 40 times per PUBLISH it parses and a dozen per
//   packet it writes. A logger of the `debug` package that is off still takes its arguments as
//   a rest array: in a profile of the gateway end to end that was 7% of all the memory it
//   allocated and 1% of its CPU, for nothing. Each namespace that is off when it loads gets a
//   function that does nothing; those DEBUG turns on (e.g. DEBUG=mqtt-packet:*) get the real
//   logger.
// - `bl`: its parser keeps what it has not parsed yet in `bl()`, a BufferList that is also a
//   duplex stream, which loads readable-stream (about 15 ms of a start). The parser uses only
//   the list (append, consume, slice, read*): it gets bl's plain BufferList, the same code
//   without the stream, with its reads of numbers and strings made without a Buffer each (see
//   LeanBufferList).
// - `process-nextick-args` (which is `process` on any Node since 1.8): its writer corks the
//   socket for each packet and uncorks it in a `nextTick` of its own, so a commit acking 500
//   messages queued 500 ticks (1.5% of the gateway's CPU end to end). It gets a `nextTick` that
//   runs every uncork asked for in a turn from one tick, in the order asked (see onOneTick).
//
// Only mqtt-packet's own references change: the modules are put back before this returns.
// Once loaded, its writer is told not to cache numbers: on the first packet it writes (the
// first device's CONNACK), it would make a Buffer for each of the 65,536 two-byte numbers, about
// 45 ms of the event loop and 7 MB of heap held for good, to save a 2-byte allocation per packet
// id and topic length it writes.
import { Module, createRequire } from 'node:module';

type CreateDebug = ((namespace: string) => Debugger) & Record<string, unknown>;

interface Debugger {
  (...args: unknown[]): void;
  enabled: boolean;
  namespace: string;
}

const require = createRequire(import.meta.url);

/** Whether mqtt-packet was loaded here (false: it was loaded before, and keeps what it has). */
export function loadLeanMqttPacket(): boolean {
  const packetPath = require.resolve('mqtt-packet');
  if (require.cache[packetPath] !== undefined) return false;
  const packetRequire = createRequire(packetPath);
  const debugPath = packetRequire.resolve('debug');
  const createDebug = require(debugPath) as CreateDebug;
  const cachedDebug = require.cache[debugPath];
  if (cachedDebug === undefined) return false;
  const quietly = Object.assign((namespace: string): Debugger => {
    const logger = createDebug(namespace);
    if (logger.enabled) return logger;
    return Object.assign(() => {}, { enabled: false, namespace });
  }, createDebug);
  const tickPath = packetRequire.resolve('process-nextick-args');
  const tickWasLoaded = require.cache[tickPath] !== undefined;
  if (!tickWasLoaded) require.cache[tickPath] = moduleOf(tickPath, { nextTick: onOneTick() });
  const blPath = packetRequire.resolve('bl');
  const blWasLoaded = require.cache[blPath] !== undefined;
  if (!blWasLoaded) require.cache[blPath] = moduleOf(blPath, leanBufferLists(createRequire(blPath)('./BufferList.js') as BufferListClass));
  cachedDebug.exports = quietly;
  try {
    (require(packetPath) as { writeToStream: { cacheNumbers: boolean } }).writeToStream.cacheNumbers = false;
  } finally {
    cachedDebug.exports = createDebug;
    if (!blWasLoaded) delete require.cache[blPath];
    if (!tickWasLoaded) delete require.cache[tickPath];
  }
  return true;
}

function moduleOf(path: string, exports: unknown): Module {
  const module = new Module(path);
  module.filename = path;
  module.exports = exports;
  module.loaded = true;
  return module;
}

/**
 * A `nextTick(fn, arg)` that runs the calls made in one turn from a single tick, in the order
 * they were made; one made while they run gets a tick of its own. mqtt-packet's writer calls
 * it only as `nextTick(uncork, stream)`: each socket is uncorked as many times as it was
 * corked, as before, so what it writes and in which order does not change.
 */
export function onOneTick(): (fn: (arg: unknown) => void, arg: unknown) => void {
  let due: unknown[] = [];
  const run = () => {
    const calls = due;
    due = [];
    for (let i = 0; i < calls.length; i += 2) (calls[i] as (arg: unknown) => void)(calls[i + 1]);
  };
  return (fn, arg) => {
    if (due.length === 0) process.nextTick(run);
    due.push(fn, arg);
  };
}

interface BufferList {
  readonly _bufs: Buffer[];
  readUInt8(offset: number): number;
  readUInt16BE(offset: number): number;
  readUInt32BE(offset: number): number;
  toString(encoding?: BufferEncoding, start?: number, end?: number): string;
}

type BufferListClass = new () => BufferList;

/**
 * bl's BufferList reads a number by slicing a Buffer of its bytes and reading that: mqtt-packet's
 * parser reads bytes one at a time (the fixed header, the remaining length, the packet id), so
 * a PUBLISH cost about seven Buffer objects, 10% of all the gateway allocated end to end. When
 * the bytes are in the list's first buffer (nearly always: a packet split between two reads of
 * the socket is the exception), these read them from it in place; otherwise bl's own methods do.
 * Returns a function making one, as `bl()` is called.
 */
export function leanBufferLists(Base: BufferListClass): () => BufferList {
  class LeanBufferList extends Base {
    override readUInt8(offset: number): number {
      const first = this._bufs[0];
      return first !== undefined && offset >= 0 && offset < first.length ? (first[offset] as number) : super.readUInt8(offset);
    }

    override readUInt16BE(offset: number): number {
      const first = this._bufs[0];
      return first !== undefined && offset >= 0 && offset + 2 <= first.length ? first.readUInt16BE(offset) : super.readUInt16BE(offset);
    }

    override readUInt32BE(offset: number): number {
      const first = this._bufs[0];
      return first !== undefined && offset >= 0 && offset + 4 <= first.length ? first.readUInt32BE(offset) : super.readUInt32BE(offset);
    }

    override toString(encoding?: BufferEncoding, start?: number, end?: number): string {
      const first = this._bufs[0];
      if (first !== undefined && start !== undefined && end !== undefined && start >= 0 && start <= end && end <= first.length) return first.toString(encoding, start, end);
      return super.toString(encoding, start, end);
    }
  }
  return () => new LeanBufferList();
}

/**
 * Whether the installed mqtt-packet has Ferry's patch (patches/mqtt-packet+9.0.2.patch): its
 * parser refuses a repeated MQTT 5 property, which unpatched reached aedes as an array (a
 * Session Expiry Interval of [5, 6] crashed the process).
 */
export function mqttPacketPatched(): boolean {
  const parser = createRequire(require.resolve('mqtt-packet'))('./parser.js') as { refusesDuplicateProperties?: unknown };
  return parser.refusesDuplicateProperties === true;
}
