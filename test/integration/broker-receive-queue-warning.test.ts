// An MQTT 5 clean session's live messages past the 1,000 the broker keeps waiting for the
// device's Receive Maximum are discarded and counted. They were logged at debug only, one line
// a message: an operator saw nothing at the default level. They are now a warning that names
// the client and what to change, once per client per refusal-log interval, then a line with
// how many more were discarded (written at the interval's end, or as the broker stops).
// Real embedded broker on SQLite, real mqtt.js devices on loopback.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import type { MqttClient } from 'mqtt';
import { capturedEntries } from '../harness/log-lines.ts';
import { stateBrokers, until } from '../harness/state-broker.ts';
import { tempDirs } from '../harness/temp.ts';

const dirs = tempDirs('ferry-receive-queue-warning-');
const { start, stop, connectClient } = stateBrokers();

/** More than the 1,000 messages the broker keeps waiting for a device's Receive Maximum. */
const MESSAGES = 1200;
const RECEIVE_MAXIMUM = 2;
const DISCARDED = MESSAGES - 1000 - RECEIVE_MAXIMUM;

/** Holds the device's PUBACKs: mqtt.js reads no further packet until its handler calls back. */
function holdAcks(client: MqttClient): void {
  client.handleMessage = (_packet, _callback) => {};
}

test('messages discarded for a full Receive Maximum wait: one warning naming the client and what to do, then how many more', { timeout: 60_000 }, async () => {
  const { logger, entries } = capturedEntries('warn');
  const gateway = await start(join(dirs(), 'broker.db'), { logger });
  const device = await connectClient(gateway.url, { clientId: 'slow-clean', protocolVersion: 5, properties: { receiveMaximum: RECEIVE_MAXIMUM } });
  await device.client.subscribeAsync('feed/#', { qos: 1 });
  holdAcks(device.client);
  const publisher = await connectClient(gateway.url, { clientId: 'publisher', protocolVersion: 5 });
  await Promise.all(Array.from({ length: MESSAGES }, (_, i) => publisher.client.publishAsync('feed/x', String(i), { qos: 1 })));
  const discarded = () => gateway.counters.snapshot()['mqtt.deliveries.discarded{reason=receive_queue_full}'] ?? 0;
  await until(() => discarded() === DISCARDED, `the ${DISCARDED} past the bound counted (${discarded()})`, 20_000);

  const about = () => entries.filter((e) => String(e['msg']).startsWith('messages to this device discarded'));
  assert.equal(about().length, 1, `one line for ${DISCARDED} discarded messages: ${JSON.stringify(about())}`);
  const [first] = about() as [Record<string, unknown>];
  assert.equal(first['level'], 40, 'a warning');
  assert.equal(first['clientId'], 'slow-clean');
  assert.equal(first['reason'], 'receive_queue_full');
  assert.equal(first['waitingLimit'], 1000);
  assert.match(String(first['msg']), /raise the Receive Maximum/);
  assert.match(String(first['msg']), /Session Expiry Interval/);

  await publisher.client.endAsync();
  device.client.end(true);
  // Stopping writes the interval's summary: the rest, counted in one line.
  await stop(gateway);
  const summary = about().slice(1);
  assert.equal(summary.length, 1, `one summary line: ${JSON.stringify(summary)}`);
  assert.equal(summary[0]?.['clientId'], 'slow-clean');
  assert.equal(summary[0]?.['suppressed'], DISCARDED - 1);
  assert.equal(summary[0]?.['level'], 40);
});
