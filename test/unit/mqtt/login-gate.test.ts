import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LoginGate } from '../../../src/mqtt/login-gate.ts';

/** A check that finishes when the test says so, recording when it started. */
function held(log: string[], name: string): { check: () => Promise<string>; finish: () => void } {
  let finish = () => {};
  const done = new Promise<void>((resolve) => (finish = resolve));
  return {
    check: async () => {
      log.push(name);
      await done;
      return name;
    },
    finish: () => finish(),
  };
}

test('admission is refused past the per-address, per-username and queue bounds, and given back when a check ends', async () => {
  const gate = new LoginGate({ concurrent: 1, queued: 2, perAddress: 2, perUsername: 2 });
  const log: string[] = [];
  const a = held(log, 'a');
  const first = gate.admit('10.0.0.1', 'u1');
  assert.ok(first.ok);
  const running = first.run(a.check);
  assert.ok(gate.admit('10.0.0.1', 'u2').ok);
  assert.deepEqual(gate.admit('10.0.0.1', 'u3'), { ok: false, refusal: 'too_many_attempts' }, 'per address');
  assert.ok(gate.admit('10.0.0.2', 'u1').ok);
  assert.deepEqual(gate.admit('10.0.0.3', 'u1'), { ok: false, refusal: 'too_many_attempts' }, 'per username');
  // Two admitted but not yet waiting (run not called): the queue counts only checks that wait.
  const waiting = gate.admit('10.0.0.4', 'u4');
  assert.ok(waiting.ok);
  void waiting.run(async () => 'w1');
  const waiting2 = gate.admit('10.0.0.5', 'u5');
  assert.ok(waiting2.ok);
  void waiting2.run(async () => 'w2');
  assert.deepEqual(gate.admit('10.0.0.6', 'u6'), { ok: false, refusal: 'server_busy' });
  a.finish();
  assert.equal(await running, 'a');
  assert.ok(gate.admit('10.0.0.1', 'u3').ok, 'the finished check gave its places back');
});

test('waiting checks take turns by address: a burst from one address delays another address by one check', async () => {
  const gate = new LoginGate({ concurrent: 1, queued: 100, perAddress: 100, perUsername: 100 });
  const log: string[] = [];
  const checks = Array.from({ length: 5 }, (_, i) => held(log, `burst-${i}`));
  const runs = checks.map((c, i) => {
    const admission = gate.admit('10.0.0.1', `b${i}`);
    assert.ok(admission.ok);
    return admission.run(c.check);
  });
  const operator = held(log, 'operator');
  const admission = gate.admit('10.0.0.2', 'op');
  assert.ok(admission.ok);
  const op = admission.run(operator.check);
  for (const c of checks) c.finish();
  operator.finish();
  await Promise.all([...runs, op]);
  assert.deepEqual(log, ['burst-0', 'burst-1', 'operator', 'burst-2', 'burst-3', 'burst-4']);
  assert.equal(gate.pending, 0);
});

test('a check that throws frees its slot and its places', async () => {
  const gate = new LoginGate({ concurrent: 1, queued: 0, perAddress: 1, perUsername: 1 });
  const admission = gate.admit('a', 'u');
  assert.ok(admission.ok);
  await assert.rejects(
    admission.run(async () => Promise.reject(new Error('boom'))),
    /boom/,
  );
  const again = gate.admit('a', 'u');
  assert.ok(again.ok);
  assert.equal(await again.run(async () => 'ok'), 'ok');
});
