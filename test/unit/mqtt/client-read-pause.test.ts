// The ReadPause relies on three public methods of mqtt.js' MqttClient; this fails when an upgrade
// changes them (test/integration/mqtt-client-source-paused.test.ts covers the behaviour).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MqttClient } from 'mqtt';
import { type KeepaliveClient, ReadPause } from '../../../src/mqtt/client-read-pause.ts';

test('mqtt.js still has the keepalive methods a ReadPause uses', () => {
  for (const method of ['onKeepaliveTimeout', 'sendPing', 'reschedulePing'] as const) assert.equal(typeof MqttClient.prototype[method], 'function', method);
});

test('a keepalive timeout while paused pings again instead of ending the connection; an ended pause restarts the timer', () => {
  const calls: string[] = [];
  const client: KeepaliveClient = {
    onKeepaliveTimeout: () => calls.push('timeout'),
    sendPing: () => calls.push('ping'),
    reschedulePing: (force) => calls.push(`reschedule ${force}`),
  };
  const pause = new ReadPause(client);
  client.onKeepaliveTimeout();
  assert.deepEqual(calls.splice(0), ['timeout']);
  let read = 0;
  const end = pause.hold(() => (read += 1));
  assert.equal(pause.paused, true);
  client.onKeepaliveTimeout();
  assert.deepEqual(calls.splice(0), ['ping', 'reschedule true']);
  end();
  end();
  assert.equal(read, 1);
  assert.equal(pause.paused, false);
  assert.deepEqual(calls.splice(0), ['reschedule true']);
});

test('the pauses of a closed connection end with it; ending one later only reads on', () => {
  const client: KeepaliveClient = { onKeepaliveTimeout: () => {}, sendPing: () => {}, reschedulePing: () => {} };
  const pause = new ReadPause(client);
  const old = pause.hold(() => {});
  pause.closed();
  assert.equal(pause.paused, false);
  const current = pause.hold(() => {});
  old();
  assert.equal(pause.paused, true);
  current();
  assert.equal(pause.paused, false);
});
