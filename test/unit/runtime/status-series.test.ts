import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CounterRegistry } from '../../../src/observability/counters.ts';
import { StatusSeries } from '../../../src/runtime/status-page/series.ts';

test('StatusSeries: rates per bridge and sink since the previous point, refusals and dead letters by counter, the window kept', () => {
  const counters = new CounterRegistry();
  let devices = 3;
  const series = new StatusSeries({ counters, devices: () => devices, vitals: () => ({ host: null, eventLoop: null }) }, 60_000, 3);
  try {
    const t0 = Date.now();
    counters.count('bridge.messages.in', { bridge: 'b' }, 600);
    counters.count('sink.messages.written', { bridge: 'b', sink: 'kafka' }, 400);
    counters.count('mqtt.connections.refused', { reason: 'bad_credentials' }, 2);
    counters.count('buffer.dead_letters', { bridge: 'b', sink: 'kafka' });
    counters.count('mqtt.connections.opened', {}, 5);
    series.sample(t0 + 2000);
    const [first] = series.since(0).points;
    assert.ok(first !== undefined);
    assert.ok(Math.abs((first.in['b'] ?? 0) - 300) < 5, `about 600 in 2 s: ${first.in['b']}`);
    assert.ok(Math.abs((first.written['b']?.['kafka'] ?? 0) - 200) < 5);
    assert.ok(first.refused > 0 && first.deadLettered > 0);
    assert.equal(first.devices, 3);
    assert.equal(first.hostCpu, null);

    devices = 4;
    series.sample(t0 + 4000);
    const second = series.since(first.t).points;
    assert.equal(second.length, 1, 'only what came after');
    assert.equal(second[0]?.in['b'], 0, 'nothing new');
    assert.equal(second[0]?.devices, 4);

    counters.count('mqtt.connections.refused', { reason: 'bad_credentials' });
    series.sample(t0 + 6000);
    series.sample(t0 + 8000);
    const { points, recent } = series.since(0);
    assert.equal(points.length, 3, 'keeps 3 points');
    const refused = recent.find((r) => r.name === 'mqtt.connections.refused');
    assert.deepEqual(
      { kind: refused?.kind, labels: refused?.labels, total: refused?.total, inWindow: refused?.inWindow, lastAt: refused?.lastAt },
      { kind: 'refused', labels: { reason: 'bad_credentials' }, total: 3, inWindow: 1, lastAt: t0 + 6000 },
    );
    assert.match(refused?.help ?? '', /^Connections refused/);
    const dead = recent.find((r) => r.name === 'buffer.dead_letters');
    assert.deepEqual([dead?.kind, dead?.total, dead?.inWindow, dead?.lastAt], ['dead-lettered', 1, 0, null]);
    assert.equal(
      recent.find((r) => r.name === 'mqtt.connections.opened'),
      undefined,
      'not a refusal',
    );
  } finally {
    series.stop();
  }
});

test('StatusSeries: messages lost (QoS 0 not stored, expired from the buffer, dead letters trimmed, outputs lost) are listed and charted with the refusals', () => {
  const counters = new CounterRegistry();
  const series = new StatusSeries({ counters, devices: () => 0, vitals: () => ({ host: null, eventLoop: null }) }, 60_000, 3);
  try {
    const t0 = Date.now();
    series.sample(t0);
    const lost = [
      ['mqtt.publish.qos0_not_stored', {}],
      ['mqtt.client.qos0_not_stored', { bridge: 'b' }],
      ['buffer.expired', { bridge: 'b' }],
      ['buffer.dead_letters.dropped', { bridge: 'b' }],
      ['handler.outputs.lost', { bridge: 'b', sink: 'kafka' }],
    ] as const;
    for (const [name, labels] of lost) counters.count(name, labels, 5);
    series.sample(t0 + 2000);
    const { points, recent } = series.since(0);
    assert.ok(Math.abs((points.at(-1)?.refused ?? 0) - 12.5) < 0.5, `25 in 2 s: ${points.at(-1)?.refused}`);
    for (const [name, labels] of lost) {
      const row = recent.find((r) => r.name === name);
      assert.deepEqual([row?.kind, row?.labels, row?.total, row?.inWindow], ['refused', labels, 5, 5], name);
      assert.notEqual(row?.help, '', `${name} is explained`);
    }
  } finally {
    series.stop();
  }
});
