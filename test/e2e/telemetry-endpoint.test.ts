// `ferry run` with OTEL_EXPORTER_OTLP_ENDPOINT='not a url' stopped with the exporter's words
// ("cannot start: Configuration: Could not parse user-provided export URL: 'not a url/v1/traces'")
// and a stack trace in its log; with `localhost:4318` (no scheme) or `ftp://...` it started and
// every export failed later; `ferry validate` said ok to all three. Now each is a config problem
// that names the variable and what it takes, from `ferry validate` and `ferry run` alike.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { FERRY_BIN, REPO_ROOT } from '../harness/ferry-process.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-telemetry-endpoint-');

function gatewayFile(): string {
  const dir = tempDir();
  const file = join(dir, 'gateway.yaml');
  writeFileSync(file, 'mqtt: {host: 127.0.0.1, port: 0, allowAnonymous: loopback}\nadmin: {enabled: false}\ndevices: []\nbridges: []\ngateway: {dataDir: data}\n');
  return file;
}

/**
 * `ferry <args>` with `env`, in a process group of its own, killed after `limitMs` (a gateway that
 * starts runs until stopped): its exit code (null when killed) and standard error.
 */
async function ferryWith(args: readonly string[], env: Record<string, string>, limitMs: number): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, [FERRY_BIN, ...args], { cwd: REPO_ROOT, env: { ...process.env, ...env }, detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
  const kill = () => {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) process.kill(-child.pid, 'SIGKILL');
  };
  process.once('exit', kill);
  const timer = setTimeout(kill, limitMs);
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  try {
    const [code] = (await once(child, 'close')) as [number | null];
    return { code, stderr };
  } finally {
    clearTimeout(timer);
    kill();
    process.off('exit', kill);
  }
}

const EXPECTED = 'expected the http:// or https:// URL of an OTLP/HTTP receiver, such as http://127\\.0\\.0\\.1:4318';

for (const [value, problem] of [
  ['not a url', 'not a URL'],
  ['localhost:4318', 'no http:// or https:// before the host'],
  ['ftp://collector:4318', 'the scheme ftp: is not http: or https:'],
] as const) {
  test(`OTEL_EXPORTER_OTLP_ENDPOINT='${value}': validate and run report it as a config problem naming the variable, exit 1`, { timeout: 60_000 }, async () => {
    const config = gatewayFile();
    const lines = new RegExp(`^environment: OTEL_EXPORTER_OTLP_ENDPOINT: ${problem}; ${EXPECTED}\\nferry: 1 problem in the config\\n$`);
    for (const command of ['validate', 'run']) {
      const result = await ferryWith([command, '--config', config], { OTEL_EXPORTER_OTLP_ENDPOINT: value }, 20_000);
      assert.equal(result.code, 1, `${command}: ${result.stderr}`);
      assert.match(result.stderr, lines, command);
    }
  });
}
