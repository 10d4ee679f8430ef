import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CounterRegistry } from '../../../src/observability/counters.ts';
import { renderPrometheus } from '../../../src/observability/prometheus.ts';

test('counters render as Prometheus counter families with escaped labels', () => {
  const counters = new CounterRegistry();
  counters.count('mqtt.connections.refused', { reason: 'acl' });
  counters.count('mqtt.connections.refused', { reason: 'acl' });
  counters.count('bridge.messages.rejected', { bridge: 'a"b', reason: 'line\nbreak\\' }, 3);
  counters.count('config.reloads');
  const text = renderPrometheus([
    { name: 'up', type: 'gauge', help: 'Up.', samples: [{ value: 1 }] },
    { name: 'empty', type: 'gauge', help: 'Nothing.', samples: [] },
    ...[...counters.families()].map(([name, samples]) => ({ name, type: 'counter' as const, help: `Counter ${name}.`, samples })),
  ]);
  assert.equal(
    text,
    [
      '# HELP ferry_up Up.',
      '# TYPE ferry_up gauge',
      'ferry_up 1',
      '# HELP ferry_bridge_messages_rejected_total Counter bridge.messages.rejected.',
      '# TYPE ferry_bridge_messages_rejected_total counter',
      'ferry_bridge_messages_rejected_total{bridge="a\\"b",reason="line\\nbreak\\\\"} 3',
      '# HELP ferry_config_reloads_total Counter config.reloads.',
      '# TYPE ferry_config_reloads_total counter',
      'ferry_config_reloads_total 1',
      '# HELP ferry_mqtt_connections_refused_total Counter mqtt.connections.refused.',
      '# TYPE ferry_mqtt_connections_refused_total counter',
      'ferry_mqtt_connections_refused_total{reason="acl"} 2',
      '',
    ].join('\n'),
  );
});
