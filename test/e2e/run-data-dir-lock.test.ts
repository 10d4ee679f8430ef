// One gateway a data directory. A second `ferry run` on the directory of a running one started:
// it took the first one's connected sessions for what a crash leaves and recorded them offline in
// broker.db, after which `ferry sessions purge` (without --force) deleted a session under its
// connected device; both gateways delivered the same buffer. Now the second one is refused, the
// first's state is untouched, and a gateway killed with SIGKILL leaves no stale lock behind. A
// gateway started with the library's startGateway takes the same lock.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { MqttClient } from 'mqtt';
import pino from 'pino';
import { isFerryError } from '../../src/core/errors.ts';
import { startGateway } from '../../src/lib/gateway.ts';
import { ferry, ferryWithin, startFerry, type RunningFerry } from '../harness/ferry-process.ts';
import { writeGatewayTree } from '../harness/gateway-tree.ts';
import { connectRecording } from '../harness/recording-client.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-run-lock-');
const clients: MqttClient[] = [];
const gateways: RunningFerry[] = [];
after(() => {
  for (const c of clients) c.end(true);
  for (const gw of gateways) gw.child.kill('SIGKILL');
});

/** `ferry run` expected to refuse: its exit code and stderr, or a failure when it is still running after 20 s. */
async function runRefused(args: readonly string[]): Promise<{ code: number | null; stderr: string }> {
  const { code, stdout, stderr } = await ferryWithin(['run', '--mqtt-port', '0', '--admin-port', '0', ...args], 20_000);
  assert.ok(!stdout.includes('accepting MQTT connections'), `a second gateway started on the same data directory:\n${stdout.slice(0, 2000)}`);
  return { code, stderr };
}

async function sessionState(dataDir: string, clientId: string): Promise<unknown> {
  const shown = await ferry(['sessions', 'show', clientId, '--json', '--data-dir', dataDir]);
  assert.equal(shown.code, 0, shown.stderr);
  return (JSON.parse(shown.stdout) as { connected: boolean }).connected;
}

test('a second ferry run on the data directory of a running one exits 1 naming --data-dir, and leaves the first one its sessions', { timeout: 120_000 }, async () => {
  const root = tempDir();
  const dataDir = join(root, 'data');
  const config = writeGatewayTree(root, '{allowAnonymous: true}', {});
  const first = await startFerry(['--config', config, '--data-dir', dataDir]);
  gateways.push(first);
  await (await connectRecording(first.mqttUrl, { clientId: 'dev-1', clean: false }, clients)).client.subscribeAsync('cmd/1/#', { qos: 1 });
  assert.equal(await sessionState(dataDir, 'dev-1'), true);

  const second = await runRefused(['--config', config, '--data-dir', dataDir]);
  assert.equal(second.code, 1);
  const lines = second.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, second.stderr);
  assert.match(lines[0] as string, /^ferry: the data directory .* is in use by another gateway .*--data-dir/);

  assert.equal(await sessionState(dataDir, 'dev-1'), true, "the refused gateway recorded the first one's connected session as offline");
  const purge = await ferry(['sessions', 'purge', 'dev-1', '--yes', '--data-dir', dataDir]);
  assert.equal(purge.code, 1, 'a connected session was purged');
  // --force is for a gateway that stopped without recording the disconnect, not for a running one.
  const forced = await ferry(['sessions', 'purge', 'dev-1', '--yes', '--force', '--data-dir', dataDir]);
  assert.equal(forced.code, 1, forced.stdout);
  assert.match(forced.stderr, /a gateway is running on .*--force is only for a gateway that stopped/);
  assert.equal(await sessionState(dataDir, 'dev-1'), true);

  // Killed at once, the first leaves no lock behind: the kernel lets go of it with the process.
  first.child.kill('SIGKILL');
  await first.exited;
  const next = await startFerry(['--config', config, '--data-dir', dataDir]);
  gateways.push(next);
  next.child.kill('SIGTERM');
  assert.equal(await next.exited, 0);
});

test('a data directory that cannot be made: one line naming --data-dir, exit 1', { timeout: 60_000 }, async () => {
  const root = tempDir();
  const config = writeGatewayTree(root, '{allowAnonymous: true}', {});
  const notADirectory = join(root, 'gateway.yaml');
  const result = await runRefused(['--config', config, '--data-dir', notADirectory]);
  assert.equal(result.code, 1);
  assert.match(result.stderr, /^ferry: cannot start: data directory (\S+): \1 exists and is not a directory \(choose it with --data-dir or gateway\.dataDir\)\n$/);
});

/** A library gateway's config on `dataDir`, on free ports. */
const libraryConfig = (dataDir: string) => ({ gateway: { dataDir }, mqtt: { host: '127.0.0.1', port: 0 }, admin: { enabled: false } });

test('a gateway started with the library takes the same lock: refused on the directory of a running ferry run, and it refuses one', { timeout: 120_000 }, async () => {
  const root = tempDir();
  const dataDir = join(root, 'data');
  const config = writeGatewayTree(root, '{allowAnonymous: true}', {});
  const running = await startFerry(['--config', config, '--data-dir', dataDir]);
  gateways.push(running);
  // A gateway that started anyway is stopped, so that a failure here does not leave it running.
  const refused = await startGateway({ config: libraryConfig(dataDir), logger: pino({ level: 'silent' }) }).then(
    async (started) => {
      await started.stop();
      return undefined;
    },
    (error: unknown) => error,
  );
  assert.ok(isFerryError(refused, 'CONFIG_INVALID'), `startGateway was not refused: ${String(refused)}`);
  assert.match(refused.message, /data directory .* is in use by another gateway/);
  running.child.kill('SIGTERM');
  assert.equal(await running.exited, 0);

  const embedded = await startGateway({ config: libraryConfig(dataDir), logger: pino({ level: 'silent' }) });
  try {
    await embedded.ready;
    const second = await runRefused(['--config', config, '--data-dir', dataDir]);
    assert.equal(second.code, 1);
    assert.match(second.stderr, /is in use by another gateway/);
  } finally {
    await embedded.stop();
  }
  // Stopped, the library gateway lets go of the directory.
  const next = await startFerry(['--config', config, '--data-dir', dataDir]);
  gateways.push(next);
  next.child.kill('SIGTERM');
  assert.equal(await next.exited, 0);
});
