// Hot reload through its three triggers (SIGHUP, POST /api/reload, `ferry reload`) on the real
// CLI gateway, with real MQTT clients publishing QoS 1 all along.
import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { connect } from 'mqtt';
import { fetchStatus } from '../harness/crashing-gateway.ts';
import { type DeviceStats, LoadPacer, startFleet } from '../harness/devices.ts';
import { type RunningFerry, ferry, startFerry } from '../harness/ferry-process.ts';
import { HISTORY_BRIDGE, credential, writeGatewayTree } from '../harness/gateway-tree.ts';
import { mosquittoPub } from '../harness/mosquitto.ts';
import { freePorts } from '../harness/net.ts';
import { readTopic } from '../harness/kafka-read.ts';
import { checkStreams } from '../harness/sequence-check.ts';
import { randomName, requireService } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';
import { until } from '../harness/eventually.ts';

const dirs = tempDirs('ferry-e2e-reload-');

const DEVICES = 20;
const WINDOW = 10;
/** New messages allowed every 20 ms over the whole fleet: about 500 per second. */
const STEP = 10;
/** Acknowledged messages to wait for between reloads, so that each one lands in running load. */
const BETWEEN = 400;

/** Polls `check` until it returns a value (not undefined); fails after `timeoutMs` with `what`. */
const waitFor = <T>(what: string, check: () => Promise<T | undefined> | T | undefined): Promise<T> => until(what, check, { timeoutMs: 90_000, intervalMs: 100 });

/** The next `reload` log line after the first `from` lines. */
function reloadLog(gw: RunningFerry, from: number): Promise<Record<string, unknown>> {
  return waitFor('the reload log line', () => gw.logs.slice(from).find((l) => l['reload'] !== undefined));
}

interface StatsBridge {
  readonly bridge: string;
  readonly pending: number;
  readonly sinks: readonly { sink: string; pending: number }[];
}

async function bufferStats(dataDir: string): Promise<Map<string, StatsBridge>> {
  const result = await ferry(['buffer', 'stats', '--data-dir', dataDir, '--json']);
  assert.equal(result.code, 0, result.stderr);
  const report = JSON.parse(result.stdout) as { bridges: StatsBridge[] };
  return new Map(report.bridges.map((b) => [b.bridge, b]));
}

/** Seqs of each device in a bridge's history, read with `ferry history`. */
async function historySeqs(dataDir: string, bridge: string): Promise<Map<string, Set<number>>> {
  const result = await ferry(['history', '--data-dir', dataDir, '--bridge', bridge, '--json', '-n', '10000000']);
  assert.equal(result.code, 0, result.stderr);
  const seqs = new Map<string, Set<number>>();
  for (const line of result.stdout.split('\n')) {
    if (line === '') continue;
    const { device, seq } = JSON.parse((JSON.parse(line) as { payload: string }).payload) as { device: string; seq: number };
    let set = seqs.get(device);
    if (set === undefined) seqs.set(device, (set = new Set()));
    set.add(seq);
  }
  return seqs;
}

/** Acknowledged seqs (at least `from`, per device) missing from a bridge's history. */
function missing(history: Map<string, Set<number>>, devices: readonly DeviceStats[], from: ReadonlyMap<string, number> = new Map()): string[] {
  const out: string[] = [];
  for (const d of devices) {
    const seen = history.get(d.clientId) ?? new Set<number>();
    for (const seq of d.acked) if (seq >= (from.get(d.clientId) ?? 0) && !seen.has(seq)) out.push(`${d.clientId}#${seq}`);
  }
  return out;
}

const bridge = (name: string, topics: string, to: string) => `name: ${name}\nfrom: {mqtt: {topics: ["${topics}"]}}\nto: ${to}\n`;

test('under QoS 1 load from 20 devices: a bridge added (SIGHUP), one removed (POST /api/reload), one changed (ferry reload); no connection dropped, no acknowledged message lost', {
  timeout: 300_000,
}, async () => {
  const brokers = await requireService('kafka');
  const keptTopic = randomName('ferry-e2e-reload-kept-');
  const addedTopic = randomName('ferry-e2e-reload-added-');
  const root = dirs();
  const dataDir = join(root, 'data');
  // Nothing listens there: a Kafka sink that fails and retries for ever, so its bridge holds its messages.
  const [closedPort] = (await freePorts(1)) as [number];
  const unreachable = `{kafka: {brokers: ["127.0.0.1:${closedPort}"], topic: nowhere, retries: 0, connectionTimeoutMs: 500}}`;
  const config = join(root, 'gateway.yaml');
  mkdirSync(join(root, 'bridges'));
  mkdirSync(join(root, 'devices'));
  writeFileSync(config, 'mqtt: {allowAnonymous: true}\nbridges: [bridges]\ndevices: [devices]\nshutdown: {drainTimeoutMs: 5000}\n');
  const file = (name: string) => join(root, 'bridges', `${name}.yaml`);
  // One history bridge only: the history keeps a message once, whichever bridge wrote it first.
  writeFileSync(file('kept'), bridge('kept', 'devices/+/telemetry/#', `[{kafka: {brokers: ["${brokers.join('", "')}"], topic: ${keptTopic}}}]`));
  writeFileSync(file('doomed'), bridge('doomed', 'devices/+/telemetry/#', `[${unreachable}]`));
  writeFileSync(file('changing'), bridge('changing', 'devices/+/telemetry/#', `[{history: {}}, ${unreachable}]`));

  const gw = await startFerry(['--config', config, '--data-dir', dataDir]);
  const pacer = new LoadPacer(0);
  const fleet = startFleet({ url: gw.mqttUrl, devices: DEVICES, total: DEVICES * 1_000_000, window: WINDOW, clientIdPrefix: 'reload-dev-', pacer });
  const feed = setInterval(() => pacer.setLimit(pacer.issued + STEP), 20);
  const grow = async (what: string) => {
    const target = fleet.acknowledged() + BETWEEN;
    await waitFor(`${BETWEEN} more acknowledgements ${what}`, () => (fleet.acknowledged() >= target ? true : undefined));
  };
  try {
    await grow('before the first reload');
    // Connections made so far (on a busy machine some devices may have retried their first
    // CONNECT) are the baseline: from here on, none may close or open.
    await waitFor('every device connected', async () => {
      const status = (await (await fetch(`${gw.adminUrl}/api/status`)).json()) as { listeners: { protocol: string; clients?: number }[] };
      return status.listeners.find((l) => l.protocol === 'mqtt')?.clients === DEVICES && fleet.devices.every((d) => d.connections > 0) ? true : undefined;
    });
    const baseline = (await fetchStatus(gw.adminUrl)).counters;
    const connections = new Map(fleet.devices.map((d) => [d.clientId, d.connections]));

    // 1. Add a bridge, reload with SIGHUP.
    writeFileSync(file('added'), bridge('added', 'devices/+/telemetry/#', `[{kafka: {brokers: ["${brokers.join('", "')}"], topic: ${addedTopic}}}]`));
    const logged = gw.logs.length;
    gw.child.kill('SIGHUP');
    const added = await reloadLog(gw, logged);
    assert.equal(added['reload'], 'applied', JSON.stringify(added));
    assert.deepEqual([added['added'], added['removed'], added['changed'], added['warnings']], [['added'], [], [], []]);
    // A seq above the highest acknowledged one plus the window was not sent yet: it comes after the reload.
    const afterAdd = new Map(fleet.devices.map((d) => [d.clientId, Math.max(-1, ...d.acked) + WINDOW + 1]));
    await grow('after adding a bridge');

    // 2. Remove the bridge whose sink cannot deliver, reload with POST /api/reload.
    assert.ok(((await bufferStats(dataDir)).get('doomed')?.pending ?? 0) > 0, 'the failing bridge holds messages');
    rmSync(file('doomed'));
    const response = await fetch(`${gw.adminUrl}/api/reload`, { method: 'POST', headers: { 'content-type': 'application/json' } });
    const removed = (await response.json()) as { applied: Record<string, unknown>; warnings: string[] };
    assert.equal(response.status, 200, JSON.stringify(removed));
    assert.deepEqual(removed.applied, { added: [], removed: ['doomed'], changed: [], unchanged: ['added', 'changing', 'kept'].sort(), devices: false, databases: [], tls: false });
    assert.deepEqual(removed.warnings, []);
    const doomedHeld = (await bufferStats(dataDir)).get('doomed')?.pending ?? 0;
    assert.ok(doomedHeld > 0, "the removed bridge's messages stay buffered");
    await grow('after removing a bridge');

    // 3. Change a bridge (drop its failing sink, widen its filter), reload with `ferry reload`.
    writeFileSync(file('changing'), bridge('changing', 'devices/#', '[{history: {batchSize: 100}}]'));
    const reloaded = await ferry(['reload', '--admin', gw.adminUrl]);
    assert.equal(reloaded.code, 0, reloaded.stderr);
    assert.match(reloaded.stdout, /changed: +changing\n/);
    assert.match(reloaded.stdout, /removed: +-\n/);
    await grow('after changing a bridge');

    // Publishing stops; every message sent must be acknowledged, on the first connection.
    clearInterval(feed);
    pacer.setLimit(pacer.issued);
    await waitFor('every publish acknowledged', () => (fleet.acknowledged() === pacer.issued && fleet.inFlight() === 0 ? true : undefined));
    assert.deepEqual(
      fleet.devices.filter((d) => d.connections !== connections.get(d.clientId)).map((d) => `${d.clientId}: ${d.connections} connections`),
      [],
    );
    const status = await fetchStatus(gw.adminUrl);
    const full = (await (await fetch(`${gw.adminUrl}/api/status`)).json()) as { listeners: { protocol: string; clients?: number }[]; bridges: { name: string }[] };
    assert.equal(full.listeners.find((l) => l.protocol === 'mqtt')?.clients, DEVICES);
    const delta = (name: string) => (status.counters[name] ?? 0) - (baseline[name] ?? 0);
    assert.equal(delta('mqtt.connections.opened'), 0, 'no device connection opened');
    assert.equal(delta('mqtt.connections.closed'), 0, 'no device connection closed');
    assert.equal(status.counters['config.reloads{result=applied}'], 3);
    assert.deepEqual(full.bridges.map((b) => b.name).sort(), ['added', 'changing', 'kept']);

    // The removed bridge's messages are still in the buffer, and it took no more after its removal.
    const stats = await bufferStats(dataDir);
    assert.equal(stats.get('doomed')?.pending, doomedHeld);
    // The changed bridge's dropped sink no longer holds its messages back.
    const changing = await waitFor('the changed bridge to release its messages', async () => {
      const b = (await bufferStats(dataDir)).get('changing');
      return b !== undefined && b.pending === 0 ? b : undefined;
    });
    assert.deepEqual(
      changing.sinks.map((s) => s.sink),
      ['history'],
    );
    await waitFor('the history sinks to catch up', async () => {
      const s = await bufferStats(dataDir);
      return ['kept', 'added', 'changing'].every((b) => s.get(b)?.pending === 0) ? true : undefined;
    });

    // Every acknowledged message is in the bridges that stayed, in each device's order.
    assert.ok(fleet.acknowledged() >= 4 * BETWEEN);
    const kept = checkStreams(await readTopic(brokers, keptTopic, 120_000), fleet.devices);
    assert.deepEqual([kept.missing.slice(0, 20), kept.violations.slice(0, 20), kept.malformed.slice(0, 20)], [[], [], []]);
    assert.equal(kept.distinct, fleet.acknowledged());
    const changed = await historySeqs(dataDir, 'changing');
    assert.deepEqual(missing(changed, fleet.devices).slice(0, 20), []);
    // The added bridge has everything published after its reload.
    const late = checkStreams(await readTopic(brokers, addedTopic, 120_000), fleet.devices);
    assert.deepEqual([late.violations.slice(0, 20), late.malformed.slice(0, 20)], [[], []]);
    assert.deepEqual(late.missing.filter((m) => m.seq >= (afterAdd.get(m.device) ?? 0)).slice(0, 20), []);
    assert.ok(late.distinct >= 3 * BETWEEN - DEVICES * (WINDOW + 1), `${late.distinct} messages reached the added bridge`);
  } finally {
    clearInterval(feed);
    pacer.stop();
    await fleet.close();
    gw.child.kill('SIGTERM');
  }
  assert.equal(await gw.exited, 0);
});

test("a config with problems is refused by every trigger with each problem's file and line; the running bridges keep working", { timeout: 120_000 }, async () => {
  const root = dirs();
  const dataDir = join(root, 'data');
  const config = writeGatewayTree(root, '{allowAnonymous: true}', {});
  const gw = await startFerry(['--config', config, '--data-dir', dataDir]);
  try {
    const pub = async (n: number) => {
      const result = await mosquittoPub(gw.mqttUrl, 'devices/probe/telemetry/n', String(n), { clientId: 'probe', qos: 1 });
      assert.equal(result.code, 0, result.stderr);
    };
    const historyCount = async () => {
      const result = await ferry(['history', '--data-dir', dataDir, '--bridge', 'history', '--json', '-n', '1000']);
      return result.stdout.split('\n').filter((l) => l !== '').length;
    };
    await pub(1);

    writeFileSync(join(root, 'bridges/extra.yaml'), `${HISTORY_BRIDGE.replace('name: history', 'name: extra')}bogus: 1\n`);
    writeFileSync(join(root, 'bridges/broken.yaml'), 'name: broken\nfrom: {mqtt: {topics: ["a/#"]}\nto: [{history: {}}]\n');

    const logged = gw.logs.length;
    gw.child.kill('SIGHUP');
    const refused = await reloadLog(gw, logged);
    assert.equal(refused['reload'], 'refused');
    const logErrors = (refused['errors'] as string[]).join('\n');
    assert.match(logErrors, /bridges\/extra\.yaml:4:1: bogus: unknown key 'bogus'/);
    assert.match(logErrors, /bridges\/broken\.yaml:\d+:\d+: YAML/);

    const response = await fetch(`${gw.adminUrl}/api/reload`, { method: 'POST', headers: { 'content-type': 'application/json' } });
    assert.equal(response.status, 422);
    const { errors } = (await response.json()) as { errors: { file: string; line: number; path: string; message: string }[] };
    assert.ok(
      errors.some((e) => e.file.endsWith('bridges/extra.yaml') && e.line === 4 && e.path === 'bogus'),
      JSON.stringify(errors),
    );
    assert.ok(
      errors.some((e) => e.file.endsWith('bridges/broken.yaml') && e.line > 0),
      JSON.stringify(errors),
    );

    const cli = await ferry(['reload', '--admin', gw.adminUrl]);
    assert.equal(cli.code, 1);
    assert.match(cli.stderr, /bridges\/extra\.yaml:4:1: bogus: unknown key 'bogus'/);
    assert.match(cli.stderr, /reload refused \(\d+ problems\); the gateway keeps running its current config/);

    // The old bridge still takes and delivers messages.
    await pub(2);
    await waitFor('both messages in the history', async () => ((await historyCount()) === 2 ? true : undefined));
    const status = await fetchStatus(gw.adminUrl);
    assert.equal(status.counters['config.reloads{result=refused}'], 3);
    assert.equal(status.counters['config.reloads{result=applied}'], undefined);

    // Fixed, the same files apply.
    rmSync(join(root, 'bridges/broken.yaml'));
    writeFileSync(join(root, 'bridges/extra.yaml'), HISTORY_BRIDGE.replace('name: history', 'name: extra'));
    const fixed = await ferry(['reload', '--admin', gw.adminUrl]);
    assert.equal(fixed.code, 0, fixed.stderr);
    assert.match(fixed.stdout, /added: +extra\n/);
  } finally {
    gw.child.kill('SIGTERM');
  }
  assert.equal(await gw.exited, 0);

  // No gateway there: a clear message and exit 1.
  const [closedPort] = (await freePorts(1)) as [number];
  const nobody = await ferry(['reload', '--admin', `http://127.0.0.1:${closedPort}`]);
  assert.equal(nobody.code, 1);
  assert.match(nobody.stderr, /cannot reach the gateway's admin server at http:\/\/127\.0\.0\.1:\d+: connection refused \(ECONNREFUSED\)/);

  // A config that cannot be read: its problem is said once, then why nothing was asked.
  const missing = await ferry(['reload', '--config', '/nonexistent/gateway.yaml']);
  assert.equal(missing.code, 1);
  assert.deepEqual(missing.stderr.trim().split('\n'), [
    'ferry: config file not found: /nonexistent/gateway.yaml (pass --config FILE)',
    'ferry: cannot read the admin address from a config with problems; pass --admin URL',
  ]);
});

test('a device profile added by a reload lets its devices log in; a connected device stays connected', { timeout: 120_000 }, async () => {
  const root = dirs();
  const config = writeGatewayTree(root, '{allowAnonymous: false}', {
    'first.yaml': `name: first\ncredentials:\n${await credential('first', 'first-secret')}`,
  });
  const gw = await startFerry(['--config', config, '--data-dir', join(root, 'data')]);
  const url = (user: string, password: string) => gw.mqttUrl.replace('mqtt://', `mqtt://${user}:${password}@`);
  const first = connect(gw.mqttUrl, { clientId: 'first', username: 'first', password: 'first-secret', reconnectPeriod: 0 });
  let closes = 0;
  first.on('close', () => (closes += 1));
  try {
    await new Promise<void>((resolve, reject) => {
      first.once('connect', () => resolve());
      first.once('error', reject);
    });
    const before = await mosquittoPub(url('second', 'second-secret'), 'devices/second/telemetry/t', '1', { clientId: 'second' });
    assert.notEqual(before.code, 0, 'unknown login refused before the reload');

    writeFileSync(join(root, 'devices/second.yaml'), `name: second\ncredentials:\n${await credential('second', 'second-secret')}`);
    const response = await fetch(`${gw.adminUrl}/api/reload`, { method: 'POST', headers: { 'content-type': 'application/json' } });
    const body = (await response.json()) as { applied: { devices: boolean; unchanged: string[] } };
    assert.equal(response.status, 200);
    assert.equal(body.applied.devices, true);
    assert.deepEqual(body.applied.unchanged, ['history']);

    const after = await mosquittoPub(url('second', 'second-secret'), 'devices/second/telemetry/t', '2', { clientId: 'second' });
    assert.equal(after.code, 0, after.stderr);
    await first.publishAsync('devices/first/telemetry/t', '3', { qos: 1 });
    assert.equal(closes, 0);
    assert.equal(first.connected, true);
  } finally {
    await first.endAsync(true);
    gw.child.kill('SIGTERM');
  }
  assert.equal(await gw.exited, 0);
});

test('a rotated admin token file applies on reload: the reload sent with the old token is answered, then only the new token works', { timeout: 120_000 }, async () => {
  const root = dirs();
  const config = writeGatewayTree(root, '{}', {});
  const [oldToken, newToken] = ['old-admin-token-0123456789', 'new-admin-token-9876543210'];
  writeFileSync(join(root, 'admin-token'), `${oldToken}\n`);
  writeFileSync(config, 'mqtt: {}\nbridges: [bridges]\ndevices: [devices]\nadmin: {tokenFile: admin-token}\n');
  const gw = await startFerry(['--config', config, '--data-dir', join(root, 'data')]);
  const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` });
  const status = async (headers: Record<string, string>) => (await fetch(`${gw.adminUrl}/api/status`, { headers })).status;
  const reload = async (headers: Record<string, string>) => {
    const response = await fetch(`${gw.adminUrl}/api/reload`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers } });
    const text = await response.text();
    return { status: response.status, text, body: JSON.parse(text) as { applied?: { adminToken?: string }; warnings?: string[] } };
  };
  /** Neither token, nor a piece of one, in what the gateway or the command printed. */
  const holdsNoToken = (text: string, what: string) => {
    for (const token of [oldToken, newToken]) assert.ok(!text.includes(token.slice(0, 8)) && !text.includes(token.slice(-8)), `${what} shows no token: ${text}`);
  };
  try {
    assert.equal(await status(bearer(oldToken)), 200);
    assert.equal(await status(bearer(newToken)), 401);

    writeFileSync(join(root, 'admin-token'), `${newToken}\n`);
    // `ferry reload` with the new token (as --config reads it from the file) is refused: it says why and what to do.
    const early = await ferry(['reload', '--admin', gw.adminUrl], { FERRY_ADMIN_TOKEN: newToken });
    assert.equal(early.code, 1);
    assert.match(early.stderr, /refused the admin token \(HTTP 401\); if the token was just rotated, .*previous token.*SIGHUP/);
    const logs = gw.logs.length;
    const rotated = await ferry(['reload', '--admin', gw.adminUrl], { FERRY_ADMIN_TOKEN: oldToken });
    assert.equal(rotated.code, 0, `the reload let in with the old token gets its answer: ${rotated.stderr}`);
    assert.match(rotated.stdout, /^ {2}admin token: replaced \(required from now on; the previous one gets 401\)$/m);
    assert.doesNotMatch(rotated.stdout, /^warning:/m);
    holdsNoToken(rotated.stdout + rotated.stderr, '`ferry reload`');
    const line = await reloadLog(gw, logs);
    assert.match(String(line['msg']), /admin token replaced/);
    assert.equal(line['adminToken'], 'replaced');
    holdsNoToken(JSON.stringify(line), 'the log line');
    assert.equal(await status(bearer(oldToken)), 401, 'the old token no longer works');
    assert.equal(await status(bearer(newToken)), 200);

    // On loopback the token may be removed (the server is then open to this machine only) and added again.
    writeFileSync(config, 'mqtt: {}\nbridges: [bridges]\ndevices: [devices]\n');
    const removed = await ferry(['reload', '--admin', gw.adminUrl], { FERRY_ADMIN_TOKEN: newToken });
    assert.equal(removed.code, 0, removed.stderr);
    assert.match(removed.stdout, /^ {2}admin token: removed \(the admin server on loopback needs none now\)$/m);
    holdsNoToken(removed.stdout + removed.stderr, '`ferry reload`');
    assert.equal(await status({}), 200);
    writeFileSync(config, 'mqtt: {}\nbridges: [bridges]\ndevices: [devices]\nadmin: {tokenFile: admin-token}\n');
    const added = await reload({});
    assert.equal(added.status, 200);
    assert.equal(added.body.applied?.adminToken, 'added');
    holdsNoToken(added.text, 'the answer');
    assert.equal(await status({}), 401);
    assert.equal(await status(bearer(newToken)), 200);
    const unchanged = await reload(bearer(newToken));
    assert.equal(unchanged.status, 200);
    assert.equal(unchanged.body.applied?.adminToken, undefined, 'a token that stays is not named');
  } finally {
    gw.child.kill('SIGTERM');
  }
  assert.equal(await gw.exited, 0);
});
