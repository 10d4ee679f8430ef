// Issue 18, item 4: TypeScript bridges are checked before they run, wherever they are.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { ferry } from '../harness/ferry-process.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-issue18-validate-');

/** A gateway tree outside the checkout, with no node_modules and no `devices:`; returns its gateway.yaml. */
function tree(bridge: string): string {
  const root = tempDir();
  mkdirSync(join(root, 'bridges'));
  writeFileSync(join(root, 'gateway.yaml'), 'bridges: [bridges]\n');
  writeFileSync(join(root, 'bridges/b.ts'), bridge);
  return join(root, 'gateway.yaml');
}

const bridge = (imports: string, to: string, handle: string) =>
  [
    imports,
    "import { map } from 'rxjs';",
    '',
    'export default defineBridge({',
    "  name: 'b',",
    "  from: { mqtt: { topics: ['devices/+/telemetry'] } },",
    `  to: { out: ${to} },`,
    `  handle: (messages, tools) => messages.pipe(map((m: Message) => ${handle})),`,
    '});',
    '',
  ].join('\n');

const GOOD_IMPORT = "import { defineBridge, type Message } from 'ferry';";

test("a bridge in any directory imports 'ferry' and 'rxjs' from Ferry's own installation; no devices: is needed", async () => {
  const out = await ferry(['validate', '--config', tree(bridge(GOOD_IMPORT, '{ history: {} }', "tools.to('out', m)"))]);
  assert.equal(out.code, 0, out.stderr);
  assert.match(out.stdout, /ok \(1 bridge, 1 enabled; 0 device profiles; TypeScript bridges type-checked\)/);
});

test('a misspelled sink name in tools.to fails ferry validate at its line, before any message reaches it', async () => {
  const out = await ferry(['validate', '--config', tree(bridge(GOOD_IMPORT, '{ history: {} }', "tools.to('outt', m)"))]);
  assert.equal(out.code, 1);
  assert.match(out.stderr, /bridges\/b\.ts:8:\d+: Argument of type '"outt"' is not assignable to parameter of type '"out"'/);
  assert.match(out.stderr, /bridges\/b\.ts:8:\d+: handle: 'outt' names no sink of this bridge/);
});

test('a type error is reported when ferry validate runs in the directory of the bridges, with a relative --config', async () => {
  // tsc names files relative to its working directory: those under it were matched against the
  // wrong directory and dropped, while validate said the bridges were type-checked.
  const config = tree(bridge(GOOD_IMPORT, '{ history: {} }', "tools.to('outt', m)"));
  const out = await ferry(['validate', '--config', 'gateway.yaml'], {}, dirname(config));
  assert.equal(out.code, 1, out.stdout);
  assert.match(out.stderr, /bridges\/b\.ts:8:\d+: Argument of type '"outt"' is not assignable to parameter of type '"out"'/);
});

test('a misspelled sink option is a type error at its line', async () => {
  const out = await ferry(['validate', '--config', tree(bridge(GOOD_IMPORT, "{ kafka: { brokers: 'k:9092', topik: 'x' } }", "tools.to('out', m)"))]);
  assert.equal(out.code, 1);
  assert.match(out.stderr, /bridges\/b\.ts:7:\d+: .*'topik'/);
});

test('a type imported as a value is reported at the line of the import, with how to fix it', async () => {
  const out = await ferry(['validate', '--config', tree(bridge("import { defineBridge, Message } from 'ferry';", '{ history: {} }', "tools.to('out', m)"))]);
  assert.equal(out.code, 1);
  assert.match(out.stderr, /bridges\/b\.ts:1:24: cannot load this TypeScript bridge: SyntaxError: .*'Message'.*import type \{ Message \}/);
  assert.match(out.stderr, /bridges\/b\.ts:1:24: 'Message' is a type and must be imported using a type-only import/);
});
