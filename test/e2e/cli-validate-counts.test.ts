// `ferry validate` printed a TypeScript bridge's type errors after the config's problems and
// their count ("ferry: 1 problem in the config"), with no count of their own: the count seemed
// to close the report, and one more problem followed it.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { ferry } from '../harness/ferry-process.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-cli-validate-counts-');

test('a bridge with a config problem and a type error: every problem first, then both counts', { timeout: 180_000 }, async () => {
  const root = tempDir();
  mkdirSync(join(root, 'bridges'));
  writeFileSync(join(root, 'gateway.yaml'), 'bridges: [bridges]\n');
  writeFileSync(
    join(root, 'bridges/b.ts'),
    [
      "import { defineBridge } from 'ferry';",
      "import { map } from 'rxjs';",
      '',
      'export default defineBridge({',
      "  name: 'b',",
      "  from: { mqtt: { topics: ['devices/+/telemetry'] } },",
      '  to: { out: { history: {} } },',
      "  handle: (messages, tools) => messages.pipe(map((m) => tools.to('outt', m))),",
      '});',
      '',
    ].join('\n'),
  );
  const out = await ferry(['validate', '--config', join(root, 'gateway.yaml')]);
  assert.equal(out.code, 1);
  const lines = out.stderr.trimEnd().split('\n');
  assert.ok(
    lines.some((l) => /bridges\/b\.ts:8:\d+: handle: 'outt' names no sink/.test(l)),
    out.stderr,
  );
  assert.ok(
    lines.some((l) => /bridges\/b\.ts:8:\d+: Argument of type '"outt"'/.test(l)),
    out.stderr,
  );
  assert.deepEqual(lines.slice(-2), ['ferry: 1 problem in the config', 'ferry: 1 type error(s) in the TypeScript bridges'], out.stderr);
});
