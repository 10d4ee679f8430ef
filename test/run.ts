// `npm test` entry: node --import tsx test/run.ts [node --test flags] [test files]
// Starts a throwaway Kafka (unless FERRY_TEST_KAFKA is set), runs node:test over test/**/*.test.ts
// (or the files given) with FERRY_TEST_KAFKA exported, stops Kafka, exits with the runner's code.
// Flags must use the --flag=value form: any argument not starting with "-" is taken as a file.
import { spawn } from 'node:child_process';
import { globSync } from 'node:fs';
import { constants } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startKafka, type KafkaHarness } from './harness/kafka.ts';

const testDir = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const flags = args.filter((arg) => arg.startsWith('-'));
const givenFiles = args.filter((arg) => !arg.startsWith('-'));
const files =
  givenFiles.length > 0
    ? givenFiles
    : globSync('**/*.test.ts', { cwd: testDir })
        .map((file) => relative(process.cwd(), join(testDir, file)))
        .sort();

let interrupted: NodeJS.Signals | undefined;
let forward: ((signal: NodeJS.Signals) => void) | undefined;
function onSignal(signal: NodeJS.Signals): void {
  // During Kafka startup, exiting is enough: the harness kills the JVM from its 'exit' hook.
  if (!forward || interrupted) process.exit(128 + constants.signals[signal]);
  interrupted = signal;
  forward(signal);
}
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);

let kafka: KafkaHarness | undefined;
const env = { ...process.env };
if (!env['FERRY_TEST_KAFKA']) {
  kafka = await startKafka({ log: (line) => process.stderr.write(`[ferry test] ${line}\n`) });
  env['FERRY_TEST_KAFKA'] = kafka.bootstrap;
}

const runner = spawn(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=spec', '--test-concurrency=2', '--test-timeout=300000', ...flags, ...files], {
  stdio: 'inherit',
  env,
});
forward = (signal) => runner.kill(signal);
const exitCode = await new Promise<number>((resolve) => {
  runner.once('exit', (code, signal) => resolve(code ?? 128 + (signal ? constants.signals[signal] : 0)));
});

if (kafka) {
  process.stderr.write('[ferry test] stopping Kafka...\n');
  await kafka.stop();
}
process.exit(exitCode);
