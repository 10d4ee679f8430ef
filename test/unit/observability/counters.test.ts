import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CounterRegistry } from '../../../src/observability/counters.ts';

test('one labels object counted under several names keeps each name apart', () => {
  const counters = new CounterRegistry();
  const labels = { bridge: 'b1' };
  counters.count('bridge.messages.in', labels);
  counters.count('bridge.messages.in', labels);
  counters.count('buffer.retries', labels, 3);
  counters.count('bridge.messages.in', labels);
  counters.count('bridge.messages.in', { bridge: 'b1' });
  assert.equal(counters.get('bridge.messages.in{bridge=b1}'), 4);
  assert.equal(counters.get('buffer.retries{bridge=b1}'), 3);
  const sorted = { sink: 's', bridge: 'b2' };
  counters.count('buffer.delivered', sorted, 2);
  counters.count('buffer.delivered', sorted);
  assert.equal(counters.get('buffer.delivered{bridge=b2,sink=s}'), 3);
  assert.deepEqual(counters.families().get('bridge.messages.in'), [{ labels: { bridge: 'b1' }, value: 4 }]);
});
