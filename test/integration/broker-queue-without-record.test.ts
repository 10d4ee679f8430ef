// A session's queue left in broker.db without the session's record and subscriptions, as an
// earlier version's crash could leave it: a Clean Start's removal of the record and the
// subscriptions was committed, its queue was dropped only as aedes read it after the CONNACK,
// and the gateway was killed in between. A later connection without Clean Start finds no
// session (no record, no subscription) and is told Session Present 0; it used to be sent that
// queue all the same, messages of a session it was told it does not have. The queue is now
// dropped before that CONNACK, as a Clean Start drops it.
// Real embedded broker on SQLite files, real mqtt.js devices on loopback.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { committed, stateBrokers, until } from '../harness/state-broker.ts';
import { tempDirs } from '../harness/temp.ts';

const dirs = tempDirs('ferry-queue-without-record-');
const { start, stop, connectClient } = stateBrokers();

const QUEUED = 3;

/**
 * broker.db with QUEUED messages queued for the offline session of `dev`, then rewritten as an
 * earlier version's crash left it: the queue is there, the session's record and subscriptions
 * are not. Returns its path.
 */
async function queueWithoutRecord(protocolVersion: 4 | 5): Promise<string> {
  const path = join(dirs(), 'broker.db');
  const gateway = await start(path);
  const persistent = protocolVersion === 5 ? { clean: false, properties: { sessionExpiryInterval: 3600 } } : { clean: false };
  const device = await connectClient(gateway.url, { clientId: 'dev', protocolVersion, ...persistent });
  await device.client.subscribeAsync('cmd/#', { qos: 1 });
  await device.client.endAsync();
  await until(() => gateway.broker.connectedClients === 0, 'the device gone');
  const publisher = await connectClient(gateway.url, { clientId: 'publisher' });
  for (let i = 0; i < QUEUED; i++) await publisher.client.publishAsync('cmd/dev', `old-${i}`, { qos: 1 });
  await publisher.client.endAsync();
  await stop(gateway);

  const db = new Database(path);
  try {
    assert.deepEqual(
      db.prepare("SELECT seq FROM queue WHERE client_id = 'dev'").all(),
      Array.from({ length: QUEUED }, (_, i) => ({ seq: i + 1 })),
      'queued for the offline session',
    );
    db.exec("DELETE FROM sessions WHERE client_id = 'dev'; DELETE FROM subscriptions WHERE client_id = 'dev';");
  } finally {
    db.close();
  }
  return path;
}

for (const protocolVersion of [4, 5] as const) {
  test(`MQTT ${protocolVersion === 5 ? '5' : '3.1.1'}: a queue left without its session's record is not sent to a connection told Session Present 0`, async () => {
    const path = await queueWithoutRecord(protocolVersion);
    const gateway = await start(path);
    const persistent = protocolVersion === 5 ? { clean: false, properties: { sessionExpiryInterval: 3600 } } : { clean: false };
    const device = await connectClient(gateway.url, { clientId: 'dev', protocolVersion, ...persistent });
    assert.equal(device.sessionPresent, false, 'no session: no record, no subscription');
    // A message of its own after the CONNACK: the queue, read right after the CONNACK, comes before it.
    await device.client.subscribeAsync('now/#', { qos: 1 });
    const publisher = await connectClient(gateway.url, { clientId: 'publisher' });
    await publisher.client.publishAsync('now/dev', 'new', { qos: 1 });
    await until(() => device.seen.includes('now/dev new'), 'the new message');
    assert.deepEqual(device.seen, ['now/dev new'], 'only what was published for this session');
    // (the new message's copy may still wait for the commit of its PUBACK: ids past the old ones)
    assert.deepEqual(committed(path, "SELECT seq FROM queue WHERE client_id = 'dev' AND seq <= ?", QUEUED), [], 'the old queue is gone from broker.db');
    assert.deepEqual(committed(path, 'SELECT id FROM queued_messages WHERE id <= ?', QUEUED), [], 'and its messages with it');
    await publisher.client.endAsync();
    await device.client.endAsync();
  });
}

test('a queue with its session record is still resumed: Session Present 1 and the queued messages', async () => {
  const path = await queueWithoutRecord(4);
  // The record back, without subscriptions: a session that only waits for its queue.
  const db = new Database(path);
  try {
    db.prepare('INSERT INTO sessions (client_id, owner) VALUES (?, NULL)').run('dev');
  } finally {
    db.close();
  }
  const gateway = await start(path);
  const device = await connectClient(gateway.url, { clientId: 'dev', clean: false });
  assert.equal(device.sessionPresent, true, 'the session is there');
  await until(() => device.seen.length === QUEUED, `the ${QUEUED} queued messages (got ${device.seen.length})`);
  assert.deepEqual(device.seen, ['cmd/dev old-0', 'cmd/dev old-1', 'cmd/dev old-2']);
  await device.client.endAsync();
});
