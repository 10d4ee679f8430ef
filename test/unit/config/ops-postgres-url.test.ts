// A raw `%` in a Postgres URL is a config problem, not a crash, and its value is not echoed.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ConfigError, formatIssue } from '../../../src/config/issues.ts';
import { loadConfig } from '../../../src/config/load.ts';
import { componentKinds } from '../../../src/runtime/registry.ts';

const root = mkdtempSync(join(tmpdir(), 'ferry-ops-pgurl-'));
after(() => rmSync(root, { recursive: true, force: true }));
mkdirSync(join(root, 'config'));
writeFileSync(join(root, 'config/gateway.yaml'), 'databases:\n  main:\n    postgres:\n      url: ${PGURL}\nbridges: []\ndevices: []\n');

function load(url: string): string[] {
  try {
    loadConfig(join(root, 'config/gateway.yaml'), { kinds: componentKinds, env: { PGURL: url }, cwd: root });
    return [];
  } catch (error) {
    assert.ok(error instanceof ConfigError, `a config problem, not ${String(error)}`);
    return error.issues.map(formatIssue);
  }
}

test('postgres url: a malformed %-escape is a positioned problem naming the part, without its value', () => {
  for (const [url, part] of [
    ['postgres://ferry:50%off@localhost/db', 'password'],
    ['postgres://fer%zzry@localhost/db', 'user'],
    ['postgres://ferry@localhost/d%b', 'database'],
  ] as const) {
    const problems = load(url);
    assert.equal(problems.length, 1, problems.join('\n'));
    assert.match(problems[0] as string, new RegExp(`databases\\.main\\.postgres\\.url: the URL's ${part} has a malformed %-escape \\(percent-encode "%" as %25\\)`));
    assert.doesNotMatch(problems[0] as string, /50%off|fer%zzry|d%b/, 'the value is not echoed');
  }
  assert.deepEqual(load('postgres://ferry:50%25off@localhost/db'), [], 'an escaped % is fine');
});
