import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { configReference } from '../../../src/config/reference.ts';
import { componentKinds } from '../../../src/runtime/registry.ts';

test('the README config reference is the one made from the schemas (npm run docs:config)', () => {
  const readme = readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');
  const start = readme.indexOf('<!-- config-reference:start');
  const end = readme.indexOf('<!-- config-reference:end -->');
  assert.ok(start >= 0 && end > start, 'README.md lacks the config reference markers');
  const section = readme.slice(readme.indexOf('\n', start) + 1, end);
  assert.equal(section, configReference(componentKinds));
});

test('every key of every schema has a description', () => {
  const reference = configReference(componentKinds);
  const undocumented = reference.split('\n').filter((line) => line.startsWith('| `') && line.trimEnd().endsWith('|  |'));
  assert.deepEqual(undocumented, []);
});
