// Commands to devices must not go by the wall clock: set a day forward (NTP setting the clock of a
// gateway that booted without a real-time clock), the broker forgot the answer of a command a
// device had acked an hour before its expiry and sent the command again when its source delivered
// it again; set a day back (a bad time source), a command past its expiry went on waiting a day
// for its answer, and a device coming back was still sent it. The clock is stepped by replacing
// Date.now in this process: a real step of the clock cannot be made on a machine other services
// share (test/e2e/clock-message-expiry.test.ts steps it for real under libfaketime).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import type { MqttClient } from 'mqtt';
import pino from 'pino';
import type { Command } from '../../src/mqtt/command-tracker.ts';
import { EmbeddedBroker } from '../../src/mqtt/embedded-broker.ts';
import { steadyNow } from '../../src/core/steady-clock.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { eventually } from '../harness/eventually.ts';
import { connectListening } from '../harness/recording-client.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-clock-commands-');
const DAY_MS = 86_400_000;

async function startBroker(t: { after: (fn: () => Promise<void> | void) => void }): Promise<{ broker: EmbeddedBroker; url: string }> {
  const broker = await EmbeddedBroker.start({
    host: '127.0.0.1',
    port: 0,
    logger: pino({ level: 'silent' }),
    counters: new CounterRegistry(),
    state: { path: join(tempDir(), 'broker.db'), synchronous: 'normal' },
  });
  t.after(() => broker.close());
  return { broker, url: `mqtt://127.0.0.1:${broker.port}` };
}

/** An MQTT 5 device with a persistent session, subscribed to `cmd/#`, and the payloads it got. */
async function device(url: string, subscribe: boolean): Promise<{ client: MqttClient; got: string[] }> {
  const got: string[] = [];
  const options = { clientId: 'dev', protocolVersion: 5 as const, clean: false, reconnectPeriod: 0, properties: { sessionExpiryInterval: 3600 } };
  const client = await connectListening(url, options, (client) => client.on('message', (_topic, payload) => got.push(payload.toString())));
  if (subscribe) await client.subscribeAsync('cmd/#', { qos: 1 });
  return { client, got };
}

const command = (payload: string, expiresInMs: number): Command => ({
  topic: 'cmd/dev',
  payload: Buffer.from(payload),
  qos: 1,
  retain: false,
  expiresAt: steadyNow() + expiresInMs,
  id: payload,
});

test('a command a device acked is not sent again after the wall clock was set a day forward', { timeout: 30_000 }, async (t) => {
  const realNow = Date.now;
  t.after(() => {
    Date.now = realNow;
  });
  const { broker, url } = await startBroker(t);
  const dev = await device(url, true);
  t.after(() => dev.client.end(true));

  const first = broker.publishCommand(command('reboot', 3_600_000));
  assert.deepEqual(await first.outcome, { status: 'acked', clientId: 'dev' });

  Date.now = () => realNow() + DAY_MS;
  const again = broker.publishCommand(command('reboot', 3_600_000));
  assert.equal(again.again, 'answered', 'the answer of a command an hour from its expiry was forgotten: it was sent again');
  assert.deepEqual(await again.outcome, { status: 'acked', clientId: 'dev' });
  assert.deepEqual(dev.got, ['reboot']);
});

test('a command expires on time though the wall clock was set a day back, and a device coming back is not sent it', { timeout: 30_000 }, async (t) => {
  const realNow = Date.now;
  t.after(() => {
    Date.now = realNow;
  });
  const { broker, url } = await startBroker(t);
  const away = await device(url, true);
  await away.client.endAsync();

  Date.now = () => realNow() - DAY_MS;
  const published = broker.publishCommand(command('unlock', 1_000));
  let outcome: unknown;
  void published.outcome.then((o) => {
    outcome = o;
  });
  await eventually(() => assert.deepEqual(outcome, { status: 'expired' }, 'a command a second from its expiry waited on: the wall clock was set a day back'), { timeoutMs: 5_000 });

  const back = await device(url, false);
  t.after(() => back.client.end(true));
  // Sent after it: a resumed session gets its queue first, so the expired one would arrive first.
  broker.publishCommand(command('marker', 3_600_000));
  await eventually(() => assert.ok(back.got.includes('marker'), 'the command after it did not arrive'), { timeoutMs: 5_000 });
  assert.deepEqual(back.got, ['marker'], 'an expired command was sent to the device coming back');
});
