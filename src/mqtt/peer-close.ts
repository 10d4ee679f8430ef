import type { Duplex } from 'node:stream';

/**
 * How long a connection whose peer closed may go on unread before it is taken for closed. A
 * group commit the reader waits for ends well within it; a message held because a bridge is
 * full under `overflow: refuse` (or the disk is) does not.
 */
export const PEER_CLOSE_GRACE_MS = 500;

/**
 * Notices a device's close while its connection is not being read. aedes reads a client's
 * socket only between batches of packets it has finished handling, and a QoS 1 or 2 PUBLISH is
 * finished only once its message is stored: while the buffer holds a device's messages (a bridge
 * full under `overflow: refuse`, a full disk) nothing more is read from its socket. Node emits
 * 'end' for the peer's FIN only once everything before it was read, so a device that closed with
 * bytes still unread (its DISCONNECT, a PINGREQ, more messages) stayed connected: its socket in
 * CLOSE-WAIT, counted in `mqtt.clients`, its messages held and `/readyz` failing, until its
 * keep-alive ran out, and for good with keep-alive 0.
 *
 * The FIN reaches the stream as `push(null)` (net.Socket, TLSSocket and the WebSocket stream
 * all end that way; packet-guard.ts intercepts `push` the same way). When bytes are still unread
 * then and the reader has not read up to the end `graceMs` later, they are read and given to
 * `onUnread` (for the broker to handle what the device sent before it closed: a DISCONNECT means
 * no will), and the stream is destroyed: aedes closes the client as for any dropped connection,
 * and the buffer drops the messages it held for it at its next retry, as for any connection that
 * closed before its PUBACK: the device still has them and sends them again. A close with nothing
 * left unread is Node's own 'end'.
 *
 * Not noticed this way: a FIN behind more unread bytes than the stream buffers (Node stops
 * reading from the kernel past its highWaterMark, 64 KiB for a socket), which is seen once the
 * hold ends or at the keep-alive.
 */
export function watchPeerClose(stream: Duplex, graceMs: number, onUnread: (rest: Buffer) => void): void {
  const push = stream.push;
  stream.push = (chunk: unknown, encoding?: BufferEncoding): boolean => {
    if (chunk !== null) return push.call(stream, chunk, encoding);
    const pushed = push.call(stream, null);
    if (stream.readableLength > 0) unreadAtClose(stream, graceMs, onUnread);
    return pushed;
  };
}

function unreadAtClose(stream: Duplex, graceMs: number, onUnread: (rest: Buffer) => void): void {
  const timer = setTimeout(() => {
    if (stream.destroyed || stream.readableEnded) return;
    // All of it at once: a socket's buffer, which is bounded by its highWaterMark.
    const rest: unknown = stream.read();
    try {
      if (Buffer.isBuffer(rest)) onUnread(rest);
    } finally {
      stream.destroy();
    }
  }, graceMs);
  // The check must not keep a stopping process alive.
  timer.unref();
  stream.once('close', () => clearTimeout(timer));
}
