import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type NotedMessage, ResendMemory } from '../../../src/mqtt/resend-memory.ts';

const payload = (text: string) => Buffer.from(text);

test('a resend repeats a stored message of the same client, login, packet id, topic and payload, within the window', async () => {
  let now = 1_000;
  const memory = new ResendMemory({ windowMs: 60_000, maxEntries: 100, now: () => now });
  memory.stored(memory.note('dev-1', 'u1', 7, 'devices/dev-1/t', payload('{"seq":1}')));
  const found = memory.lookup('dev-1', 'u1', 7, 'devices/dev-1/t', payload('{"seq":1}'));
  assert.ok(found);
  assert.equal(await memory.outcome(found), true);
  for (const [clientId, username, id, topic, body] of [
    ['dev-2', 'u1', 7, 'devices/dev-1/t', '{"seq":1}'],
    ['dev-1', 'u2', 7, 'devices/dev-1/t', '{"seq":1}'],
    ['dev-1', 'u1', 8, 'devices/dev-1/t', '{"seq":1}'],
    ['dev-1', 'u1', 7, 'devices/dev-1/x', '{"seq":1}'],
    ['dev-1', 'u1', 7, 'devices/dev-1/t', '{"seq":2}'],
    ['dev-1', 'u1', 7, 'devices/dev-1/t', '{"seq":1} '],
  ] as const) {
    assert.equal(memory.lookup(clientId, username, id, topic, payload(body)), undefined, `${clientId} ${username} ${id} ${topic} ${body}`);
  }
  now += 60_001;
  assert.equal(memory.lookup('dev-1', 'u1', 7, 'devices/dev-1/t', payload('{"seq":1}')), undefined, 'past the window');
});

test('a message not settled yet is found, and its outcome waited for; one not stored is not a match', async () => {
  const memory = new ResendMemory({ windowMs: 60_000, maxEntries: 100 });
  const first = memory.note('dev-1', undefined, 1, 't', payload('a'));
  const pending = memory.lookup('dev-1', undefined, 1, 't', payload('a'));
  assert.ok(pending);
  const outcome = memory.outcome(pending);
  memory.notStored(first);
  assert.equal(await outcome, false);
  assert.equal(memory.lookup('dev-1', undefined, 1, 't', payload('a')), undefined, 'not stored: a resend must be taken');
  // A later copy under the same id replaces the first; the first settling late does not remove it.
  const older = memory.note('dev-1', undefined, 2, 't', payload('b'));
  const newer = memory.note('dev-1', undefined, 2, 't', payload('b'));
  memory.notStored(older);
  assert.equal(memory.lookup('dev-1', undefined, 2, 't', payload('b')), newer);
  memory.stored(newer);
  assert.equal(await memory.outcome(memory.lookup('dev-1', undefined, 2, 't', payload('b')) as NotedMessage), true);
});

test('large payloads are compared by hash too; memory stays within maxEntries', () => {
  const memory = new ResendMemory({ windowMs: 60_000, maxEntries: 10 });
  const big = Buffer.alloc(100_000, 1);
  memory.stored(memory.note('dev-1', undefined, 1, 't', big));
  const other = Buffer.from(big);
  other[50_000] = 2;
  assert.ok(memory.lookup('dev-1', undefined, 1, 't', Buffer.from(big)));
  assert.equal(memory.lookup('dev-1', undefined, 1, 't', other), undefined);
  for (let id = 2; id < 1000; id++) memory.stored(memory.note('dev-1', undefined, id, 't', payload(String(id))));
  assert.ok(memory.size <= 10, String(memory.size));
  assert.ok(memory.lookup('dev-1', undefined, 999, 't', payload('999')), 'the newest are kept');
  assert.equal(memory.lookup('dev-1', undefined, 1, 't', big), undefined, 'the oldest are forgotten');
});

test('a message some bridges stored and others did not is found, with the bridges that stored it, until its slot is reused', async () => {
  const memory = new ResendMemory({ windowMs: 60_000, maxEntries: 2 });
  const first = memory.note('dev-1', undefined, 1, 't', payload('a'));
  const waiting = memory.outcome(first);
  memory.partlyStored(first, new Set(['history']));
  memory.notStored(first); // the upstream's own nack after it: the partial outcome stays
  assert.deepEqual(await waiting, new Set(['history']));
  const found = memory.lookup('dev-1', undefined, 1, 't', payload('a'));
  assert.equal(found, first);
  assert.deepEqual(await memory.outcome(first), new Set(['history']));

  // Stored by none is not stored.
  const second = memory.note('dev-1', undefined, 2, 't', payload('b'));
  memory.partlyStored(second, new Set());
  assert.equal(memory.lookup('dev-1', undefined, 2, 't', payload('b')), undefined);

  // Two more messages take both slots: the first is forgotten, with the bridges that stored it.
  memory.note('dev-1', undefined, 3, 't', payload('c'));
  memory.note('dev-1', undefined, 4, 't', payload('d'));
  assert.equal(memory.lookup('dev-1', undefined, 1, 't', payload('a')), undefined);
  assert.equal(await memory.outcome(first), false);
});

test('found or not as a plain model says, over many clients, packet ids and reused slots (the index under collisions)', () => {
  // A small ring, so that its index is small and crowded: entries collide, are removed from
  // the middle of probe runs and taken over by a later message under the same packet id.
  const CAPACITY = 48;
  const memory = new ResendMemory({ windowMs: 60_000, maxEntries: CAPACITY });
  /** The model: every note in order; a lookup finds the newest of the last CAPACITY with the same client and packet id. */
  const notes: { clientId: string; id: number; body: string; ticket: NotedMessage }[] = [];
  let state = 7;
  const random = (n: number) => {
    state = (state * 1103515245 + 12345) % 2 ** 31;
    return (state >> 8) % n;
  };
  const clients = Array.from({ length: 40 }, (_, i) => `dev-${i}`);
  for (let step = 0; step < 20_000; step++) {
    const clientId = clients[random(clients.length)] as string;
    const id = 1 + random(step % 2 === 0 ? 5 : 65_535);
    if (random(3) > 0) {
      const body = `${clientId}:${id}:${step}`;
      const ticket = memory.note(clientId, undefined, id, 't', payload(body));
      memory.stored(ticket);
      notes.push({ clientId, id, body, ticket });
      continue;
    }
    const kept = notes.slice(-CAPACITY);
    const newest = kept.findLast((n) => n.clientId === clientId && n.id === id);
    const body = newest?.body ?? 'none';
    assert.equal(memory.lookup(clientId, undefined, id, 't', payload(body)), newest?.ticket, `step ${step}: ${clientId} ${id}`);
    const pairs = new Set(kept.map((n) => `${n.clientId} ${n.id}`));
    assert.equal(memory.size, pairs.size, `step ${step}: entries`);
  }
});

test('packet ids no PUBLISH can carry (a packet cut short is parsed with -1) are kept as 16 bits: the index never fills', () => {
  const memory = new ResendMemory({ windowMs: 60_000, maxEntries: 16 });
  for (let i = 0; i < 1_000; i++) {
    for (const id of [-1, 70_000, 65_536]) memory.stored(memory.note(`dev-${i % 3}`, undefined, id, 't', payload(`${i}:${id}`)));
    assert.ok(memory.size <= 16, `after ${i + 1} rounds: ${memory.size} entries`);
  }
  // The newest under each: -1 is kept as 65535, 70,000 as 4,464, 65,536 as 0.
  assert.ok(memory.lookup('dev-0', undefined, -1, 't', payload('999:-1')));
  assert.ok(memory.lookup('dev-0', undefined, 70_000, 't', payload('999:70000')));
});
