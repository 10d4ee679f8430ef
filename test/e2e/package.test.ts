import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { ensureBuilt } from '../harness/build.ts';
import { REPO_ROOT } from '../harness/ferry-process.ts';
import { randomName, requireService } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-package-');
const ENTRY_POINTS = ['ferry', 'ferry/kafka', 'ferry/mqtt', 'ferry/buffer', 'ferry/redis', 'ferry/postgres', 'ferry/sqlite'];

function run(command: string, args: readonly string[], cwd: string, timeout = 600_000) {
  const result = spawnSync(command, args, { cwd, encoding: 'utf8', timeout, env: { ...process.env, npm_config_engine_strict: 'true' } });
  assert.equal(result.status, 0, `${command} ${args.join(' ')} exited ${result.status ?? result.signal}:\n${result.stdout}\n${result.stderr}`);
  return result.stdout;
}

test('the packed package installs into a fresh project: every entry point imports, a pipeline runs against Kafka and Redis, the ferry bin runs, a consumer type-checks against the published types', async () => {
  ensureBuilt();
  const [brokers, redis] = [await requireService('kafka'), await requireService('redis')];
  const dir = tempDir();

  // The tarball: compiled JavaScript and declarations, the bin, the example config; no TypeScript sources.
  const packed = JSON.parse(run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], REPO_ROOT)) as { filename: string; files: { path: string }[] }[];
  const files = packed[0]?.files.map((f) => f.path) ?? [];
  for (const entry of ['dist/index.js', 'dist/index.d.ts', 'dist/lib/kafka.js', 'dist/lib/kafka.d.ts', 'bin/ferry.js', 'bin/postinstall.js', 'config/gateway.yaml']) {
    assert.ok(files.includes(entry), `${entry} is packed`);
  }
  assert.deepEqual(
    files.filter((f) => f.startsWith('src/') || f.startsWith('test/') || (f.endsWith('.ts') && !f.endsWith('.d.ts') && !f.startsWith('bridges/'))),
    [],
  );

  const project = join(dir, 'project');
  run('mkdir', ['-p', project], dir);
  // The install scripts docs/library.md tells a project to allow (npm 12 runs no others; esbuild's comes through tsx).
  const allowScripts = { ferry: true, 'better-sqlite3': true, esbuild: true };
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module', allowScripts }));
  // Dependencies from npm's cache where it has them (npm ci filled it).
  run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', join(dir, packed[0]?.filename as string)], project);
  // The postinstall applied Ferry's patches where npm put aedes, aedes-persistence, mqemitter and mqtt-packet: the broker refuses an unpatched aedes or mqtt-packet.
  assert.match(readFileSync(join(project, 'node_modules/aedes/aedes.js'), 'utf8'), /protocolErrorsAnswered/);
  assert.match(readFileSync(join(project, 'node_modules/aedes-persistence/asyncPersistence.js'), 'utf8'), /match_empty_levels: true/);
  assert.match(readFileSync(join(project, 'node_modules/mqemitter/mqemitter.js'), 'utf8'), /this\._matched = new Map\(\)/);
  assert.match(readFileSync(join(project, 'node_modules/mqtt-packet/parser.js'), 'utf8'), /static refusesDuplicateProperties = true/);
  const libraryDoc = readFileSync(join(REPO_ROOT, 'docs/library.md'), 'utf8');
  for (const name of Object.keys(allowScripts)) assert.ok(libraryDoc.includes(`"${name}": true`), `docs/library.md tells to allow ${name}'s install scripts`);

  for (const entry of ENTRY_POINTS) {
    const out = run(process.execPath, ['--input-type=module', '-e', `const m = await import('${entry}'); console.log(Object.keys(m).sort().join(','))`], project);
    assert.notEqual(out.trim(), '', `${entry} exports something`);
  }
  assert.equal(run(join(project, 'node_modules/.bin/ferry'), ['--version'], project).trim(), JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')).version);

  copyFileSync(join(REPO_ROOT, 'test/e2e/package/consumer.ts'), join(project, 'consumer.ts'));
  // An option misspelled: the published types must refuse it.
  writeFileSync(join(project, 'broken.ts'), "import { kafkaProducer } from 'ferry/kafka';\n\nkafkaProducer({ brokers: 'localhost:9092', akcs: 'all' });\n");
  const topic = randomName('ferry-package-');
  const result = JSON.parse(run(process.execPath, ['consumer.ts', brokers.join(','), redis, join(dir, 'data'), topic], project, 120_000)) as {
    rows: string[];
    refused: string;
    seen: string;
    notes: string[];
  };
  assert.deepEqual(result.rows, ['one', 'two', 'three']);
  assert.match(result.refused, /^topic: /);
  assert.equal(result.seen, '3');
  assert.deepEqual(result.notes, ['typed']);

  // Type-checked against the published declarations (the TypeScript compiler of this checkout).
  const tsc = join(REPO_ROOT, 'node_modules/typescript/bin/tsc');
  const tsconfig = (file: string) => {
    writeFileSync(
      join(project, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'es2023',
          module: 'nodenext',
          moduleResolution: 'nodenext',
          strict: true,
          exactOptionalPropertyTypes: true,
          noEmit: true,
          allowImportingTsExtensions: true,
          skipLibCheck: true,
          types: ['node'],
          typeRoots: [join(REPO_ROOT, 'node_modules/@types')],
        },
        files: [file],
      }),
    );
    return spawnSync(process.execPath, [tsc, '-p', 'tsconfig.json', '--pretty', 'false'], { cwd: project, encoding: 'utf8' });
  };
  const good = tsconfig('consumer.ts');
  assert.equal(good.status, 0, good.stdout + good.stderr);
  const bad = tsconfig('broken.ts');
  assert.notEqual(bad.status, 0);
  assert.match(bad.stdout, /broken\.ts\(3,\d+\): error TS2\d+: .*'akcs'/);
});
