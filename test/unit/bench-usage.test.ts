import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { SCENARIOS, usage } from '../../bench/usage.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** `npm run bench` with these arguments; nothing is measured when they are refused or ask for help. */
function bench(...args: string[]) {
  return spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'bench/run.ts'), ...args], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
}

test('npm run bench -- --help lists every scenario and option and measures nothing', () => {
  for (const flag of ['--help', '-h']) {
    const run = bench(flag);
    assert.equal(run.status, 0, run.stderr);
    assert.equal(run.stdout, usage());
    assert.equal(run.stderr, '', 'no scenario started');
  }
  const text = usage();
  for (const scenario of SCENARIOS) assert.match(text, new RegExp(`^  ${scenario} +\\S`, 'm'), scenario);
  for (const option of ['--out', '--profile', '--only', '--help']) assert.ok(text.includes(option), option);
});

test('npm run bench refuses an unknown option or scenario with exit code 2 and a pointer to --help, not a stack trace', () => {
  const option = bench('--bogus');
  assert.equal(option.status, 2);
  assert.match(option.stderr, /Unknown option '--bogus'/);
  assert.match(option.stderr, /npm run bench -- --help/);
  assert.doesNotMatch(option.stderr, /^\s+at /m);
  const scenario = bench('ingest', 'nope');
  assert.equal(scenario.status, 2);
  assert.match(scenario.stderr, /unknown scenario nope: choose from buffer, /);
  assert.match(scenario.stderr, /--help/);
});

test('every FERRY_BENCH_ variable a scenario reads is in the help', () => {
  // Read by the scenarios of `npm run bench`; the stand-alone tools (telemetry-ab.ts,
  // tls-rss.ts) say theirs in their own headers.
  const standalone = new Set(['telemetry-ab.ts', 'tls-rss.ts', 'usage.ts']);
  const read = new Set<string>();
  for (const file of readdirSync(join(ROOT, 'bench')).filter((f) => f.endsWith('.ts') && !standalone.has(f))) {
    for (const [name] of readFileSync(join(ROOT, 'bench', file), 'utf8').matchAll(/FERRY_BENCH_[A-Z0-9_]+/g)) read.add(name);
  }
  assert.ok(read.size > 10, `found ${read.size}`);
  const text = usage();
  const missing = [...read].filter((name) => !new RegExp(`^  ${name} `, 'm').test(text));
  assert.deepEqual(missing, []);
});
