import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compileJsonSchema } from '../../../src/core/json-schema.ts';

test('a schema naming a format compiles, and the format is not checked (as docs/bridges.md says)', () => {
  const validate = compileJsonSchema({ type: 'object', properties: { at: { type: 'string', format: 'date-time' }, n: { type: 'number' } } });
  assert.equal(validate({ at: 'not a date', n: 1 }), undefined);
  assert.equal(validate({ at: 'x', n: 'one' }), '/n must be number');
});

test('draft 2019-09 keywords work when $schema declares the draft; draft-07 is the default', () => {
  const schema = { type: 'object', properties: { a: { type: 'number' } }, unevaluatedProperties: false };
  const validate = compileJsonSchema({ $schema: 'https://json-schema.org/draft/2019-09/schema', ...schema });
  assert.equal(validate({ a: 1 }), undefined);
  assert.equal(validate({ a: 1, b: 2 }), 'must NOT have unevaluated properties');
  assert.throws(() => compileJsonSchema(schema), /unknown keyword: "unevaluatedProperties"/);
  const draft07 = compileJsonSchema({ $schema: 'http://json-schema.org/draft-07/schema#', type: 'object', properties: { a: { type: 'number' } } });
  assert.equal(draft07({ a: 'x' }), '/a must be number');
});
