// The wall clock stepped while `ferry run` holds a backlog, as NTP steps the clock of a gateway
// that booted without a real-time clock (forward by a year), or as a bad time source sets it
// back (a day): buffer.maxAgeMs must count the time messages spent in the buffer, so the step
// expires nothing by itself, and messages stamped by the stepped clock still expire on time.
// The process runs under libfaketime (its wall clock moved by rewriting a file, its monotonic
// clock left alone): the machine's own clock is never touched.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { connectAsync } from 'mqtt';
import { blackHole } from '../harness/black-hole.ts';
import { fetchStatus } from '../harness/crashing-gateway.ts';
import { eventually } from '../harness/eventually.ts';
import { fakeClock } from '../harness/fake-clock.ts';
import { startFerry } from '../harness/ferry-process.ts';
import { tempDirs } from '../harness/temp.ts';

const BRIDGE = 'held';
/** The expiry then runs every 2 s. */
const MAX_AGE_MS = 20_000;

const dirs = tempDirs('ferry-e2e-clock-');

test('a wall clock stepped a year forward, then a day back, expires no buffered message early; each expires maxAgeMs after it was stored', { timeout: 120_000 }, async (t) => {
  const hole = await blackHole();
  t.after(() => hole.close());
  const root = dirs();
  const clock = fakeClock(root);
  mkdirSync(join(root, 'bridges'), { recursive: true });
  writeFileSync(join(root, 'gateway.yaml'), 'mqtt: {allowAnonymous: loopback}\nbridges: [bridges]\ndevices: []\n');
  // Kafka never answers: every message stays in the buffer until it expires.
  writeFileSync(
    join(root, 'bridges', 'held.yaml'),
    `name: ${BRIDGE}\nfrom: {mqtt: {topics: ["d/#"]}}\nto:\n  - kafka: {brokers: "${hole.address}", topic: t, retries: 0}\nbuffer: {maxAgeMs: ${MAX_AGE_MS}}\n`,
  );
  const gw = await startFerry(['--config', join(root, 'gateway.yaml'), '--data-dir', join(root, 'data')], clock.env);
  t.after(() => gw.child.kill('SIGKILL'));
  const device = await connectAsync(gw.mqttUrl, { clientId: 'dev', reconnectPeriod: 0 });
  t.after(() => device.end(true));
  const buffered = async () => {
    const status = await fetchStatus(gw.adminUrl);
    return { messages: status.buffer.bridges.find((b) => b.bridge === BRIDGE)?.messages, expired: status.counters[`buffer.expired{bridge=${BRIDGE}}`] ?? 0 };
  };
  const stepLogged = (direction: string) => gw.logs.some((l) => String(l['msg']).startsWith(`the wall clock was set ${direction}`));
  // Waits for the expiry turn that saw the step (it logs it), or, if none says so, for the expiry.
  const afterStep = async (direction: string) => {
    await eventually(async () => assert.ok(stepLogged(direction) || (await buffered()).expired > 0, `no expiry turn saw the clock set ${direction}`), { timeoutMs: 10_000 });
  };

  await Promise.all(Array.from({ length: 20 }, (_, i) => device.publishAsync('d/a', `before ${i}`, { qos: 1 })));
  assert.deepEqual(await buffered(), { messages: 20, expired: 0 });

  clock.set('+365d');
  await afterStep('forward');
  assert.deepEqual(await buffered(), { messages: 20, expired: 0 }, 'the clock set a year forward expired messages that were seconds old');

  await Promise.all(Array.from({ length: 10 }, (_, i) => device.publishAsync('d/a', `after ${i}`, { qos: 1 })));
  clock.set('+364d');
  await afterStep('back');
  assert.deepEqual(await buffered(), { messages: 30, expired: 0 }, 'the clock set a day back expired messages');

  // Not kept for ever either: messages stamped before the steps, and those stamped by the
  // stepped clock (a day ahead of the clock now), expire once they spent maxAgeMs in the buffer.
  await eventually(async () => assert.deepEqual(await buffered(), { messages: 0, expired: 30 }), { timeoutMs: 60_000 });
});
