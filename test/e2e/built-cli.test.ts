import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { ensureBuilt } from '../harness/build.ts';
import { eventually } from '../harness/eventually.ts';
import { REPO_ROOT, ferry, startFerry } from '../harness/ferry-process.ts';
import { mosquittoPub } from '../harness/mosquitto.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-built-');

/** Packages the embedded default has no use for: loaded only when a bridge or option needs them (kysely: only for a handler bridge that runs). */
const LAZY = ['kafkajs', 'kafkajs-snappy', '@2l/kafkajs-lz4', 'ajv', 'ioredis', 'pg', 'pino-pretty', 'mqtt', 'ws', 'tsx', 'kysely'];

test('the compiled build: `ferry run` of the embedded default from dist/, a device publish kept in history, SIGTERM exits 0; heavy packages not loaded', async (t) => {
  ensureBuilt();
  const dir = tempDir();
  // Every module the gateway loads, written down by a hook loaded before it.
  const trace = join(dir, 'modules.txt');
  const debugOut = join(dir, 'debug.txt');
  const hook = join(dir, 'trace.mjs');
  writeFileSync(
    hook,
    [
      "import module from 'node:module';",
      "import { appendFileSync } from 'node:fs';",
      `const out = ${JSON.stringify(trace)};`,
      "module.registerHooks({ load(url, context, next) { appendFileSync(out, url + '\\n'); return next(url, context); } });",
      // Once the broker has loaded mqtt-packet, its debug namespaces are turned on, written to a
      // file: its loggers that were off when it loaded must stay no-ops (src/mqtt/quiet-debug.ts).
      `const debugOut = ${JSON.stringify(debugOut)};`,
      `const req = module.createRequire(${JSON.stringify(join(REPO_ROOT, 'package.json'))});`,
      "const packet = req.resolve('mqtt-packet');",
      'const timer = setInterval(() => {',
      '  if (req.cache[packet] === undefined) return;',
      '  clearInterval(timer);',
      "  const debug = req('debug');",
      "  debug.log = (...args) => appendFileSync(debugOut, args.join(' ') + '\\n');",
      "  debug.enable('mqtt-packet:*');",
      '}, 5);',
      'timer.unref();',
      '',
    ].join('\n'),
  );
  const gw = await startFerry(['--config', 'config/gateway.yaml', '--data-dir', join(dir, 'data')], {
    KAFKA_BROKERS: '',
    POSTGRES_URL: '',
    FERRY_FROM_SOURCE: '',
    // An empty bridge cache: a cached bridge is loaded by the cache's hook, which the trace never sees.
    FERRY_CACHE_DIR: join(dir, 'cache'),
    NODE_OPTIONS: `--import ${hook}`,
  });
  try {
    t.diagnostic(`ready after ${Math.round(gw.readyAfterMs)} ms`);
    const pub = await mosquittoPub(gw.mqttUrl, 'devices/built-1/telemetry/climate', '{"celsius":20}', { clientId: 'built-1', qos: 1 });
    assert.equal(pub.code, 0, pub.stderr);
    await eventually(async () => {
      const history = await ferry(['history', '--data-dir', join(dir, 'data'), '--json'], { NODE_OPTIONS: '' });
      assert.equal(history.code, 0, history.stderr);
      assert.match(history.stdout, /"topic":"devices\/built-1\/telemetry\/climate".*"payload":"\{\\"celsius\\":20\}"/);
    });

    assert.equal(existsSync(debugOut) ? readFileSync(debugOut, 'utf8') : '', '', "mqtt-packet's loggers, off when it loaded, write nothing");
    const modules = readFileSync(trace, 'utf8').trim().split('\n');
    const ferryCode = modules.filter((url) => url.startsWith(`file://${REPO_ROOT}`) && !url.includes('/node_modules/'));
    assert.ok(
      ferryCode.some((url) => url.endsWith('/dist/cli/main.js')),
      'runs dist/cli/main.js',
    );
    assert.deepEqual(
      ferryCode.filter((url) => url.includes('/src/')),
      [],
      'loads nothing from src/',
    );
    // The example TypeScript bridges (disabled without KAFKA_BROKERS) still load, through Node's
    // type stripping, and their `import ... from 'ferry'` is the compiled API.
    assert.ok(ferryCode.some((url) => /\/bridges\/alarm-alerts\.ts(\?|$)/.test(url)));
    assert.ok(readdirSync(join(dir, 'cache', 'bridges')).length > 0, 'the stripped bridges are cached for the next start');
    assert.ok(ferryCode.some((url) => url.endsWith('/dist/index.js')));
    const packages = new Set(modules.map((url) => /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url)?.[1]).filter((name) => name !== undefined));
    assert.deepEqual(
      LAZY.filter((name) => packages.has(name)),
      [],
      `loaded: ${[...packages].sort().join(', ')}`,
    );
  } finally {
    gw.child.kill('SIGTERM');
  }
  assert.equal(await gw.exited, 0);
});
