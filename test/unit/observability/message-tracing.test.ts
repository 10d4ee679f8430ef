import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { pino } from 'pino';
import { firstValueFrom, of, toArray } from 'rxjs';
import { batchingSink } from '../../../src/core/batching-sink.ts';
import { createDelivery } from '../../../src/core/delivery.ts';
import { type Envelope, createEnvelope } from '../../../src/core/envelope.ts';
import { failedSpanFields } from '../../../src/core/tracing.ts';
import { messageTracing } from '../../../src/observability/message-tracing.ts';
import { type FinishedSpan, SpanExport } from '../../../src/observability/span-export.ts';
import { startOtlpReceiver } from '../../harness/otlp-receiver.ts';

const silent = pino({ level: 'silent' });
const device = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

function reading(headers: Record<string, string> = {}) {
  return createEnvelope({ topic: 'devices/d1/telemetry/t', payload: Buffer.from('{"c":21}'), headers, origin: { source: 'mqtt', clientId: 'd1', qos: 1 } });
}

test('ingress: parent-based sampling; a sampled message is stored with its span as traceparent, an unsampled one untouched', () => {
  const spans: FinishedSpan[] = [];
  const never = messageTracing({ add: (s) => spans.push(s) }, 0, silent);
  assert.equal(never.ingress('b', reading()), undefined, 'no traceparent, ratio 0: not sampled');
  assert.equal(never.ingress('b', reading({ traceparent: device.replace(/01$/, '00') })), undefined, 'the parent says not sampled');
  assert.equal(never.ingress('b', reading({ traceparent: 'garbage' })), undefined, 'a malformed traceparent falls back to the ratio');

  const continued = never.ingress('b', reading({ traceparent: device }));
  assert.ok(continued, 'a sampled parent is followed whatever the ratio');
  const [, traceId, spanId, flags] = String(continued.envelope.headers['traceparent']).split('-');
  assert.equal(traceId, '4bf92f3577b34da6a3ce929d0e0e4736');
  assert.notEqual(spanId, '00f067aa0ba902b7');
  assert.equal(flags, '01');
  continued.end('stored');
  assert.deepEqual(
    { ...spans[0], start: 0, end: 0 },
    {
      traceId,
      spanId,
      parentSpanId: '00f067aa0ba902b7',
      remoteParent: true,
      name: 'receive b',
      kind: 5,
      start: 0,
      end: 0,
      attributes: {
        'ferry.bridge': 'b',
        'ferry.source': 'mqtt',
        'messaging.message.id': continued.envelope.id,
        'messaging.destination.name': 'devices/d1/telemetry/t',
        'messaging.message.body.size': 8,
        'messaging.client.id': 'd1',
        'ferry.qos': 1,
        'ferry.outcome': 'stored',
      },
      links: undefined,
      error: undefined,
    },
  );
  assert.ok((spans[0]?.end ?? 0) >= (spans[0]?.start ?? Number.POSITIVE_INFINITY));

  const always = messageTracing({ add: (s) => spans.push(s) }, 1, silent);
  const root = always.ingress('b', reading());
  root?.end();
  assert.match(String(root?.envelope.headers['traceparent']), /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
  assert.equal(spans[1]?.parentSpanId, undefined, 'a new trace');
  assert.equal(spans[1]?.attributes['ferry.outcome'], undefined);
});

test('a sink batch with sampled messages gets a write span linking them and a send span under each; one without, none', async () => {
  const spans: FinishedSpan[] = [];
  const tracing = messageTracing({ add: (s) => spans.push(s) }, 0, silent);
  const sink = tracing.sink('b', 'kafka');
  const traced = tracing.ingress('b', reading({ traceparent: device }));
  assert.ok(traced);
  spans.length = 0;
  const plain = createDelivery(reading(), { onAck: () => {}, onNack: () => {} });
  assert.equal(await sink.batch([plain], async () => 'written'), 'written');
  assert.equal(spans.length, 0, 'no sampled message, no span');

  const sampled = createDelivery(traced.envelope, { onAck: () => {}, onNack: () => {} });
  assert.equal(await sink.batch([plain, sampled], async () => 'written'), 'written');
  const [, traceId, messageSpan] = String(traced.envelope.headers['traceparent']).split('-');
  const write = spans.find((s) => s.name === 'write kafka');
  const send = spans.find((s) => s.name === 'send kafka');
  assert.deepEqual(write?.links, [{ traceId, spanId: messageSpan, remote: false }], "the message's receive span, started here");
  assert.equal(write?.attributes['messaging.batch.message_count'], 2);
  assert.equal(write?.kind, 3);
  assert.equal(send?.traceId, traceId);
  assert.equal(send?.parentSpanId, messageSpan);
  assert.equal(send?.remoteParent, false, 'the parent is the receive span of this process');
  assert.equal(send?.attributes['messaging.message.id'], traced.envelope.id);
  assert.equal(send?.kind, 4);

  spans.length = 0;
  await assert.rejects(
    sink.batch([sampled], async () => {
      throw new Error('broker down');
    }),
    /broker down/,
  );
  assert.deepEqual(
    spans.map((s) => [s.name, s.error]),
    [
      ['write kafka', 'broker down'],
      ['send kafka', 'broker down'],
    ],
  );
});

test("a sink's batch events and the errors it nacks with name the write span of a traced batch; an untraced batch's name none", async () => {
  const spans: FinishedSpan[] = [];
  const tracing = messageTracing({ add: (s) => spans.push(s) }, 0, silent);
  const traced = tracing.ingress('b', reading({ traceparent: device }));
  assert.ok(traced);
  spans.length = 0;
  const failure = new Error('broker down');
  let fail = true;
  const sink = batchingSink(
    { batchSize: 1, batchTimeMs: 1 },
    async () => {
      if (fail) throw failure;
    },
    tracing.sink('b', 'kafka'),
  );
  const nacked: Error[] = [];
  const delivery = (envelope: Envelope) => createDelivery(envelope, { onAck: () => {}, onNack: (error) => nacked.push(error) });
  const run = (envelope: Envelope) => firstValueFrom(sink(of(delivery(envelope))).pipe(toArray()));

  const [failed] = await run(traced.envelope);
  const write = spans.find((s) => s.name === 'write kafka');
  assert.ok(write);
  assert.equal(failed?.type, 'failed');
  assert.deepEqual(failed?.span, { traceId: write.traceId, spanId: write.spanId }, 'the failed event names the write span');
  assert.equal(nacked[0], failure);
  assert.deepEqual(failedSpanFields(nacked[0]), { trace_id: write.traceId, span_id: write.spanId }, 'so does the error the message was nacked with');

  fail = false;
  const [written] = await run(traced.envelope);
  const second = spans.filter((s) => s.name === 'write kafka')[1];
  assert.deepEqual(written?.type === 'written' ? written.span : undefined, { traceId: second?.traceId, spanId: second?.spanId });

  fail = true;
  spans.length = 0;
  const [untraced] = await run(reading());
  assert.equal(spans.length, 0);
  assert.equal(untraced?.span, undefined);
  assert.deepEqual(failedSpanFields(nacked.at(-1)), {}, 'the same error thrown by an untraced write names no span');
  assert.deepEqual(failedSpanFields(new Error('never traced')), {});
});

/** The `flags` of each span the receiver got, by name. */
function exportedFlags(raw: readonly string[]): Record<string, { flags: number; parentSpanId: string | undefined; links: number[] }> {
  const out: Record<string, { flags: number; parentSpanId: string | undefined; links: number[] }> = {};
  for (const body of raw) {
    for (const resource of JSON.parse(body).resourceSpans) {
      for (const scope of resource.scopeSpans) {
        for (const s of scope.spans) out[s.name] = { flags: s.flags, parentSpanId: s.parentSpanId, links: (s.links ?? []).map((l: { flags: number }) => l.flags) };
      }
    }
  }
  return out;
}

// OTLP span flags: 0x01 sampled, 0x100 "has is_remote", 0x200 is_remote (of the parent).
test("exported flags: a receive span's parent from the device's traceparent is remote, a send span's parent (this process's receive span) is local", async (t) => {
  const receiver = await startOtlpReceiver();
  t.after(() => receiver.close());
  const exporter = new SpanExport({ url: `${receiver.url}/v1/traces`, headers: {} }, {}, '1', silent, { batchSize: 100, delayMs: 60_000, maxQueue: 100 });
  const tracing = messageTracing(exporter, 0, silent);
  const traced = tracing.ingress('b', reading({ traceparent: device }));
  assert.ok(traced);
  traced.end('stored');
  const delivery = createDelivery(traced.envelope, { onAck: () => {}, onNack: () => {} });
  await tracing.sink('b', 'kafka').batch([delivery], async () => 'written');
  // A message stored before traces were exported (or by an earlier run) keeps a traceparent this
  // process did not start: its send span's parent is remote.
  const stored = createDelivery(reading({ traceparent: device }), { onAck: () => {}, onNack: () => {} });
  await tracing.sink('b', 'postgres').batch([stored], async () => 'written');
  await exporter.shutdown();

  const [, , receiveSpan] = String(traced.envelope.headers['traceparent']).split('-');
  assert.deepEqual(exportedFlags(receiver.raw), {
    'receive b': { flags: 0x301, parentSpanId: '00f067aa0ba902b7', links: [] },
    'write kafka': { flags: 0x101, parentSpanId: undefined, links: [0x101] },
    'send kafka': { flags: 0x101, parentSpanId: receiveSpan, links: [] },
    'write postgres': { flags: 0x101, parentSpanId: undefined, links: [0x301] },
    'send postgres': { flags: 0x301, parentSpanId: '00f067aa0ba902b7', links: [] },
  });
});

test('receive span ids are marked as started here; ids from elsewhere are not (one in 65,536 would be by chance)', async () => {
  const spans: FinishedSpan[] = [];
  const tracing = messageTracing({ add: (s) => spans.push(s) }, 1, silent);
  const sink = tracing.sink('b', 'kafka');
  let foreignLocal = 0;
  for (let i = 0; i < 200; i++) {
    const traced = tracing.ingress('b', reading());
    assert.ok(traced);
    const own = createDelivery(traced.envelope, { onAck: () => {}, onNack: () => {} });
    const foreign = createDelivery(reading({ traceparent: `00-${randomHex(16)}-${randomHex(8)}-01` }), { onAck: () => {}, onNack: () => {} });
    spans.length = 0;
    await sink.batch([own, foreign], async () => undefined);
    const links = spans.find((s) => s.name === 'write kafka')?.links ?? [];
    assert.equal(links[0]?.remote, false);
    if (links[1]?.remote === false) foreignLocal++;
  }
  assert.ok(foreignLocal <= 1, `${foreignLocal} of 200 random span ids taken as started here`);
});

const randomHex = (bytes: number) => randomBytes(bytes).toString('hex');

function span(i: number, extra: Partial<FinishedSpan> = {}): FinishedSpan {
  return {
    traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
    spanId: (i + 1).toString(16).padStart(16, '0'),
    parentSpanId: undefined,
    remoteParent: false,
    name: `s${i}`,
    kind: 5,
    start: 1_764_835_200_123.25,
    end: 1_764_835_200_125.5,
    attributes: { 'ferry.bridge': 'b', 'messaging.message.body.size': 8 },
    links: undefined,
    error: undefined,
    ...extra,
  };
}

test('spans go to an OTLP/HTTP receiver as JSON in batches, and shutdown sends what is held', async (t) => {
  const receiver = await startOtlpReceiver();
  t.after(() => receiver.close());
  const exporter = new SpanExport({ url: `${receiver.url}/v1/traces`, headers: { 'x-token': 'k' } }, { 'service.name': 'ferry-test' }, '1.2.3', silent, {
    batchSize: 2,
    delayMs: 60_000,
    maxQueue: 100,
  });
  exporter.add(span(0, { parentSpanId: '00f067aa0ba902b7', remoteParent: true }));
  exporter.add(span(1, { links: [{ traceId: 'a'.repeat(32), spanId: 'b'.repeat(16), remote: true }], error: 'broker down' }));
  exporter.add(span(2));
  // A full batch goes at once; the third waits for the delay, or for shutdown.
  for (let i = 0; i < 100 && receiver.spans.length < 2; i++) await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(receiver.spans.length, 2);
  await exporter.shutdown();
  assert.deepEqual(
    receiver.spans.map((s) => [s.name, s.parentSpanId, s.links, s.resource['service.name'], s.attributes['messaging.message.body.size']]),
    [
      ['s0', '00f067aa0ba902b7', [], 'ferry-test', 8],
      ['s1', '', [{ traceId: 'a'.repeat(32), spanId: 'b'.repeat(16) }], 'ferry-test', 8],
      ['s2', '', [], 'ferry-test', 8],
    ],
  );
  const first = JSON.parse(receiver.raw[0] as string);
  const [s0, s1] = first.resourceSpans[0].scopeSpans[0].spans;
  assert.deepEqual(first.resourceSpans[0].scopeSpans[0].scope, { name: 'ferry', version: '1.2.3' });
  assert.equal(s0.startTimeUnixNano, '1764835200123250000');
  assert.equal(s0.endTimeUnixNano, '1764835200125500000');
  assert.equal(s0.flags, 0x301, 'sampled, with a remote parent');
  assert.equal(s1.flags, 0x101);
  assert.deepEqual(s1.status, { code: 2, message: 'broker down' });
  assert.equal(s0.status, undefined, 'unset status is left out');
});

test('spans beyond the queue are dropped while an export is in flight, with a warning', async (t) => {
  const receiver = await startOtlpReceiver();
  t.after(() => receiver.close());
  const lines: string[] = [];
  const logger = pino({ level: 'warn' }, { write: (line: string) => void lines.push(line) });
  const exporter = new SpanExport({ url: `${receiver.url}/v1/traces`, headers: {} }, {}, '1', logger, { batchSize: 2, delayMs: 60_000, maxQueue: 3 });
  // The first two go out at once (one request in flight); the queue then holds three and drops the rest.
  for (let i = 0; i < 8; i++) exporter.add(span(i));
  await exporter.shutdown();
  assert.deepEqual(
    receiver.spans.map((s) => s.name),
    ['s0', 's1', 's2', 's3', 's4'],
  );
  assert.ok(lines.some((l) => l.includes('dropping spans')));
});
