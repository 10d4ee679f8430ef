import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isUuidV7 } from '../../../src/core/envelope.ts';
import { recordId } from '../../../src/kafka/record-id.ts';

test("a record's id is a UUIDv7 made from its topic, partition, offset and time, the same each time", () => {
  const id = recordId('commands', 0, '42', 1_764_000_000_123);
  assert.ok(isUuidV7(id), id);
  assert.equal(recordId('commands', 0, '42', 1_764_000_000_123), id);
  assert.equal(id.slice(0, 13), `${(1_764_000_000_123).toString(16).padStart(12, '0').slice(0, 8)}-${(1_764_000_000_123).toString(16).padStart(12, '0').slice(8)}`);
  const others = [recordId('commands', 1, '42', 1_764_000_000_123), recordId('commands', 0, '43', 1_764_000_000_123), recordId('other', 0, '42', 1_764_000_000_123)];
  // A topic made again starts its offsets at 0 again: the time tells its records apart.
  others.push(recordId('commands', 0, '42', 1_764_000_000_124));
  assert.equal(new Set([id, ...others]).size, 5);
});

test('a record without a usable time gets the time 0, still a UUIDv7', () => {
  for (const timestamp of [-1, Number.NaN, 2 ** 48]) {
    const id = recordId('t', 0, '0', timestamp);
    assert.ok(isUuidV7(id), id);
    assert.ok(id.startsWith('00000000-0000-7'), id);
  }
});
