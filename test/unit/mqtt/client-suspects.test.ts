import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CloseSuspects } from '../../../src/mqtt/client-suspects.ts';

test('a close with several messages awaiting makes each a suspect, without counting against any', () => {
  const suspects = new CloseSuspects();
  suspects.closed(['a', 'b'], undefined);
  assert.equal(suspects.isSuspect('a'), true);
  assert.equal(suspects.isSuspect('b'), true);
  suspects.acked('x');
  assert.deepEqual(suspects.triage(['a', 'b', 'c']), { refuse: [], setAside: undefined });
});

test('closed twice while alone, with an acknowledgement since it came under suspicion: refused', () => {
  const suspects = new CloseSuspects();
  suspects.closed(['a', 'b'], undefined);
  suspects.acked('b');
  suspects.closed(['a'], undefined);
  assert.equal(suspects.isProven('a'), false);
  suspects.closed(['a'], undefined);
  assert.equal(suspects.isProven('a'), true);
  assert.deepEqual(suspects.triage(['a', 'c']).refuse, [0]);
  suspects.forget('a');
  assert.equal(suspects.isSuspect('a'), false);
});

test('without an acknowledgement since: held back while another is tried, or sent again when there is none', () => {
  const suspects = new CloseSuspects();
  suspects.acked('before');
  suspects.closed(['a'], undefined);
  suspects.closed(['a'], undefined);
  assert.equal(suspects.isProven('a'), false);
  assert.deepEqual(suspects.triage(['a', 'b']), { refuse: [], setAside: 0 });
  assert.deepEqual(suspects.triage(['a']), { refuse: [], setAside: undefined });
  suspects.acked('b');
  assert.equal(suspects.isProven('a'), true);
});

test('two messages each closed for twice without an acknowledgement: neither is held back (the broker refuses everything)', () => {
  const suspects = new CloseSuspects();
  for (const id of ['a', 'a', 'b', 'b']) suspects.closed([id], undefined);
  assert.deepEqual(suspects.triage(['a', 'b', 'c']), { refuse: [], setAside: undefined });
});

test('an MQTT 5 DISCONNECT that names the connection, not a message, suspects nothing', () => {
  const suspects = new CloseSuspects();
  suspects.closed(['a'], 0x8b); // server shutting down
  suspects.closed(['a'], 0x8e); // session taken over
  assert.equal(suspects.isSuspect('a'), false);
  suspects.closed(['a'], 0x95); // packet too large
  assert.equal(suspects.isSuspect('a'), true);
});
