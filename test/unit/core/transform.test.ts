import assert from 'node:assert/strict';
import { test } from 'node:test';
import { from, lastValueFrom, toArray, type Observable } from 'rxjs';
import { type Delivery, createDelivery } from '../../../src/core/delivery.ts';
import { type Envelope, createEnvelope } from '../../../src/core/envelope.ts';
import { dropFields, keepFields } from '../../../src/core/json-fields.ts';
import { compileJsonSchema } from '../../../src/core/json-schema.ts';
import { parseExactJson } from '../../../src/core/exact-json.ts';
import { type RejectLabel, createTransformContext, decodeJsonStep, deliveryStep, selectFieldsStep, validateStep } from '../../../src/core/transform.ts';
import type { DeliveryOperator } from '../../../src/core/stream.ts';

interface Settled {
  readonly topic: string;
  outcome?: string;
}

/** Deliveries of `payloads` whose ack/nack is recorded, run through `build(context)`. */
async function run(payloads: readonly (string | Uint8Array)[], build: (context: ReturnType<typeof createTransformContext>) => DeliveryOperator[]) {
  const settled: Settled[] = [];
  const rejected: { original: Envelope; reason: string; label: RejectLabel }[] = [];
  const deliveries = payloads.map((payload, i) => {
    const record: Settled = { topic: `t/${i}` };
    settled.push(record);
    return createDelivery(createEnvelope({ topic: record.topic, payload, origin: { source: 'test', clientId: `c${i}` } }), {
      onAck: () => (record.outcome = 'ack'),
      onNack: (error) => (record.outcome = `nack: ${error.message}`),
      onDoubleSettle: () => assert.fail('settled twice'),
    });
  });
  const context = createTransformContext((delivery, original, reason, label) => {
    rejected.push({ original, reason, label });
    delivery.ack();
  });
  const operators = build(context);
  const out = operators.reduce<Observable<Delivery>>((stream, op) => stream.pipe(op), from(deliveries));
  const passed = await lastValueFrom(out.pipe(toArray()));
  return { deliveries, passed, rejected, settled, text: passed.map((d) => Buffer.from(d.envelope.payload).toString()) };
}

test("decode: json passes JSON payloads unchanged and refuses others with the parser's reason", async () => {
  const r = await run(['{"a":1}', 'not json', Buffer.from([0x22, 0xff, 0x22]), '[1,2]'], (c) => [decodeJsonStep(c)]);
  assert.deepEqual(r.text, ['{"a":1}', '[1,2]']);
  assert.equal(r.passed[0], r.deliveries[0], 'an unchanged message keeps its delivery');
  assert.deepEqual(
    r.rejected.map((x) => x.label),
    ['not_json', 'not_json'],
  );
  assert.match(r.rejected[0]?.reason ?? '', /^payload is not JSON: Unexpected token/);
  assert.equal(r.rejected[1]?.reason, 'payload is not JSON: not valid UTF-8');
  assert.deepEqual(
    r.settled.map((s) => s.outcome),
    [undefined, 'ack', 'ack', undefined],
  );
});

test('keep and drop re-encode the payload; the new delivery settles the original and keeps id, origin and timestamp', async () => {
  const payload = JSON.stringify({ device: 'd1', celsius: 20.5, meta: { debug: true, fw: '1.2' }, raw: [1, 2] });
  const kept = await run([payload], (c) => [selectFieldsStep('keep', ['celsius', 'meta.fw', 'missing.field'], c)]);
  assert.deepEqual(JSON.parse(kept.text[0] as string), { celsius: 20.5, meta: { fw: '1.2' } });
  const [out] = kept.passed as [Delivery];
  const [original] = kept.deliveries as [Delivery];
  assert.notEqual(out, original);
  assert.equal(out.envelope.id, original.envelope.id);
  assert.equal(out.envelope.timestamp, original.envelope.timestamp);
  assert.deepEqual(out.envelope.origin, original.envelope.origin);
  assert.equal(kept.settled[0]?.outcome, undefined);
  out.ack();
  assert.equal(kept.settled[0]?.outcome, 'ack');

  const dropped = await run([payload], (c) => [selectFieldsStep('drop', ['meta.debug', 'raw', 'nope.deeper'], c)]);
  assert.deepEqual(JSON.parse(dropped.text[0] as string), { device: 'd1', celsius: 20.5, meta: { fw: '1.2' } });
  (dropped.passed[0] as Delivery).nack(new Error('sink down'));
  assert.equal(dropped.settled[0]?.outcome, 'nack: sink down');
});

test('keep and drop refuse payloads that are not JSON objects', async () => {
  const r = await run(['[1]', '3', 'null', '{x'], (c) => [selectFieldsStep('drop', ['a'], c)]);
  assert.equal(r.passed.length, 0);
  assert.deepEqual(
    r.rejected.map((x) => [x.label, x.reason.replace(/:.*/, '')]),
    [
      ['not_object', 'drop needs a JSON object payload, not an array'],
      ['not_object', 'drop needs a JSON object payload, not a number'],
      ['not_object', 'drop needs a JSON object payload, not null'],
      ['not_json', 'payload is not JSON'],
    ],
  );
});

test('field selection leaves its input alone', () => {
  const value = { a: { b: 1, c: 2 }, d: 3 };
  const copy = structuredClone(value);
  assert.deepEqual(dropFields(value, [['a', 'b'], ['d']]), { a: { c: 2 } });
  assert.deepEqual(keepFields(value, [['a', 'c'], ['d']]), { a: { c: 2 }, d: 3 });
  assert.deepEqual(value, copy);
  assert.equal(dropFields(value, [['x', 'y']]), value, 'nothing to drop: the same object');
});

test('validate refuses what fails the schema, naming the schema and the field; a refused message is recorded as it arrived', async () => {
  const schema = compileJsonSchema({ type: 'object', required: ['celsius'], properties: { celsius: { type: 'number' } } });
  const payloads = ['{"celsius":21,"debug":1}', '{"celsius":"warm","debug":1}', '{"debug":1}'];
  const r = await run(payloads, (c) => [selectFieldsStep('drop', ['debug'], c), validateStep('schema of profile temperature-sensor', schema, c)]);
  assert.deepEqual(r.text, ['{"celsius":21}']);
  assert.deepEqual(
    r.rejected.map((x) => x.reason),
    ['payload fails schema of profile temperature-sensor: /celsius must be number', "payload fails schema of profile temperature-sensor: must have required property 'celsius'"],
  );
  assert.deepEqual(
    r.rejected.map((x) => Buffer.from(x.original.payload).toString()),
    payloads.slice(1),
    'the original payload, before drop',
  );
  assert.deepEqual(
    r.rejected.map((x) => x.label),
    ['schema', 'schema'],
  );
  assert.deepEqual(
    r.settled.map((s) => s.outcome),
    [undefined, 'ack', 'ack'],
  );
});

test('a step that throws refuses the message instead of stopping the stream', async () => {
  const r = await run(['a', 'b'], (c) => [
    deliveryStep('boom', c, (d) => {
      if (Buffer.from(d.envelope.payload).toString() === 'a') throw new Error('bug');
      return d;
    }),
  ]);
  assert.deepEqual(r.text, ['b']);
  assert.deepEqual(
    r.rejected.map((x) => [x.reason, x.label]),
    [['boom failed: bug', 'failed']],
  );
});

test('compileJsonSchema refuses an invalid schema and unknown keywords', () => {
  assert.throws(() => compileJsonSchema({ type: 'nubmer' }), /schema is invalid/);
  assert.throws(() => compileJsonSchema({ type: 'object', requird: ['a'] }), /unknown keyword: "requird"/);
});

test('keep and drop write numbers a double cannot hold back as they came; validate still sees plain numbers', async () => {
  const payload = '{"ts_ns":1733000000123456789,"serial":18446744073709551615,"tiny":1e-400,"huge":1e400,"celsius":21.5,"meta":{"id":123456789012345678901},"debug":1}';
  const dropped = await run([payload], (c) => [selectFieldsStep('drop', ['debug'], c)]);
  assert.deepEqual(dropped.text, ['{"ts_ns":1733000000123456789,"serial":18446744073709551615,"tiny":1e-400,"huge":1e400,"celsius":21.5,"meta":{"id":123456789012345678901}}']);
  const kept = await run([payload], (c) => [selectFieldsStep('keep', ['serial', 'meta.id'], c)]);
  assert.deepEqual(kept.text, ['{"serial":18446744073709551615,"meta":{"id":123456789012345678901}}']);

  // After a re-encoding step, validate checks numbers, not the text kept for them.
  const schema = compileJsonSchema({ type: 'object', properties: { serial: { type: 'integer' }, celsius: { type: 'number', maximum: 30 } } });
  const checked = await run([payload, payload.replace('21.5', '31.5')], (c) => [selectFieldsStep('drop', ['debug'], c), validateStep('schema', schema, c)]);
  assert.equal(checked.passed.length, 1);
  assert.deepEqual(
    checked.rejected.map((x) => x.reason),
    ['payload fails schema: /celsius must be <= 30'],
  );

  // A number alone is not an object, however many digits it has.
  const bare = await run(['18446744073709551615'], (c) => [selectFieldsStep('drop', ['a'], c)]);
  assert.deepEqual(
    bare.rejected.map((x) => x.reason),
    ['drop needs a JSON object payload, not a number'],
  );
});

test('parseExactJson keeps the source text only of numbers that would not come back the same', () => {
  const short = parseExactJson('{"a":1.5,"b":[1733000000123,-2],"c":"12345678901234567890"}');
  assert.deepEqual(short, { value: { a: 1.5, b: [1733000000123, -2], c: '12345678901234567890' }, raw: false }, 'digits in a string are not a number');
  const long = parseExactJson('{"a":0.30000000000000004,"b":12345678901234567890}');
  assert.equal(long.raw, true);
  const { a, b } = long.value as { a: unknown; b: unknown };
  assert.equal(a, 0.30000000000000004, 'a long number that survives a double stays a number');
  assert.equal(typeof b, 'object');
  assert.equal(JSON.stringify(long.value), '{"a":0.30000000000000004,"b":12345678901234567890}');
  const exponents = parseExactJson('[1.5e30,-2E-7,1e+400]');
  assert.equal(exponents.raw, true, 'a three-digit exponent');
  assert.equal(JSON.stringify(exponents.value), '[1.5e30,-2E-7,1e+400]', 'written as they came');
  assert.equal(parseExactJson('[1.5e30,-2E-7]').raw, false, 'a short exponent: a double holds it');
});
