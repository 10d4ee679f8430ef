import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileReferences, kindReferences } from '../../../src/config/reference.ts';
import { componentKinds } from '../../../src/runtime/registry.ts';

const tables = (): [string, string][] => {
  const { sources, sinks, transforms } = kindReferences(componentKinds);
  return [
    ...fileReferences(componentKinds).map((f): [string, string] => [f.file, f.table]),
    ...[...sources, ...sinks, ...transforms].map((k): [string, string] => [k.kind, k.table]),
  ];
};

test('every key of every schema has a description', () => {
  const undocumented = tables().flatMap(([page, table]) =>
    table
      .split('\n')
      .filter((line) => line.startsWith('| `') && line.trimEnd().endsWith('|  |'))
      .map((line) => `${page}: ${line}`),
  );
  assert.deepEqual(undocumented, []);
});

test('the bridge file reference links each source, sink and transform step to its page instead of repeating it', () => {
  const bridge = fileReferences(componentKinds, (list, kind) => `${list}/${kind}.md`).find((f) => f.file === 'bridge')?.table ?? '';
  for (const source of componentKinds.sources) assert.match(bridge, new RegExp(`^\\| \`from\\.${source.kind}\` \\|.*\\(from/${source.kind}\\.md\\)`, 'm'));
  for (const sink of componentKinds.sinks) assert.match(bridge, new RegExp(`^\\| \`to\\[\\]\\.${sink.kind}\` \\|.*\\(to/${sink.kind}\\.md\\)`, 'm'));
  assert.match(bridge, /\| `transform\[\]\.validate` \|.*\(transform\/validate\.md\)/);
  assert.doesNotMatch(bridge, /`to\[\]\.kafka\.topic`/);
  assert.match(bridge, /`rateLimit\.messagesPerSecond`/);
});

test('each kind has an example with its required settings', () => {
  const { sources, sinks, transforms } = kindReferences(componentKinds);
  assert.deepEqual(sources.find((s) => s.kind === 'mqtt')?.example, { topics: ['devices/+/telemetry/#'] });
  assert.deepEqual(sinks.find((s) => s.kind === 'devices')?.example, { topic: 'devices/${key}/commands' });
  assert.deepEqual(transforms.find((t) => t.kind === 'decode')?.example, { decode: 'json' });
  assert.deepEqual(
    transforms.map((t) => t.kind),
    ['decode', 'keep', 'drop', 'validate', 'lookup'],
  );
  assert.deepEqual(transforms.find((t) => t.kind === 'lookup')?.example, { lookup: { key: 'site:${1}', field: 'site' } });
});
