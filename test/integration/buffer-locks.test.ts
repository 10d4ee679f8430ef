// The gateway's buffer writes wait for another process's write lock (a `ferry buffer redrive`
// or `purge` chunk holds it for a moment) instead of failing at once: SQLite gives a deferred
// transaction that read before it writes SQLITE_BUSY without its busy timeout. The other
// process is a worker thread with its own connection, holding BEGIN IMMEDIATE for 300 ms.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import { Worker } from 'node:worker_threads';
import { bufferPath } from '../../src/buffer/open.ts';
import type { Delivery } from '../../src/core/delivery.ts';
import { trackedDeliveries } from '../conformance/deliveries.ts';
import { bufferSetup, until } from '../harness/buffer-setup.ts';
import { tempDirs } from '../harness/temp.ts';

const setup = bufferSetup(tempDirs('ferry-buffer-locks-'));

/** Another connection to the buffer that takes its write lock and holds it `holdMs`; resolves once it holds it. */
async function lockHolder(path: string, holdMs: number): Promise<{ released: Promise<unknown> }> {
  const worker = new Worker(
    `const { workerData, parentPort } = require('node:worker_threads');
     const Database = require('better-sqlite3');
     const db = new Database(workerData.path);
     db.exec('BEGIN IMMEDIATE');
     parentPort.postMessage('locked');
     Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, workerData.holdMs);
     db.exec('COMMIT');
     db.close();`,
    { eval: true, workerData: { path, holdMs } },
  );
  await once(worker, 'message');
  return { released: once(worker, 'exit') };
}

test('an append and a cursor commit wait for another connection holding the write lock, then succeed', { timeout: 20_000 }, async () => {
  const { dir, store, writer, counters, cleanup } = setup();
  try {
    const first = trackedDeliveries(1);
    writer.enqueue('b', first.deliveries[0] as Delivery);
    await first.settled();
    const holder = await lockHolder(bufferPath(dir), 300);
    const during = trackedDeliveries(3);
    for (const d of during.deliveries) writer.enqueue('b', d);
    await until(() => during.acked.length === 3, 'the appends after the lock was released');
    assert.equal(counters.get('buffer.errors{reason=append_failed}') ?? 0, 0, 'no append failed');
    assert.equal(writer.state, 'ok');
    await holder.released;
    const again = await lockHolder(bufferPath(dir), 300);
    const tail = store.tail('b');
    store.commit('b', 'out', tail);
    assert.equal(store.cursor('b', 'out'), tail);
    assert.equal(store.usage('b').messages, 0, 'the confirmed messages left the log');
    await again.released;
  } finally {
    cleanup();
  }
});
