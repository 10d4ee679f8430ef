// The `from` and `to` types of a TypeScript bridge name every source and sink kind the runtime
// runs: `from: { postgres: ... }` ran, but was a type error (TS2353) to tsc and so to
// `ferry validate`, because SourceConfigs had no `postgres`. Each kind of the registry is
// written into a bridge and type-checked as `ferry validate` checks bridges.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { typecheckBridges } from '../../../src/config/typecheck.ts';
import { sinks, sources } from '../../../src/runtime/registry.ts';
import { tempDirs } from '../../harness/temp.ts';

const tempDir = tempDirs('ferry-specs-');

/** A bridge naming `source` as its `from` and `sink` as its only `to`; configs are left to each kind's own tests. */
function bridge(name: string, source: string, sink: string): string {
  return [
    "import { EMPTY } from 'rxjs';",
    "import { defineBridge } from 'ferry';",
    '',
    'export default defineBridge({',
    `  name: '${name}',`,
    `  from: { ${source}: {} as never },`,
    `  to: { out: { ${sink}: {} as never } },`,
    '  handle: () => EMPTY,',
    '});',
    '',
  ].join('\n');
}

test('every source and sink kind of the registry can be named in a TypeScript bridge', { timeout: 180_000 }, () => {
  const dir = tempDir();
  const kinds = Math.max(sources.length, sinks.length);
  const files: string[] = [];
  for (let i = 0; i < kinds; i++) {
    const file = join(dir, `bridge-${i}.ts`);
    writeFileSync(file, bridge(`b${i}`, (sources[i] ?? sources[0])?.kind as string, (sinks[i] ?? sinks[0])?.kind as string));
    files.push(file);
  }
  const result = typecheckBridges(files, (path) => path);
  assert.ok(result.checked, result.checked ? '' : result.reason);
  assert.deepEqual(
    result.issues.map((issue) => `${issue.file}:${issue.line}: ${issue.message}`),
    [],
    `registered kinds: sources ${sources.map((s) => s.kind).join(', ')}; sinks ${sinks.map((s) => s.kind).join(', ')}`,
  );
});

test('a kind the registry does not have is a type error', { timeout: 180_000 }, () => {
  const file = join(tempDir(), 'bridge.ts');
  writeFileSync(file, bridge('b', 'nosuchsource', 'nosuchsink'));
  const result = typecheckBridges([file], (path) => path);
  assert.ok(result.checked, result.checked ? '' : result.reason);
  const messages = result.issues.map((issue) => issue.message).join('\n');
  assert.match(messages, /'nosuchsource'/);
  assert.match(messages, /'nosuchsink'/);
});
