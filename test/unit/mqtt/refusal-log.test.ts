import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { pino } from 'pino';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RefusalLog } from '../../../src/mqtt/refusal-log.ts';
import { openFileLimit } from '../../../src/config/file-limit.ts';
import { defaultMaxConnections } from '../../../src/runtime/broker-options.ts';
import { tempDirs } from '../../harness/temp.ts';
import { eventually } from '../../harness/eventually.ts';

function capture(): { logger: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n')) if (line !== '') lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { logger: pino({ level: 'info' }, sink), lines };
}

const until = (check: () => boolean) => eventually(() => assert.ok(check()), { timeoutMs: 5000 });

test('the first refusal of a party and reason is logged, the rest summed up in one line per interval', async () => {
  const { logger, lines } = capture();
  const log = new RefusalLog({ logger, intervalMs: 100 });
  for (let i = 0; i < 1000; i++) log.refused({ who: { clientId: 'a' }, reason: 'acl', message: 'subscription refused by the ACL', detail: { filter: `f/${i}` } });
  log.refused({ who: { clientId: 'b' }, reason: 'acl', message: 'subscription refused by the ACL' });
  log.refused({ who: { clientId: 'a' }, reason: 'invalid_filter', message: 'subscription refused: invalid filter' });
  await until(() => lines.some((l) => l['suppressed'] !== undefined));
  const full = lines.filter((l) => l['suppressed'] === undefined);
  assert.deepEqual(
    full.map((l) => [l['clientId'], l['reason']]),
    [
      ['a', 'acl'],
      ['b', 'acl'],
      ['a', 'invalid_filter'],
    ],
  );
  assert.equal(full[0]?.['filter'], 'f/0');
  const summary = lines.filter((l) => l['suppressed'] !== undefined);
  assert.equal(summary.length, 1);
  assert.equal(summary[0]?.['suppressed'], 999);
  assert.equal(summary[0]?.['clientId'], 'a');
  log.close();
});

test('a party quiet for an interval is logged in full again; past maxKeys, others are summed up per reason', async () => {
  const { logger, lines } = capture();
  const log = new RefusalLog({ logger, intervalMs: 50, maxKeys: 2 });
  log.refused({ who: { address: '192.0.2.1' }, reason: 'too_many_sockets', message: 'connection refused' });
  for (let i = 0; i < 10; i++) log.refused({ who: { address: `192.0.2.${10 + i}` }, reason: 'too_many_sockets', message: 'connection refused' });
  assert.equal(lines.length, 2, 'two parties tracked one by one');
  await until(() => lines.some((l) => l['suppressed'] === 9));
  assert.equal(lines.find((l) => l['suppressed'] === 9)?.['reason'], 'too_many_sockets');
  // Once an interval passed without refusals of 192.0.2.1 it is forgotten: its next one is logged in full.
  const full = () => lines.filter((l) => l['address'] === '192.0.2.1' && l['suppressed'] === undefined).length;
  await eventually(
    () => {
      if (full() === 1) log.refused({ who: { address: '192.0.2.1' }, reason: 'too_many_sockets', message: 'connection refused' });
      assert.equal(full(), 2);
    },
    { timeoutMs: 5000, intervalMs: 120 },
  );
  log.close();
});

test("defaultMaxConnections leaves a reserve of max(256, limit/10) and shares the rest among the listeners; the limit is /proc/self/limits' soft one", () => {
  assert.equal(defaultMaxConnections(1024, 1), 768);
  assert.equal(defaultMaxConnections(65536, 3), 19660);
  assert.equal(defaultMaxConnections(undefined, 1), undefined);
  const dir = tempDirs('ferry-limits-')();
  const file = join(dir, 'limits');
  writeFileSync(file, 'Limit                     Soft Limit           Hard Limit           Units\nMax open files            4096                 524288               files\n');
  assert.equal(openFileLimit(file), 4096);
  writeFileSync(file, 'Max open files            unlimited            unlimited            files\n');
  assert.equal(openFileLimit(file), undefined);
  assert.equal(openFileLimit(join(dir, 'missing')), undefined);
});
