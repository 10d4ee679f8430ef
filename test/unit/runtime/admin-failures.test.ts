// Every admin request a handler fails to answer is counted under its path and logged once per
// path a minute: before, the admin server had no logger, and a 500 left no trace but the answer.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CounterRegistry } from '../../../src/observability/counters.ts';
import { AdminServer } from '../../../src/runtime/admin-server.ts';
import { capturedEntries } from '../../harness/log-lines.ts';

test('a throwing readiness, status or reload is counted every time and logged once per path', { timeout: 10_000 }, async () => {
  const { logger, entries: lines } = capturedEntries('info');
  const counters = new CounterRegistry();
  const unreadable = () => {
    throw new Error('the buffer cannot be read');
  };
  const admin = await AdminServer.start('127.0.0.1', 0, { ready: unreadable, status: unreadable, reload: async () => unreadable() }, {}, { logger, counters });
  const base = `http://127.0.0.1:${admin.port}`;
  try {
    const post = { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' };
    for (let i = 0; i < 5; i++) {
      assert.equal((await fetch(`${base}/readyz`)).status, 503);
      assert.equal((await fetch(`${base}/api/status?x=${i}`)).status, 500);
      assert.equal((await fetch(`${base}/api/reload`, post)).status, 500);
    }
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
  } finally {
    await admin.close();
  }
  assert.deepEqual(counters.snapshot(), {
    'admin.requests.failed{path=/api/reload}': 5,
    'admin.requests.failed{path=/api/status}': 5,
    'admin.requests.failed{path=/readyz}': 5,
  });
  const first = lines.filter((line) => line['suppressed'] === undefined);
  assert.deepEqual(first.map((line) => `${line['method']} ${line['path']}: ${line['msg']}`).sort(), [
    'GET /api/status: admin request failed, answered 500',
    'GET /readyz: admin request failed, answered 503',
    'POST /api/reload: admin request failed, answered 500',
  ]);
  for (const line of first) assert.match(JSON.stringify(line['err']), /the buffer cannot be read/);
  assert.deepEqual(
    lines.filter((line) => line['suppressed'] !== undefined).map((line) => line['suppressed']),
    [4, 4, 4],
    'the rest summed up at close',
  );
});
