// Issue 11 (startup): V8 takes Node's code cache of its built-in modules only while the flags
// are the ones it was made with, and `ferry run` changes flags (TurboFan held back, the heap's
// growth). bin/builtins.js loads the built-in modules a start needs before that; this checks,
// from inside a start of the embedded default, that none is loaded (so compiled from source)
// after the first change. A probe loaded with --import wraps v8.setFlagsFromString to see it.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { REPO_ROOT, ferry, startFerry } from '../harness/ferry-process.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-builtins-');

/**
 * Loaded only when needed, after the flags changed: the CommonJS lexer on the first import of a
 * CommonJS package from an ES module (about 2 ms; bin/builtins.js cannot load it alone), and
 * Node's type stripper when a TypeScript file must be stripped (from the sources, or a bridge
 * not yet in the cache of stripped bridges), where loading it early would cost every start.
 */
const LOADED_WHEN_NEEDED = /^internal\/deps\/(cjs-module-lexer|amaro)\//;

test("a start of the embedded default loads none of Node's built-in modules after it changed V8's flags", async () => {
  const root = tempDir();
  const probe = join(root, 'probe.json');
  const gw = await startFerry(['--config', join(REPO_ROOT, 'config/gateway.yaml'), '--data-dir', join(root, 'data')], {
    NODE_OPTIONS: `--import ${join(REPO_ROOT, 'test/fixtures/builtins-probe.mjs')}`,
    BUILTINS_PROBE_FILE: probe,
    // The embedded default: its Kafka and PostgreSQL bridges stay off.
    KAFKA_BROKERS: undefined,
    POSTGRES_URL: undefined,
  });
  try {
    // The probe writes every 20 ms; what it wrote after the ready line covers the whole start.
    await new Promise((resolve) => setTimeout(resolve, 100));
    const { flagsChangedAt, late } = JSON.parse(readFileSync(probe, 'utf8')) as { flagsChangedAt: number | null; late: string[] };
    assert.notEqual(flagsChangedAt, null, '`ferry run` changed a V8 flag (TurboFan held back)');
    assert.deepEqual(
      late.filter((name) => !LOADED_WHEN_NEEDED.test(name)),
      [],
      'built-in modules loaded after the flags changed: add the public ones to bin/builtins.js',
    );
  } finally {
    gw.child.kill('SIGKILL');
  }
});

test('`ferry run` keeps its code cache apart from the other commands, which do not change V8 flags', async () => {
  // V8 takes a module's code cache only under the flags it was made with: in one directory,
  // `ferry validate` and `ferry run` threw each other's cache away at each turn. bin/ferry.js
  // enables the cache after the flags change, and Node names the directory in its place by
  // their hash. The place is in the temp directory (NODE_COMPILE_CACHE, which makes Node enable
  // the cache before Ferry changes anything, would name one directory for all).
  const root = tempDir();
  const env = { TMPDIR: root, NODE_COMPILE_CACHE: undefined, KAFKA_BROKERS: undefined, POSTGRES_URL: undefined };
  const config = join(REPO_ROOT, 'config/gateway.yaml');
  assert.equal((await ferry(['validate', '--config', config], env)).code, 0);
  const gw = await startFerry(['--config', config, '--data-dir', join(root, 'data')], env);
  // Stopped by a signal, as a service manager stops it: Node writes the cache as it exits.
  gw.child.kill('SIGTERM');
  assert.equal(await gw.exited, 0);
  const validate = await ferry(['validate', '--config', config], { ...env, NODE_DEBUG_NATIVE: 'COMPILE_CACHE' });
  assert.equal(validate.code, 0, validate.stderr);
  assert.match(validate.stderr, /was accepted/, 'the cache of the first `ferry validate` is used');
  assert.doesNotMatch(validate.stderr, /was rejected/);
});
