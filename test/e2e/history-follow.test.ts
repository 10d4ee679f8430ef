// `ferry history --follow` prints every message written while it follows, however many come
// between two of its reads (it read the newest 10,000 after the last one printed, and skipped
// the rest). A history written here, and the CLI reading it as it grows.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { createEnvelope } from '../../src/core/envelope.ts';
import { HistoryWriter } from '../../src/sqlite/history-store.ts';
import { eventually } from '../harness/eventually.ts';
import { spawnFerryGroup } from '../harness/ferry-process.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-history-follow-');

const readings = (from: number, n: number) =>
  Array.from({ length: n }, (_, i) => createEnvelope({ topic: `devices/d1/telemetry/${from + i}`, payload: String(from + i), origin: { source: 'test', clientId: 'd1' } }));

test('ferry history --follow prints each of 15,005 messages once, in order, 15,000 of them written at once while it follows', { timeout: 60_000 }, async () => {
  const dir = tempDir();
  writeFileSync(join(dir, 'gateway.yaml'), 'bridges: []\n');
  const writer = new HistoryWriter(dir, 'normal');
  // In a process group of its own, killed with the test.
  const run = spawnFerryGroup(['history', '--config', join(dir, 'gateway.yaml'), '--data-dir', dir, '--follow', '--json']);
  const printed = () =>
    run
      .stdout()
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => Number((JSON.parse(line) as { payload: string }).payload));
  try {
    await writer.append('b', readings(0, 5), 1_000_000);
    await eventually(() => assert.equal(printed().length, 5), { timeoutMs: 20_000 });
    await writer.append('b', readings(5, 15_000), 1_000_000);
    await eventually(() => assert.equal(printed().length, 15_005), { timeoutMs: 20_000 });
    await sleep(600);
    assert.deepEqual(
      printed(),
      Array.from({ length: 15_005 }, (_, i) => i),
    );
  } finally {
    run.stop();
    writer.close();
  }
});
