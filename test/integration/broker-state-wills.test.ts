// Wills carried over from an earlier run (mqtt.persistence sqlite) are published after the
// restart under the config of the new run: its ACL for the login that stored the will, and its
// limits on retained messages. Real aedes, real SQLite, mqtt.js clients on loopback. A crash is
// a copy of broker.db taken (SQLite's backup) while the devices are connected: what a kill -9
// leaves on disk, their wills stored and their connections never ended.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { type IClientOptions, connect } from 'mqtt';
import { deviceSchema } from '../../src/config/schema.ts';
import { DeviceAuthenticator } from '../../src/mqtt/auth.ts';
import { BROKER_STATE_VERSION } from '../../src/mqtt/persistence/schema.ts';
import { hashPassword } from '../../src/mqtt/password.ts';
import type { BrokerStateLimits } from '../../src/mqtt/state-limits.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { committed, crashCopy, stateBrokers, until } from '../harness/state-broker.ts';
import { tempDirs } from '../harness/temp.ts';

const dirs = tempDirs('ferry-broker-wills-');
const { start, stop, connectClient } = stateBrokers();

const PASSWORD = 'secret';
const hash = await hashPassword(PASSWORD);

/** Device profiles: each device publishes its status, a watcher reads everything. */
function authenticator(profiles: readonly Record<string, unknown>[]): DeviceAuthenticator {
  const staff = { name: 'staff', credentials: [{ username: 'watcher', passwordHash: hash }], acl: { publish: ['#'], subscribe: ['#'] } };
  return new DeviceAuthenticator({
    profiles: [...profiles, staff].map((p) => deviceSchema().parse(p)),
    allowAnonymous: false,
    anonymousAcl: { publish: [], subscribe: [] },
    maxConnectionsPerAddress: 100,
    maxAuthFailures: 10,
    counters: new CounterRegistry(),
  });
}

const login = (name: string) => ({ username: name, passwordHash: hash });
const will = (name: string, extra: Partial<NonNullable<IClientOptions['will']>> = {}) => ({
  clientId: name,
  username: name,
  password: PASSWORD,
  will: { topic: `status/${name}`, payload: Buffer.from(`${name} offline`), qos: 1 as const, retain: false, ...extra },
});

test('after a restart a carried-over will is published only if the ACL of the new config still lets its login publish it', { timeout: 30_000 }, async () => {
  const path = join(dirs(), 'broker.db');
  const first = await start(path, {
    auth: authenticator([
      { name: 'sensor', credentials: [login('kept'), login('removed')], acl: { publish: ['status/%u'], subscribe: [] } },
      { name: 'door', credentials: [login('revoked')], acl: { publish: ['status/%u'], subscribe: [] } },
    ]),
  });
  // A persistent session that gets the wills queued while it is away.
  const watcher = await connectClient(first.url, { clientId: 'watcher', username: 'watcher', password: PASSWORD, clean: false });
  await watcher.client.subscribeAsync('status/#', { qos: 1 });
  await watcher.client.endAsync();
  for (const name of ['kept', 'removed', 'revoked']) await connectClient(first.url, will(name));
  assert.deepEqual(committed(path, 'SELECT client_id, owner, profile, protocol FROM wills ORDER BY client_id'), [
    { client_id: 'kept', owner: 'kept', profile: 'sensor', protocol: 4 },
    { client_id: 'removed', owner: 'removed', profile: 'sensor', protocol: 4 },
    { client_id: 'revoked', owner: 'revoked', profile: 'door', protocol: 4 },
  ]);
  const crashed = await crashCopy(path, dirs());
  await stop(first);

  // The operator takes away the door profile's right to publish status and the 'removed' login.
  const second = await start(crashed, {
    auth: authenticator([
      { name: 'sensor', credentials: [login('kept')], acl: { publish: ['status/%u'], subscribe: [] } },
      { name: 'door', credentials: [login('revoked')], acl: { publish: ['door/%u/#'], subscribe: [] } },
    ]),
  });
  await until(() => second.tapped.includes('status/kept kept offline'), 'the will its login may still publish');
  await sleep(300);
  assert.deepEqual(second.tapped, ['status/kept kept offline']);
  const back = await connectClient(second.url, { clientId: 'watcher', username: 'watcher', password: PASSWORD, clean: false });
  await until(() => back.seen.length > 0, 'the queued will');
  await sleep(200);
  assert.deepEqual(back.seen, ['status/kept kept offline']);
  const counts = second.counters.snapshot();
  assert.equal(counts['mqtt.wills.carried_over{result=published}'], 1);
  assert.equal(counts['mqtt.wills.carried_over{result=refused}'], 2);
  assert.equal(counts['mqtt.publish.refused{reason=acl}'], 2);
  const refusals = second.warnings.filter((w) => /will .*not published/.test(w));
  assert.equal(refusals.length, 2, second.warnings.join('\n'));
  assert.ok(
    refusals.some((w) => w.includes("'status/revoked'") && w.includes('no longer allows')),
    refusals.join('\n'),
  );
  assert.ok(
    refusals.some((w) => w.includes("'status/removed'") && w.includes('may no longer connect')),
    refusals.join('\n'),
  );
  assert.deepEqual(committed(crashed, 'SELECT client_id FROM wills'), [], 'refused wills are done with too');
  await back.client.endAsync();
  await stop(second);
});

const LIMITS: BrokerStateLimits = {
  subscriptionsPerClient: 100,
  retainedPerClient: 100,
  retainedBytesPerClient: 4,
  retainedMessages: 10_000,
  retainedBytes: 1 << 20,
  queuedPerSession: 1000,
  queuedBytesPerSession: 1 << 20,
  sessionExpirySeconds: 3600,
};

test('a carried-over retained will past the retained limits is handled as its client’s retained PUBLISH: MQTT 5 refused, MQTT 3.1.1 not retained', {
  timeout: 30_000,
}, async () => {
  const path = join(dirs(), 'broker.db');
  const first = await start(path);
  const anonymous = (name: string, version: 4 | 5) => ({
    clientId: name,
    protocolVersion: version,
    will: { topic: `status/${name}`, payload: Buffer.from(`${name} offline`), qos: 1 as const, retain: true },
  });
  await connectClient(first.url, anonymous('v5', 5));
  await connectClient(first.url, anonymous('v4', 4));
  const crashed = await crashCopy(path, dirs());
  await stop(first);

  const second = await start(crashed, { limits: LIMITS });
  await until(() => second.tapped.includes('status/v4 v4 offline'), 'the MQTT 3.1.1 will, as an ordinary message');
  await sleep(300);
  assert.deepEqual(second.tapped, ['status/v4 v4 offline'], 'the MQTT 5 will is not taken at all');
  assert.deepEqual(committed(crashed, 'SELECT topic FROM retained'), [], 'neither is retained');
  const reader = await connectClient(second.url, { clientId: 'reader' });
  await reader.client.subscribeAsync('status/#', { qos: 1 });
  await sleep(200);
  assert.deepEqual(reader.seen, []);
  const counts = second.counters.snapshot();
  assert.equal(counts['mqtt.state.refused{limit=retainedBytesPerClient}'], 2);
  assert.equal(counts['mqtt.wills.carried_over{result=published}'], 1);
  assert.equal(counts['mqtt.wills.carried_over{result=refused}'], 1);
  await reader.client.endAsync();
  await stop(second);
});

/**
 * The wills table as versions before 4 made it: without the login that stored the will. The
 * rest of a version 3 file is what this version makes.
 */
function asVersion3(path: string): void {
  const db = new Database(path);
  try {
    db.exec(`
      CREATE TABLE wills_v3 (client_id TEXT PRIMARY KEY, broker_id TEXT NOT NULL, payload BLOB, meta TEXT NOT NULL, due_at INTEGER) WITHOUT ROWID;
      INSERT INTO wills_v3 SELECT client_id, broker_id, payload, meta, due_at FROM wills;
      DROP TABLE wills;
      ALTER TABLE wills_v3 RENAME TO wills;
      CREATE INDEX wills_due ON wills (due_at) WHERE due_at IS NOT NULL;
      PRAGMA user_version = 3;
    `);
  } finally {
    db.close();
  }
}

test('a will stored by an earlier version, without its login, is not published while logins are on; with logins off it is', { timeout: 30_000 }, async () => {
  const path = join(dirs(), 'broker.db');
  const first = await start(path, { auth: authenticator([{ name: 'sensor', credentials: [login('old')], acl: { publish: ['status/%u'], subscribe: [] } }]) });
  await connectClient(first.url, will('old'));
  const withLogins = await crashCopy(path, dirs());
  const withoutLogins = await crashCopy(path, dirs());
  await stop(first);
  asVersion3(withLogins);
  asVersion3(withoutLogins);

  const second = await start(withLogins, { auth: authenticator([{ name: 'sensor', credentials: [login('old')], acl: { publish: ['status/%u'], subscribe: [] } }]) });
  await until(() => second.counters.get('mqtt.wills.carried_over{result=refused}') === 1, 'the will refused');
  await sleep(200);
  assert.deepEqual(second.tapped, []);
  assert.ok(
    second.warnings.some((w) => /will .*not published.*earlier version/.test(w)),
    second.warnings.join('\n'),
  );
  assert.deepEqual(committed(withLogins, 'SELECT user_version FROM pragma_user_version'), [{ user_version: BROKER_STATE_VERSION }]);
  await stop(second);

  const third = await start(withoutLogins);
  await until(() => third.tapped.includes('status/old old offline'), 'the will, with logins off');
  assert.equal(third.counters.get('mqtt.wills.carried_over{result=published}'), 1);
  await stop(third);
});

// Only the server sets a Subscription Identifier [MQTT-3.3.4-6]: one a device put in its will's
// properties is dropped whether the will is published in the run that took it or, carried over a
// crash, in the next run; a subscriber without an identifier of its own gets it without one.
test('a carried-over will reaches subscribers without the Subscription Identifier its device put in it', { timeout: 30_000 }, async () => {
  const path = join(dirs(), 'broker.db');
  const first = await start(path);
  const session = { protocolVersion: 5 as const, clientId: 'watcher', clean: false, properties: { sessionExpiryInterval: 600 } };
  // A persistent session that gets the will queued while it is away.
  const away = await connectClient(first.url, session);
  await away.client.subscribeAsync('status/#', { qos: 1 });
  await away.client.endAsync();
  await connectClient(first.url, {
    protocolVersion: 5,
    clientId: 'forger',
    will: { topic: 'status/forger', payload: Buffer.from('forger offline'), qos: 1, retain: false, properties: { subscriptionIdentifier: 4242 } as Record<string, unknown> },
  });
  const crashed = await crashCopy(path, dirs());
  await stop(first);

  const second = await start(crashed);
  await until(() => second.tapped.includes('status/forger forger offline'), 'the carried-over will');
  // Listening before the CONNACK: the queued will may come in the same read.
  const back = connect(second.url, { ...session, reconnectPeriod: 0 });
  const received: { topic: string; identifier: unknown }[] = [];
  back.on('message', (topic, _payload, packet) => received.push({ topic, identifier: packet.properties?.subscriptionIdentifier }));
  try {
    await until(() => received.length > 0, 'the queued will');
    await sleep(200);
    assert.deepEqual(received, [{ topic: 'status/forger', identifier: undefined }]);
    assert.equal(second.counters.get('mqtt.wills.carried_over{result=published}'), 1);
  } finally {
    await back.endAsync(true);
  }
  await stop(second);
});

// A will's string properties (Content Type, Response Topic, User Properties) must be well-formed
// UTF-8 without U+0000 [MQTT-1.5.4-1, -2]: a live will that breaks that is refused when it is
// published, and so is one carried over a crash to the next run, which has no client to refuse it under.
test('a carried-over will with malformed properties is refused, counted and logged, as a live one is: not sent to subscribers or bridges', { timeout: 30_000 }, async () => {
  const path = join(dirs(), 'broker.db');
  const first = await start(path);
  const session = { protocolVersion: 5 as const, clientId: 'watcher', clean: false, properties: { sessionExpiryInterval: 600 } };
  const away = await connectClient(first.url, session);
  await away.client.subscribeAsync('status/#', { qos: 1 });
  await away.client.endAsync();
  const device = (name: string, properties: Record<string, unknown>) => ({
    protocolVersion: 5 as const,
    clientId: name,
    will: { topic: `status/${name}`, payload: Buffer.from(`${name} offline`), qos: 1 as const, retain: false, properties },
  });
  await connectClient(first.url, device('nul', { userProperties: { site: 'north\u0000east' } }));
  await connectClient(first.url, device('typed', { contentType: 'text/\u0000plain' }));
  await connectClient(first.url, device('fine', { userProperties: { site: 'north' } }));
  const crashed = await crashCopy(path, dirs());
  // The live wills, for comparison: the broker's own run publishes them as their connections end.
  const live = await connectClient(first.url, device('live', { responseTopic: 'reply/\u0000' }));
  live.client.stream.destroy();
  await until(() => first.counters.get('mqtt.publish.refused{reason=malformed}') === 1, 'the live will refused');
  assert.equal(first.tapped.includes('status/live live offline'), false);
  await stop(first);

  const second = await start(crashed);
  await until(() => second.counters.get('mqtt.wills.carried_over{result=refused}') === 2, 'the malformed wills refused');
  await until(() => second.tapped.includes('status/fine fine offline'), 'the well-formed will');
  await sleep(200);
  assert.deepEqual(second.tapped, ['status/fine fine offline']);
  const back = connect(second.url, { ...session, reconnectPeriod: 0 });
  const received: string[] = [];
  back.on('message', (topic) => received.push(topic));
  try {
    await until(() => received.length > 0, 'the queued will');
    await sleep(200);
    assert.deepEqual(received, ['status/fine'], 'only the well-formed will reaches the subscriber');
  } finally {
    await back.endAsync(true);
  }
  const counts = second.counters.snapshot();
  assert.equal(counts['mqtt.publish.refused{reason=malformed}'], 2);
  assert.equal(counts['mqtt.wills.carried_over{result=published}'], 1);
  const refusals = second.warnings.filter((w) => /will .*not published: malformed packet/.test(w));
  assert.deepEqual(refusals.map((w) => w.replace(/.*malformed packet: /, '')).sort(), ['User Property "site" holds NUL', 'its Content Type holds NUL'], second.warnings.join('\n'));
  assert.deepEqual(committed(crashed, 'SELECT client_id FROM wills'), [], 'refused wills are done with too');
  await stop(second);
});
