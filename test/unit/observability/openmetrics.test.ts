// /metrics served only the Prometheus text format 0.0.4, while Prometheus and the OpenTelemetry
// collector ask for OpenMetrics first. These tests hold the OpenMetrics 1.0 output to the
// spec's rules (no OpenMetrics parser is among the project's packages, so the rules are
// asserted one by one) and check the negotiation over HTTP.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { catalogue } from '../../../src/observability/catalogue.ts';
import { CounterRegistry } from '../../../src/observability/counters.ts';
import { type MetricsStatus, renderGatewayMetrics } from '../../../src/observability/gateway-metrics.ts';
import type { MetricSpec } from '../../../src/observability/metrics/spec.ts';
import { canonical, negotiateMetricsFormat, renderOpenMetrics } from '../../../src/observability/openmetrics.ts';
import { AdminServer } from '../../../src/runtime/admin-server.ts';

// What Prometheus (and the collector's Prometheus receiver, which uses its scrape code) sends.
const PROMETHEUS_ACCEPT = 'application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1';

test('content negotiation: OpenMetrics 1.0.0 when preferred over the text format, else 0.0.4', () => {
  assert.equal(negotiateMetricsFormat(PROMETHEUS_ACCEPT), 'openmetrics');
  assert.equal(negotiateMetricsFormat('application/openmetrics-text; version=1.0.0'), 'openmetrics');
  assert.equal(negotiateMetricsFormat('Application/OpenMetrics-Text'), 'openmetrics', 'no version, any case');
  assert.equal(negotiateMetricsFormat(undefined), 'prometheus');
  assert.equal(negotiateMetricsFormat('*/*'), 'prometheus');
  assert.equal(negotiateMetricsFormat('text/plain;version=0.0.4'), 'prometheus');
  assert.equal(negotiateMetricsFormat('application/openmetrics-text;version=0.0.1'), 'prometheus', 'a version not served');
  assert.equal(negotiateMetricsFormat('application/openmetrics-text;q=0.2,text/plain;q=0.5'), 'prometheus');
  assert.equal(negotiateMetricsFormat('application/openmetrics-text;q=0'), 'prometheus');
  assert.equal(negotiateMetricsFormat('text/plain;q=0.5,application/openmetrics-text;version=1.0.0;q=0.9'), 'openmetrics');
});

test('OpenMetrics: counter families without _total and samples with it, HELP escaped, UNIT for a base unit the name ends with, canonical le, # EOF last', () => {
  const text = renderOpenMetrics(
    [
      { name: 'uptime_seconds', type: 'gauge', help: 'Up "for".', unit: 'seconds', samples: [{ value: 5 }] },
      { name: 'buffer.messages', type: 'gauge', help: 'Held.', unit: 'messages', samples: [{ labels: { bridge: 'a"b' }, value: 1 }] },
      { name: 'empty', type: 'gauge', help: 'Nothing.', samples: [] },
      { name: 'config.reloads', type: 'counter', help: 'Reloads.\nAll.', unit: 'reloads', samples: [{ labels: { result: 'ok' }, value: 2 }] },
    ],
    [{ name: 'sink.write_seconds', help: 'Writes.', unit: 'seconds', series: [{ labels: { sink: 'k' }, bounds: [0.0005, 1, 2.5], counts: [1, 0, 2, 1], sum: 7.25, count: 4 }] }],
  );
  assert.equal(
    text,
    [
      '# HELP ferry_uptime_seconds Up \\"for\\".',
      '# TYPE ferry_uptime_seconds gauge',
      '# UNIT ferry_uptime_seconds seconds',
      'ferry_uptime_seconds 5',
      '# HELP ferry_buffer_messages Held.',
      '# TYPE ferry_buffer_messages gauge',
      'ferry_buffer_messages{bridge="a\\"b"} 1',
      '# HELP ferry_config_reloads Reloads.\\nAll.',
      '# TYPE ferry_config_reloads counter',
      'ferry_config_reloads_total{result="ok"} 2',
      '# HELP ferry_sink_write_seconds Writes.',
      '# TYPE ferry_sink_write_seconds histogram',
      '# UNIT ferry_sink_write_seconds seconds',
      'ferry_sink_write_seconds_bucket{sink="k",le="0.0005"} 1',
      'ferry_sink_write_seconds_bucket{sink="k",le="1.0"} 1',
      'ferry_sink_write_seconds_bucket{sink="k",le="2.5"} 3',
      'ferry_sink_write_seconds_bucket{sink="k",le="+Inf"} 4',
      'ferry_sink_write_seconds_count{sink="k"} 4',
      'ferry_sink_write_seconds_sum{sink="k"} 7.25',
      '# EOF',
      '',
    ].join('\n'),
  );
  assert.equal(renderOpenMetrics([], []), '# EOF\n', 'nothing to show is still a complete exposition');
});

test("canonical numbers are Go's shortest %g with .0 on whole numbers, as Prometheus stores le", () => {
  assert.deepEqual([1, 0, 2.5, 0.0001, 0.000002, 16.777216, 300, 3600, 123456, 1234567, 1e21, -1, Number.POSITIVE_INFINITY].map(canonical), [
    '1.0',
    '0.0',
    '2.5',
    '0.0001',
    '2e-06',
    '16.777216',
    '300.0',
    '3600.0',
    '123456.0',
    '1.234567e+06',
    '1e+21',
    '-1.0',
    '+Inf',
  ]);
});

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*\})? (\S+)$/;
const SUFFIXES: Record<string, readonly string[]> = { counter: ['_total', '_created'], histogram: ['_bucket', '_count', '_sum', '_created'], gauge: [''], unknown: [''] };

/** The OpenMetrics 1.0 text format's rules, checked line by line; the families found, with their sample names. */
function checkOpenMetrics(text: string): Map<string, { type: string; samples: string[] }> {
  assert.ok(text.endsWith('\n# EOF\n'), 'ends with # EOF and a newline');
  const lines = text.slice(0, -'# EOF\n'.length).split('\n').slice(0, -1);
  const families = new Map<string, { type: string; unit?: string; samples: string[] }>();
  const taken = new Set<string>();
  let current: string | undefined;
  for (const line of lines) {
    assert.notEqual(line, '', 'no blank line');
    assert.notEqual(line, '# EOF', '# EOF only at the end');
    const meta = /^# (HELP|TYPE|UNIT) (\S+) ?(.*)$/.exec(line);
    if (meta !== null) {
      const [, kind, name = '', rest = ''] = meta;
      assert.match(name, NAME, line);
      if (name !== current) {
        assert.ok(!families.has(name), `family ${name} appears once, its lines together`);
        families.set(name, { type: 'unknown', samples: [] });
        current = name;
      }
      const family = families.get(name) as { type: string; unit?: string; samples: string[] };
      assert.equal(family.samples.length, 0, `metadata of ${name} before its samples`);
      if (kind === 'TYPE') {
        assert.ok(rest in SUFFIXES, `type ${rest}`);
        family.type = rest;
      }
      if (kind === 'UNIT') {
        assert.ok(name.endsWith(`_${rest}`), `${name} ends with its unit ${rest}`);
        family.unit = rest;
      }
      if (kind === 'HELP') assert.doesNotMatch(rest.replace(/\\[\\"n]/g, ''), /["\\]/, `HELP of ${name} escaped`);
      continue;
    }
    const sample = SAMPLE.exec(line);
    assert.ok(sample !== null, `a sample: ${line}`);
    const [, name = '', , value = ''] = sample;
    assert.ok(current !== undefined);
    const family = families.get(current) as { type: string; samples: string[] };
    const suffix = name.slice(current.length);
    assert.ok(name.startsWith(current) && (SUFFIXES[family.type] ?? []).includes(suffix), `${name} belongs to ${family.type} family ${current}`);
    assert.match(value, /^(NaN|[+-]Inf|[+-]?\d+(\.\d*)?([eE][+-]?\d+)?)$/, line);
    if (family.type !== 'gauge') assert.ok(Number(value) >= 0, `counter-like sample ${line} not negative`);
    if (suffix === '_bucket') {
      const le = /le="([^"]*)"/.exec(line)?.[1] ?? '';
      assert.equal(le, le === '+Inf' ? '+Inf' : canonical(Number(le)), `canonical le in ${line}`);
    }
    family.samples.push(line);
  }
  // Each family's sample names (the name and its type's suffixes) are no other family's.
  for (const [name, family] of families) {
    for (const suffix of SUFFIXES[family.type] ?? []) {
      assert.ok(!taken.has(name + suffix), `${name + suffix} clashes with another family`);
      taken.add(name + suffix);
    }
  }
  return families;
}

/** Every metric of the catalogue with a value: each counter counted, each histogram recorded. */
function everything(): { status: MetricsStatus; counters: CounterRegistry } {
  const counters = new CounterRegistry();
  for (const spec of catalogue as readonly MetricSpec[]) {
    const labels = Object.fromEntries(Object.keys(spec.labels).map((k) => [k, 'a"b\\c\nd']));
    if (spec.type === 'counter') counters.count(spec.name, labels, 3);
    if (spec.type === 'histogram') {
      const series = counters.histogram(spec.name, labels);
      series.record(0.003);
      series.record(2, 2);
    }
  }
  const status: MetricsStatus = {
    state: 'running',
    uptimeSeconds: 5,
    listeners: [{ protocol: 'mqtt', clients: 2 }],
    inFlight: 0,
    bridges: [{ name: 'h', handler: { held: 2, oldestHeldAgeMs: 1500 } }],
    buffer: { state: 'ok', held: 0, bridges: [{ bridge: 'b', messages: 1, bytes: 3, deadLetters: 4, sinks: [{ sink: 'history', pending: 1, oldestPendingAt: 1_000 }] }] },
  };
  return { status, counters };
}

/** `name{labels}` of each sample line, le values read as numbers. */
const seriesOf = (text: string) =>
  text
    .split('\n')
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => line.replace(/le="([^"]+)"/, (_, le: string) => `le="${Number(le)}"`))
    .sort();

test("the whole catalogue in OpenMetrics keeps the spec's rules and the same series as the 0.0.4 format", () => {
  const { status, counters } = everything();
  const text = renderGatewayMetrics(status, counters, 3_000, 'openmetrics');
  const families = checkOpenMetrics(text);
  assert.ok(families.size > 100, `${families.size} families`);
  assert.equal(families.get('ferry_buffer_appended')?.type, 'counter');
  assert.equal(families.get('ferry_buffer_commit_seconds')?.type, 'histogram');
  // A counter and a gauge share `buffer.dead_letters`: the counter goes out as unknown, named as in 0.0.4.
  assert.equal(families.get('ferry_buffer_dead_letters')?.type, 'gauge');
  assert.equal(families.get('ferry_buffer_dead_letters_total')?.type, 'unknown');
  assert.deepEqual(seriesOf(text), seriesOf(renderGatewayMetrics(status, counters, 3_000, 'prometheus')));
});

test('GET /metrics answers OpenMetrics to an Accept that prefers it, and the 0.0.4 text format otherwise', async (t) => {
  const { status, counters } = everything();
  const admin = await AdminServer.start('127.0.0.1', 0, {
    ready: () => ({ ready: true }),
    status: () => ({}),
    metrics: (format) => renderGatewayMetrics(status, counters, 3_000, format),
  });
  t.after(() => admin.close());
  const scrape = async (accept?: string) => {
    const response = await fetch(`http://127.0.0.1:${admin.port}/metrics`, accept === undefined ? {} : { headers: { accept } });
    assert.equal(response.status, 200);
    return { type: response.headers.get('content-type'), vary: response.headers.get('vary'), body: await response.text() };
  };
  const om = await scrape(PROMETHEUS_ACCEPT);
  assert.equal(om.type, 'application/openmetrics-text; version=1.0.0; charset=utf-8');
  assert.equal(om.vary, 'Accept', 'a cache keeps the two formats apart');
  checkOpenMetrics(om.body);
  for (const accept of [undefined, 'text/plain;version=0.0.4', '*/*']) {
    const plain = await scrape(accept);
    assert.equal(plain.type, 'text/plain; version=0.0.4; charset=utf-8', `Accept: ${accept}`);
    assert.doesNotMatch(plain.body, /# EOF/);
    assert.match(plain.body, /^# TYPE ferry_buffer_appended_total counter$/m);
  }
});
