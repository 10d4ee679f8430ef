// An answer the client takes steadily is never cut for the time its size takes over the link:
// before, every answer had 30 s from its writing whatever its size, so a status page's history or
// a large /metrics fetched over a slow cellular link was cut short (a 500 KB answer at 100 kbit/s
// got 411 KB, then the socket was closed).
//
// The admin server runs in the test process with a /metrics handler that answers 40 MB: over
// loopback the kernel buffers of the two sockets take several MB at once, so only an answer far
// larger than they hold, read at 1 MB a second, takes the 40 s a small one takes over a slow link.
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { test } from 'node:test';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { AdminServer } from '../../src/runtime/admin-server.ts';
import { capturedEntries } from '../harness/log-lines.ts';

const ANSWER_BYTES = 40 * 1024 * 1024;
const READ_BYTES_PER_S = 1024 * 1024;

/** Reads the answer to `request` at `bytesPerS`: the bytes taken, and whether the socket was closed before the end of a chunked answer. */
function readSlowly(port: number, request: string, bytesPerS: number): Promise<{ bytes: number; whole: boolean; ms: number }> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const socket = connect({ host: '127.0.0.1', port });
    let bytes = 0;
    let tail = '';
    socket.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      tail = (tail + chunk.toString('latin1', Math.max(0, chunk.length - 16))).slice(-16);
      if (tail.endsWith('\r\n0\r\n\r\n')) {
        socket.destroy();
        resolve({ bytes, whole: true, ms: Date.now() - started });
        return;
      }
      // Paced from the start: the bytes taken so far, no faster than bytesPerS.
      const due = started + (bytes / bytesPerS) * 1000 - Date.now();
      if (due > 0) {
        socket.pause();
        setTimeout(() => socket.resume(), due);
      }
    });
    socket.once('error', reject);
    socket.once('close', () => resolve({ bytes, whole: false, ms: Date.now() - started }));
    socket.write(request);
  });
}

test('an answer taken steadily is taken whole, though it takes longer than 30 s', { timeout: 120_000 }, async () => {
  const { logger, entries } = capturedEntries('info');
  const text = 'x'.repeat(ANSWER_BYTES);
  const admin = await AdminServer.start(
    '127.0.0.1',
    0,
    { ready: () => ({ ready: true }), status: () => ({}), metrics: () => text },
    {},
    { logger, counters: new CounterRegistry() },
  );
  try {
    const taken = await readSlowly(admin.port, 'GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n', READ_BYTES_PER_S);
    assert.ok(taken.whole, `the whole answer was taken (${taken.bytes} bytes of over ${ANSWER_BYTES}, in ${taken.ms} ms)`);
    assert.ok(taken.ms > 35_000, `the answer took over 35 s to take (${taken.ms} ms): long enough to be cut at 30 s`);
    assert.ok(taken.bytes > ANSWER_BYTES);
    assert.deepEqual(
      entries.filter((line) => String(line['msg']).startsWith('admin socket closed')),
      [],
      'no socket was closed',
    );
  } finally {
    await admin.close();
  }
});
