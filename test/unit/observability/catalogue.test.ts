import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { WriterState } from '../../../src/buffer/writer.ts';
import type { RejectLabel } from '../../../src/core/transform.ts';
import type { Refusal } from '../../../src/mqtt/auth.ts';
import type { PacketRefusalReason } from '../../../src/mqtt/packet-scanner.ts';
import type { ProtocolRefusal } from '../../../src/mqtt/protocol-refusals.ts';
import { type MetricSpec, catalogue } from '../../../src/observability/catalogue.ts';
import { CounterRegistry } from '../../../src/observability/counters.ts';
import { renderGatewayMetrics } from '../../../src/observability/gateway-metrics.ts';
import { metricName } from '../../../src/observability/prometheus.ts';

const SRC = fileURLToPath(new URL('../../../src/', import.meta.url));
const specs = catalogue as readonly MetricSpec[];

/** Every `count('name', {labels})` call in src/, with its file and the labels written inline. */
function countCalls(): { name: string; file: string; labels: string | undefined }[] {
  const calls: { name: string; file: string; labels: string | undefined }[] = [];
  for (const file of readdirSync(SRC, { recursive: true, encoding: 'utf8' })) {
    if (!file.endsWith('.ts')) continue;
    const text = readFileSync(join(SRC, file), 'utf8');
    for (const match of text.matchAll(/\bcount\(\s*'([^']+)'\s*(?:,\s*\{([^}]*)\})?/g)) {
      calls.push({ name: match[1] as string, file, labels: match[2] });
    }
  }
  return calls;
}

test('every metric counted in src/ is declared in the catalogue', () => {
  const counters = new Set(specs.filter((s) => s.type === 'counter').map((s) => s.name));
  const calls = countCalls();
  assert.ok(calls.length > 50, `found only ${calls.length} count('...') calls: has the call style changed?`);
  const undeclared = calls.filter((c) => !counters.has(c.name)).map((c) => `${c.name} (${c.file})`);
  assert.deepEqual(undeclared, [], 'declare these in src/observability/metrics/');
});

test('every counter in the catalogue is counted somewhere in src/', () => {
  const counted = new Set(countCalls().map((c) => c.name));
  const unused = specs.filter((s) => s.type === 'counter' && !counted.has(s.name)).map((s) => s.name);
  assert.deepEqual(unused, [], 'counted nowhere: remove them from the catalogue, or declare them as gauges set in gateway-metrics.ts');
});

test('labels written at call sites are declared, with their literal values', () => {
  const problems: string[] = [];
  for (const call of countCalls()) {
    const spec = specs.find((s) => s.type === 'counter' && s.name === call.name);
    if (spec === undefined || call.labels === undefined) continue;
    for (const entry of call.labels.split(',').map((e) => e.trim())) {
      if (entry === '' || entry.startsWith('...')) continue;
      const [key, value] = entry.split(':').map((p) => p.trim()) as [string, string | undefined];
      const label = spec.labels[key];
      if (label === undefined) {
        problems.push(`${call.name} (${call.file}): label '${key}' is not declared`);
        continue;
      }
      const literal = value?.match(/^'([^']*)'$/)?.[1];
      if (literal !== undefined && label.values !== undefined && !label.values.includes(literal)) {
        problems.push(`${call.name} (${call.file}): ${key}='${literal}' is not among the declared values`);
      }
    }
  }
  assert.deepEqual(problems, []);
});

test('every gauge in the catalogue is shown by /metrics, with its HELP text', () => {
  const counters = new CounterRegistry();
  counters.count('mqtt.connections.refused', { reason: 'bad_credentials' });
  const text = renderGatewayMetrics(
    {
      state: 'running',
      uptimeSeconds: 5,
      listeners: [{ protocol: 'mqtt', clients: 2 }, { protocol: 'http' }],
      inFlight: 0,
      bridges: [{ name: 'b' }, { name: 'h', handler: { held: 2, oldestHeldAgeMs: 1500 } }],
      buffer: { state: 'ok', held: 0, bridges: [{ bridge: 'b', messages: 1, bytes: 3, deadLetters: 0, sinks: [{ sink: 'history', pending: 1, oldestPendingAt: 1_000 }] }] },
      host: {
        at: 3_000,
        cpus: 2,
        hostCpu: 0.25,
        processCpu: 0.1,
        memory: { totalBytes: 8e9, availableBytes: 6e9, processRssBytes: 9e7, processHeapUsedBytes: 3e7 },
        disk: { path: '/data', freeBytes: 5e10, totalBytes: 1e11 },
        network: { receivedBytes: 10, sentBytes: 20, receivedBytesPerSecond: 1, sentBytesPerSecond: 2, interfaces: [{ name: 'eth0', receivedBytes: 10, sentBytes: 20 }] },
      },
      eventLoop: { windowMs: 2000, delayP50Ms: 0.5, delayP99Ms: 12, delayMaxMs: 40, utilisation: 0.2, resolutionMs: 10 },
    },
    counters,
    3_000,
  );
  for (const spec of specs) {
    if (spec.type !== 'gauge') continue;
    const name = metricName(spec.name, 'gauge');
    assert.match(text, new RegExp(`^# TYPE ${name} gauge$`, 'm'));
    assert.ok(text.includes(`# HELP ${name} ${spec.help.replace(/`/g, '')}\n`), `HELP of ${name}`);
  }
  assert.match(text, /^ferry_buffer_oldest_pending_age_seconds\{bridge="b",sink="history"\} 2$/m);
  assert.match(text, /^ferry_mqtt_clients\{listener="mqtt"\} 2$/m);
  assert.match(text, /^ferry_handler_held_oldest_age_seconds\{bridge="h"\} 1\.5$/m);
  assert.match(text, /^ferry_eventloop_delay_p99_seconds 0\.012$/m);
  assert.match(text, /^ferry_host_network_received_bytes\{interface="eth0"\} 10$/m);
  assert.match(text, /^# HELP ferry_mqtt_connections_refused_total Connections refused at the socket/m);
  assert.match(text, /^ferry_mqtt_connections_refused_total\{reason="bad_credentials"\} 1$/m);
});

test('each metric is declared once, with a meaning, a unit and a described label', () => {
  const exposed = specs.map((s) => metricName(s.name, s.type));
  assert.deepEqual(
    exposed.filter((n, i) => exposed.indexOf(n) !== i),
    [],
  );
  for (const spec of specs) {
    assert.match(spec.help, /^[A-Z0-9`].*[.)]$/, `${spec.name}: one sentence`);
    assert.notEqual(spec.unit, '', spec.name);
    for (const [label, about] of Object.entries(spec.labels)) assert.notEqual(about.meaning, '', `${spec.name}{${label}}`);
  }
});

// Checked by `npm run typecheck`: a reason added to one of these unions must be declared too.
type Declared<N extends string, L extends string> = Extract<(typeof catalogue)[number], { name: N }>['labels'] extends infer Labels
  ? Labels extends Record<L, { values: readonly (infer V)[] }>
    ? V
    : never
  : never;
type Covers<Union extends string, Listed> = [Exclude<Union, Listed>] extends [never] ? true : Exclude<Union, Listed>;
const connectionRefusals: Covers<Refusal | PacketRefusalReason | ProtocolRefusal, Declared<'mqtt.connections.refused', 'reason'>> = true;
const rejectReasons: Covers<RejectLabel, Declared<'bridge.messages.rejected', 'reason'>> = true;
const writerStates: Covers<WriterState, Declared<'buffer.state', 'state'>> = true;
assert.ok(connectionRefusals && rejectReasons && writerStates);
