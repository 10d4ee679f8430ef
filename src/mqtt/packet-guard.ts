import type { Duplex } from 'node:stream';
import { PacketScanner, type PacketRefusalReason } from './packet-scanner.ts';

/** Longest a farewell may take before the socket is destroyed anyway. */
const FAREWELL_TIMEOUT_MS = 5000;

export interface PacketGuardOptions {
  /** Largest whole packet accepted (fixed header included), in bytes. */
  readonly maxPacketBytes: number;
  /**
   * Called at most once, when a header is refused. The connection then ends: the reader
   * still gets the whole packets that came before, nothing from the refused packet on.
   */
  onRefuse(reason: PacketRefusalReason, detail: string): void;
  /**
   * Asked once, after `onRefuse`, for a way to end the connection that tells the client why
   * (an MQTT 5 DISCONNECT 0x95 after CONNACK): a function that does it, or undefined to have
   * the socket closed at once. The function runs after the reader was given the whole packets
   * before the refused one; nothing more is read from the socket meanwhile.
   */
  farewell?(reason: PacketRefusalReason): (() => void) | undefined;
}

/**
 * Limits the size of the MQTT packets a connection may send, which neither aedes nor
 * mqtt-packet does: as soon as a fixed header announces a packet larger than
 * `maxPacketBytes` (or a remaining length longer than 4 bytes), `onRefuse` is called and
 * the socket destroyed, before any of that body is buffered (if whole packets preceding it
 * are still waiting to be read, once the reader has read them). Returns the stream to hand
 * to aedes: `aedes.handle(guardConnection(socket, options))`. Call it before the socket
 * has read anything, i.e. synchronously in the server's 'connection' handler.
 *
 * It returns the socket itself, with `push` intercepted, rather than a Duplex wrapping it.
 * Every Readable receives its bytes through `push()` (net.Socket's and TLSSocket's handles
 * call `socket.push(buf)` on each read), so chunks are inspected before they enter any
 * buffer, and all else stays the socket's own: 'readable'/read() semantics, backpressure
 * (push returning false stops reading from the kernel), writes, cork, close and error
 * propagation, and properties such as `remoteAddress`, which the broker reads from
 * `client.conn`. A wrapping Duplex measured the same throughput through aedes
 * (bench/packet-guard.ts) but hides those properties, re-implements the stream plumbing
 * and adds a second read buffer and write queue per connection (heap: +750 bytes a
 * connection against +350 for this). Bytes put back with unshift() were already inspected.
 */
export function guardConnection(socket: Duplex, options: PacketGuardOptions): Duplex {
  const scanner = new PacketScanner(options.maxPacketBytes);
  const push = socket.push;
  let refused = false;
  socket.push = (chunk: unknown, encoding?: BufferEncoding): boolean => {
    if (refused) return false;
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk, encoding) : chunk;
    const verdict = bytes instanceof Uint8Array ? scanner.scan(bytes) : undefined;
    if (verdict === undefined) return push.call(socket, chunk, encoding);
    refused = true;
    let farewell: (() => void) | undefined;
    try {
      options.onRefuse(verdict.reason, verdict.detail);
      farewell = options.farewell?.(verdict.reason);
    } finally {
      const before = (bytes as Uint8Array).subarray(0, verdict.offset);
      if (farewell !== undefined) {
        if (before.length > 0) push.call(socket, before);
        // After the reader's 'readable' (a next tick): it parsed what came before.
        setImmediate(farewell);
        // A peer that does not read is not waited for long.
        const deadline = setTimeout(() => socket.destroy(), FAREWELL_TIMEOUT_MS);
        deadline.unref();
        socket.once('close', () => clearTimeout(deadline));
      } else if (before.length === 0 && socket.readableLength === 0) {
        socket.destroy();
      } else {
        // Whole packets precede the refused one: end the stream after them, so the reader
        // still handles them, and destroy once it has read them. Nothing more is read
        // from the socket meanwhile (a false return from push stops its reading).
        socket.once('end', () => socket.destroy());
        if (before.length > 0) push.call(socket, before);
        push.call(socket, null);
      }
    }
    return false;
  };
  return socket;
}
