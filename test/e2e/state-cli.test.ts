// `ferry sessions list|show|purge` and `ferry retained list|purge` against the broker state of a
// running `ferry run` (mqtt.persistence sqlite), with real clients (mqtt.js, mosquitto_pub): what
// they print (text and --json), and that the running broker sees a purge: a purged session is not
// resumed, purged retained messages are not sent to a new subscriber, and a connected client's
// session is not purged.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { IClientOptions, MqttClient } from 'mqtt';
import { eventually } from '../harness/eventually.ts';
import { type RunningFerry, ferry, startFerry } from '../harness/ferry-process.ts';
import { writeGatewayTree } from '../harness/gateway-tree.ts';
import { mosquittoPub } from '../harness/mosquitto.ts';
import { tempDirs } from '../harness/temp.ts';
import { type RecordingClient, connectRecording } from '../harness/recording-client.ts';

const tempDir = tempDirs('ferry-state-cli-');
const clients: MqttClient[] = [];
let gw: RunningFerry;
let dataDir: string;
after(async () => {
  for (const c of clients) c.end(true);
  gw?.child.kill('SIGKILL');
});

async function client(options: IClientOptions): Promise<RecordingClient> {
  return connectRecording(gw.mqttUrl, options, clients);
}

async function pub(topic: string, message: string, retain = false): Promise<void> {
  const result = await mosquittoPub(gw.mqttUrl, topic, message, { qos: 1, retain });
  assert.equal(result.code, 0, result.stderr);
}

async function cli(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return ferry([...args, '--data-dir', dataDir]);
}

function jsonLines(stdout: string): Record<string, unknown>[] {
  return stdout
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe('ferry sessions and ferry retained on a running gateway', { timeout: 120_000 }, () => {
  let connected: MqttClient;
  before(async () => {
    const root = tempDir();
    dataDir = join(root, 'data');
    gw = await startFerry(['--config', writeGatewayTree(root, '{allowAnonymous: true}', {}), '--data-dir', dataDir]);
    const offline = await client({ clientId: 'dev-a', clean: false });
    await offline.client.subscribeAsync('cmd/a/#', { qos: 1 });
    await offline.client.endAsync();
    connected = (await client({ clientId: 'dev-b', clean: false })).client;
    await connected.subscribeAsync('cmd/b/#', { qos: 1 });
    await pub('cmd/a/1', 'one');
    await pub('cmd/a/2', 'two');
    await pub('site/door', 'closed', true);
    await pub('site/window', 'open', true);
    await pub('other/x', 'kept', true);
  });

  test('sessions list: each saved session, connected or offline, its subscriptions and queue', async () => {
    const sessions = await eventually(async () => {
      const result = await cli('sessions', 'list', '--json');
      assert.equal(result.code, 0, result.stderr);
      const rows = jsonLines(result.stdout);
      assert.deepEqual(
        rows.map((r) => [r.clientId, r.connected, r.subscriptions, r.queuedMessages]),
        [
          ['dev-a', false, 1, 2],
          ['dev-b', true, 1, 0],
        ],
      );
      return rows;
    });
    assert.match(String(sessions[0]?.expiresAt), /^\d{4}-\d\d-\d\dT/, 'an offline 3.1.1 session has an expiry (mqtt.limits.sessionExpirySeconds)');
    const text = await cli('sessions', 'list');
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^dev-a\s+\S+\s+offline since \S+\s+\S+\s+1\s+2\s+/m);
    assert.match(text.stdout, /^dev-b\s+.*connected/m);
    assert.match(text.stdout, /2 sessions\n$/);
    // Text columns start under their headers (they were right-aligned like the figures).
    const [header = ''] = text.stdout.split('\n');
    const devA = text.stdout.split('\n').find((line) => line.startsWith('dev-a')) ?? '';
    assert.equal(devA.indexOf('offline since'), header.indexOf('STATE'), text.stdout);
  });

  test('sessions show: one session with its subscriptions; an unknown client is an error', async () => {
    const result = await cli('sessions', 'show', 'dev-a', '--json');
    assert.equal(result.code, 0, result.stderr);
    const [shown] = jsonLines(result.stdout);
    assert.deepEqual(shown?.subscriptionList, [{ topic: 'cmd/a/#', qos: 1 }]);
    const text = await cli('sessions', 'show', 'dev-a');
    assert.match(text.stdout, /subscriptions: 1\n {2}cmd\/a\/# {2}qos 1/);
    const unknown = await cli('sessions', 'show', 'nobody');
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /no saved session of client 'nobody'/);
  });

  test('sessions purge: refused for a connected client; without --yes only says what it would delete; then the running broker does not resume the session', async () => {
    const refused = await cli('sessions', 'purge', 'dev-b', '--yes');
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /client 'dev-b' is connected/);
    const dry = await cli('sessions', 'purge', 'dev-a');
    assert.equal(dry.code, 1);
    assert.match(dry.stderr, /would delete the session of 'dev-a': 1 subscription\(s\), 2 queued message\(s\)/);

    const done = await cli('sessions', 'purge', 'dev-a', '--yes', '--json');
    assert.equal(done.code, 0, done.stderr);
    assert.equal((jsonLines(done.stdout)[0]?.purged as { queuedMessages: number }).queuedMessages, 2);
    // Published after the purge: the broker must not queue it for the purged session.
    await pub('cmd/a/3', 'three');
    const back = await client({ clientId: 'dev-a', clean: false });
    assert.equal(back.sessionPresent, false, 'the purged session is not resumed');
    await back.client.subscribeAsync('marker/a', { qos: 1 });
    await pub('marker/a', 'end');
    await eventually(() => assert.deepEqual(back.seen, ['marker/a end'], 'no queued message of the purged session'));
    await back.client.endAsync();
    // The connected client's session is untouched.
    await pub('cmd/b/1', 'for b');
    const list = jsonLines((await cli('sessions', 'list', '--json')).stdout);
    assert.ok(list.some((r) => r.clientId === 'dev-b' && r.subscriptions === 1));
  });

  test('retained list and purge: by filter, text and --json; a new subscriber no longer gets purged ones', async () => {
    const listed = await cli('retained', 'list', '--topic', 'site/#', '--json');
    assert.equal(listed.code, 0, listed.stderr);
    assert.deepEqual(
      jsonLines(listed.stdout).map((r) => [r.topic, r.payload]),
      [
        ['site/door', 'closed'],
        ['site/window', 'open'],
      ],
    );
    const text = await cli('retained', 'list');
    assert.match(text.stdout, /^other\/x {2}\S+ {2}4 B {2}kept$/m);
    assert.match(text.stdout, /3 shown; the gateway keeps 3 retained message\(s\), 14 B\n$/);

    const bad = await cli('retained', 'purge', 'site/#/x', '--yes');
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /invalid topic filter/);
    const dry = await cli('retained', 'purge', 'site/#');
    assert.equal(dry.code, 1);
    assert.match(dry.stderr, /would delete 2 retained message\(s\)/);
    const done = await cli('retained', 'purge', 'site/#', '--yes', '--json');
    assert.equal(done.code, 0, done.stderr);
    assert.deepEqual(jsonLines(done.stdout)[0]?.purged, ['site/door', 'site/window']);

    const reader = await client({ clientId: 'reader' });
    await reader.client.subscribeAsync(['site/#', 'other/#'], { qos: 1 });
    await reader.client.publishAsync('other/zz-marker', 'end', { qos: 1 });
    await eventually(() => assert.ok(reader.seen.includes('other/zz-marker end')));
    assert.deepEqual(
      reader.seen.filter((s) => !s.includes('marker')),
      ['other/x kept'],
    );
  });
});
