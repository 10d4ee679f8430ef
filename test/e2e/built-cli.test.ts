import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { ensureBuilt } from '../harness/build.ts';
import { eventually } from '../harness/eventually.ts';
import { REPO_ROOT, ferry, startFerry } from '../harness/ferry-process.ts';
import { mosquittoPub } from '../harness/mosquitto.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-built-');

/** Packages the embedded default has no use for: loaded only when a bridge or option needs them (kysely: only for a handler bridge that runs; readable-stream: only for the mqtt client, see src/mqtt/lean-mqtt-packet.ts). */
const LAZY = ['kafkajs', 'kafkajs-snappy', '@2l/kafkajs-lz4', 'ajv', 'ioredis', 'pg', 'pino-pretty', 'mqtt', 'ws', 'tsx', 'kysely', 'readable-stream'];
/** Packages inside the bundled CLI (scripts/build.ts): never loaded from node_modules, also not by the bridges' `import ... from 'rxjs'`. */
const BUNDLED = ['rxjs', 'tslib', 'zod', 'yaml', 'commander'];

test('the compiled build: `ferry run` of the embedded default from the bundle in dist/app/, a device publish kept in history, SIGTERM exits 0; heavy packages not loaded, bundled ones loaded once', async (t) => {
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
      // file: its loggers that were off when it loaded must stay no-ops (src/mqtt/lean-mqtt-packet.ts).
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
      ferryCode.some((url) => url.endsWith('/dist/app/cli/main.js')),
      'runs dist/app/cli/main.js',
    );
    assert.deepEqual(
      ferryCode.filter((url) => url.includes('/src/')),
      [],
      'loads nothing from src/',
    );
    // The example TypeScript bridges (disabled without KAFKA_BROKERS) still load, through Node's
    // type stripping, and their `import ... from 'ferry'` is the bundle's API, their rxjs the bundle's.
    assert.ok(ferryCode.some((url) => /\/bridges\/alarm-alerts\.ts(\?|$)/.test(url)));
    assert.ok(readdirSync(join(dir, 'cache', 'bridges')).length > 0, 'the stripped bridges are cached for the next start');
    assert.ok(ferryCode.some((url) => url.endsWith('/dist/app/index.js')));
    assert.ok(ferryCode.some((url) => url.endsWith('/dist/app/vendor/rxjs.js')));
    assert.deepEqual(
      ferryCode.filter((url) => /\/dist\/(?!app\/)/.test(url)),
      [],
      'nothing of the unbundled library',
    );
    const packages = new Set(modules.map((url) => /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url)?.[1]).filter((name) => name !== undefined));
    assert.deepEqual(
      [...LAZY, ...BUNDLED].filter((name) => packages.has(name)),
      [],
      `loaded: ${[...packages].sort().join(', ')}`,
    );
  } finally {
    gw.child.kill('SIGTERM');
  }
  assert.equal(await gw.exited, 0);
});

/** A bridge that refuses to load unless an observable Ferry makes is (or, with EXPECT_SHARED=false, is not) an Observable of its own rxjs. */
const RXJS_PROBE = [
  "import { Observable } from 'rxjs';",
  "import { map } from 'rxjs/operators';",
  "import { defineBridge, type Message } from 'ferry';",
  "import { fromMqtt } from 'ferry/mqtt';",
  '',
  "const shared = fromMqtt({ url: 'mqtt://127.0.0.1:1', clientId: 'probe', topics: ['t'] }) instanceof Observable;",
  "if (String(shared) !== process.env.EXPECT_SHARED) throw new Error(`an observable of Ferry is one of this bridge's rxjs: ${shared}`);",
  '',
  'export default defineBridge({',
  "  name: 'probe',",
  "  from: { mqtt: { topics: ['devices/+/telemetry'] } },",
  '  to: { out: { history: {} } },',
  "  handle: (messages, tools) => messages.pipe(map((m: Message) => tools.to('out', m))),",
  '});',
  '',
].join('\n');

test("a bridge outside the checkout imports ferry, ferry/<name>, rxjs and rxjs/operators: the gateway's own rxjs (one copy, in the bundle too), unless the bridge has its own", async () => {
  ensureBuilt();
  const root = tempDir();
  mkdirSync(join(root, 'bridges'));
  writeFileSync(join(root, 'gateway.yaml'), 'bridges: [bridges]\n');
  writeFileSync(join(root, 'bridges/probe.ts'), RXJS_PROBE);
  const validate = (build: 'bundle' | 'sources', shared: boolean) =>
    ferry(['validate', '--config', join(root, 'gateway.yaml')], { FERRY_FROM_SOURCE: build === 'sources' ? '1' : '', EXPECT_SHARED: String(shared) });
  for (const build of ['bundle', 'sources'] as const) {
    const out = await validate(build, true);
    assert.equal(out.code, 0, `${build}: ${out.stderr}`);
    assert.match(out.stdout, /ok \(1 bridge, 1 enabled; 0 device profiles; TypeScript bridges type-checked\)/);
    // The probe fails when its expectation is wrong: the check above is not vacuous.
    const wrong = await validate(build, false);
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /an observable of Ferry is one of this bridge's rxjs: true/);
  }
  // A copy of rxjs in the bridges' own node_modules is theirs, as any package they install is.
  cpSync(join(REPO_ROOT, 'node_modules/rxjs'), join(root, 'node_modules/rxjs'), { recursive: true });
  for (const build of ['bundle', 'sources'] as const) {
    const out = await validate(build, false);
    assert.equal(out.code, 0, `${build}, own rxjs: ${out.stderr}`);
  }
});

test("a config's problems read the same from the bundle as from the sources (the bundle keeps zod's English messages only)", async () => {
  ensureBuilt();
  const root = tempDir();
  writeFileSync(join(root, 'gateway.yaml'), 'gateway: { name: 5 }\nmqtt: { port: "x", maxConnections: -1 }\nbridges: []\n');
  const [bundle, sources] = await Promise.all(['', '1'].map((fromSource) => ferry(['validate', '--config', join(root, 'gateway.yaml')], { FERRY_FROM_SOURCE: fromSource })));
  assert.equal(bundle?.code, 1);
  assert.match(bundle?.stderr ?? '', /gateway\.name: expected string, received number/);
  assert.equal(bundle?.stderr, sources?.stderr);
});

test("the bundle's files are ASCII, so that V8 keeps their sources at one byte a character", () => {
  ensureBuilt();
  const app = join(REPO_ROOT, 'dist/app');
  const files = readdirSync(app, { recursive: true, encoding: 'utf8' }).filter((name) => name.endsWith('.js'));
  assert.ok(files.length > 10, `bundle files: ${files.length}`);
  const outside = files.filter((name) => /[^\x00-\x7f]/.test(readFileSync(join(app, name), 'utf8')));
  assert.deepEqual(outside, []);
});
