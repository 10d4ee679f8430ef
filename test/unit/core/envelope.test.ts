import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { test } from 'node:test';
import { parse, v7, validate, version } from 'uuid';
import { createEnvelope, formatUuid, newId } from '../../../src/core/envelope.ts';

test('ids are valid UUIDv7, unique, and increase within a process (across the random pool refills)', () => {
  const ids = Array.from({ length: 10_000 }, () => newId());
  for (const id of ids) {
    assert.ok(validate(id), id);
    assert.equal(version(id), 7);
  }
  assert.equal(new Set(ids).size, ids.length);
  for (let i = 1; i < ids.length; i++) assert.ok((ids[i] as string) > (ids[i - 1] as string), `${ids[i]} after ${ids[i - 1]}`);
});

test('an id carries the time it was made', () => {
  const before = Date.now();
  const id = newId();
  const msecs = Number.parseInt(id.replace(/-/g, '').slice(0, 12), 16);
  assert.ok(msecs >= before && msecs <= Date.now() + 1, `${msecs} not in [${before}, now]`);
});

test('an envelope gets a new id unless it has one', () => {
  const origin = { source: 'mqtt' };
  const a = createEnvelope({ topic: 't', payload: 'x', origin });
  const b = createEnvelope({ topic: 't', payload: 'x', origin });
  assert.notEqual(a.id, b.id);
  assert.equal(createEnvelope({ topic: 't', payload: 'x', origin, id: a.id }).id, a.id);
});

test('an envelope has a key only when given one, and headers always (one frozen empty object when none)', () => {
  const origin = { source: 'mqtt' };
  const plain = createEnvelope({ topic: 't', payload: 'x', origin });
  const keyed = createEnvelope({ topic: 't', payload: 'x', origin, key: 'k', headers: { a: '1' } });
  assert.equal('key' in plain, false);
  assert.equal(keyed.key, 'k');
  assert.deepEqual(keyed.headers, { a: '1' });
  assert.deepEqual(plain.headers, {});
  assert.ok(Object.isFrozen(plain.headers));
  assert.deepEqual(createEnvelope({ topic: 't', payload: 'x', origin, headers: undefined }).headers, {});
  assert.deepEqual(Object.keys(keyed), ['id', 'topic', 'payload', 'headers', 'timestamp', 'origin', 'key']);
});

test('ids are written as uuid writes them', () => {
  const random = new Uint8Array(16);
  const bytes = new Uint8Array(16);
  for (let i = 0; i < 2_000; i++) {
    randomFillSync(random);
    const options = { random, msecs: 1_700_000_000_000 + i * 7_919, seq: (i * 2_654_435_761) | 0 };
    const text = v7(options);
    assert.equal(formatUuid(v7(options, bytes)), text);
    assert.equal(formatUuid(parse(text)), text);
  }
});
