import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { Subject } from 'rxjs';
import { type Delivery, createDelivery } from '../../src/core/delivery.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import { compileTemplate } from '../../src/core/template.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { type RateLimitConfig, rateLimitSchema } from '../../src/redis/rate-limit-config.ts';
import { leaseSize, rateLimit } from '../../src/redis/rate-limit.ts';
import type { BridgeConfig } from '../../src/config/schema.ts';
import { isFerryError } from '../../src/core/errors.ts';
import { rateLimit as libraryRateLimit } from '../../src/lib/redis.ts';
import { ingressOperators } from '../../src/runtime/ingress.ts';
import { closedPort } from '../harness/net.ts';
import { randomName, requireService } from '../harness/services.ts';
import { eventually } from '../harness/eventually.ts';
import { capturedEntries, type LoggedLine } from '../harness/log-lines.ts';

const prefixes: string[] = [];
after(async () => {
  const redis = new Redis(await requireService('redis'), { maxRetriesPerRequest: 1 });
  for (const prefix of prefixes) {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
  }
  await redis.quit();
});

async function waitFor(what: string, condition: () => boolean): Promise<void> {
  await eventually(() => assert.ok(condition(), 'waiting for: condition()'), { timeoutMs: 15000 });
  assert.ok(condition(), `timed out waiting for ${what}`);
}

/** One gateway's limiter over a Subject: what passed, what it refused, and how each delivery was settled. */
function limiter(config: Partial<RateLimitConfig> & { messagesPerSecond: number }) {
  const parsed = rateLimitSchema().parse(config);
  const counters = new CounterRegistry();
  const { logger, entries: logs } = capturedEntries<LoggedLine>('info');
  const template = compileTemplate(parsed.key);
  const input = new Subject<Delivery>();
  const passed: string[] = [];
  const rejected: { id: string; reason: string; label: string }[] = [];
  const settled = new Map<string, string>();
  const subscription = input
    .pipe(
      rateLimit({
        bridge: 'test',
        config: parsed,
        keyOf: (d) => template.render({ envelope: d.envelope, filters: [] }),
        reject: (d, reason, label) => {
          rejected.push({ id: Buffer.from(d.envelope.payload).toString(), reason, label });
          d.ack();
        },
        logger,
        counters,
      }),
    )
    .subscribe((d) => passed.push(Buffer.from(d.envelope.payload).toString()));
  return {
    passed,
    rejected,
    settled,
    counters,
    logs,
    send(clientId: string, payload: string) {
      const envelope = createEnvelope({ topic: `devices/${clientId}/telemetry`, payload, origin: { source: 'test', clientId } });
      input.next(createDelivery(envelope, { onAck: () => settled.set(payload, 'ack'), onNack: (e) => settled.set(payload, `nack: ${e.message}`) }));
    },
    stop: () => subscription.unsubscribe(),
  };
}

test('two gateways sharing a limit through Redis pass its burst between them and reject the rest', { timeout: 60_000 }, async () => {
  const redis = await requireService('redis');
  const keyPrefix = randomName('ferry:test:rl:');
  prefixes.push(keyPrefix);
  // A rate this low refills nothing during the test: exactly `burst` messages pass in all.
  const shared = { redis, keyPrefix, key: 'all', messagesPerSecond: 0.001, burst: 5 };
  const a = limiter(shared);
  const b = limiter(shared);
  for (let i = 0; i < 4; i++) {
    a.send('sensor-1', `a${i}`);
    b.send('sensor-2', `b${i}`);
  }
  await waitFor('every message decided', () => a.passed.length + a.rejected.length === 4 && b.passed.length + b.rejected.length === 4);
  assert.equal(a.passed.length + b.passed.length, 5, `passed: ${[...a.passed, ...b.passed].join(' ')}`);
  const rejected = [...a.rejected, ...b.rejected];
  assert.equal(rejected.length, 3);
  for (const r of rejected) assert.equal(r.reason, "rate limited: over 0.001 messages/s for key 'all'");
  // Each gateway passes a prefix of its own messages, in order: what is over the limit is the newest.
  for (const [side, l] of [
    ['a', a],
    ['b', b],
  ] as const)
    assert.deepEqual(
      l.passed,
      l.passed.map((_, i) => `${side}${i}`),
    );
  a.stop();
  b.stop();
});

test('the default key limits each device on its own', { timeout: 60_000 }, async () => {
  const redis = await requireService('redis');
  const keyPrefix = randomName('ferry:test:rl:');
  prefixes.push(keyPrefix);
  const l = limiter({ redis, keyPrefix, messagesPerSecond: 0.001, burst: 2 });
  for (let i = 0; i < 3; i++) for (const device of ['d1', 'd2', 'd3']) l.send(device, `${device}-${i}`);
  await waitFor('every message decided', () => l.passed.length + l.rejected.length === 9);
  assert.deepEqual([...l.passed].sort(), ['d1-0', 'd1-1', 'd2-0', 'd2-1', 'd3-0', 'd3-1']);
  assert.deepEqual(l.rejected.map((r) => r.id).sort(), ['d1-2', 'd2-2', 'd3-2']);
  l.stop();
});

test('onExceed: delay holds messages unacknowledged and lets them through in order as tokens come', { timeout: 60_000 }, async () => {
  const redis = await requireService('redis');
  const keyPrefix = randomName('ferry:test:rl:');
  prefixes.push(keyPrefix);
  const l = limiter({ redis, keyPrefix, messagesPerSecond: 20, burst: 1, onExceed: 'delay' });
  const sent = Array.from({ length: 8 }, (_, i) => `m${i}`);
  for (const m of sent) l.send('sensor-1', m);
  await waitFor('the first message', () => l.passed.length >= 1);
  await waitFor('every message', () => l.passed.length === sent.length);
  assert.deepEqual(l.passed, sent);
  assert.equal(l.rejected.length, 0);
  assert.equal(l.settled.size, 0, 'the limiter itself acks nothing: the buffer does, later');
  l.stop();
});

test('Redis unreachable: failOpen lets messages through, counted, with one warning', { timeout: 60_000 }, async () => {
  const l = limiter({ redis: `redis://127.0.0.1:${await closedPort()}`, messagesPerSecond: 0.001, burst: 1, timeoutMs: 200 });
  l.send('sensor-1', 'x0');
  await waitFor('the first message', () => l.passed.length === 1);
  for (let i = 1; i < 5; i++) l.send('sensor-1', `x${i}`);
  await waitFor('every message', () => l.passed.length === 5);
  assert.equal(l.counters.get('ratelimit.unavailable{bridge=test}'), 5);
  const warnings = l.logs.filter((e) => e.level === 40);
  assert.equal(warnings.length, 1);
  assert.match(
    warnings[0]?.msg ?? '',
    /^rate limit: Redis unavailable \(Redis redis:\/\/127\.0\.0\.1:\d+ is unreachable: .*\); letting messages through without a limit \(failOpen\)/,
  );
  l.stop();
});

test('Redis unreachable with failOpen: false holds messages, refuses past maxWaiting, and nacks the held ones on stop', { timeout: 60_000 }, async () => {
  const l = limiter({ redis: `redis://127.0.0.1:${await closedPort()}`, messagesPerSecond: 10, failOpen: false, maxWaiting: 2, timeoutMs: 200 });
  l.send('sensor-1', 'h0');
  l.send('sensor-1', 'h1');
  l.send('sensor-1', 'h2');
  assert.match(l.settled.get('h2') ?? '', /^nack: rate limit of bridge 'test': 2 messages already waiting \(maxWaiting\)$/);
  await waitFor('the outage warning', () => l.logs.some((e) => e.level === 40));
  assert.match(l.logs.find((e) => e.level === 40)?.msg ?? '', /holding messages unacknowledged until it is back/);
  assert.deepEqual(l.passed, []);
  assert.equal(l.settled.has('h0'), false);
  l.stop();
  assert.equal(l.settled.get('h0'), 'nack: gateway stopping: message not stored');
  assert.equal(l.settled.get('h1'), 'nack: gateway stopping: message not stored');
});

test('two gateways on one key stay within burst + rate × time + one lease each (the bound in docs/bridges.md)', { timeout: 60_000 }, async (t) => {
  const redis = await requireService('redis');
  const keyPrefix = randomName('ferry:test:rl:');
  prefixes.push(keyPrefix);
  const shared = { redis, keyPrefix, key: 'all', messagesPerSecond: 400, burst: 50, leaseMs: 100 };
  const lease = leaseSize(rateLimitSchema().parse(shared));
  assert.equal(lease, 40);
  const a = limiter(shared);
  const b = limiter(shared);
  let sent = 0;
  const started = performance.now();
  // Both offer far more than the limit for 1.5 s, 20 messages each per event-loop turn.
  while (performance.now() - started < 1500) {
    for (let i = 0; i < 20; i++) {
      a.send('sensor-1', `a${sent}`);
      b.send('sensor-2', `b${sent}`);
      sent += 1;
    }
    await new Promise((resolve) => setImmediate(resolve));
  }
  await waitFor('every message decided', () => a.passed.length + a.rejected.length === sent && b.passed.length + b.rejected.length === sent);
  const seconds = (performance.now() - started) / 1000;
  const passed = a.passed.length + b.passed.length;
  const bound = shared.burst + shared.messagesPerSecond * seconds + 2 * lease;
  t.diagnostic(
    `${passed} passed of ${2 * sent} offered in ${seconds.toFixed(2)} s; bound ${bound.toFixed(0)} (burst + rate × time ${(shared.burst + shared.messagesPerSecond * seconds).toFixed(0)})`,
  );
  assert.ok(passed <= bound, `${passed} passed in ${seconds.toFixed(2)} s: over the bound ${bound.toFixed(0)}`);
  assert.ok(passed >= shared.burst, `${passed} passed: not even the burst`);
  assert.ok(a.passed.length > 0 && b.passed.length > 0, `both gateways pass some: ${a.passed.length} / ${b.passed.length}`);
  a.stop();
  b.stop();
});

test('with a lease, a message within the limit passes without waiting for Redis', { timeout: 60_000 }, async () => {
  const redis = await requireService('redis');
  const keyPrefix = randomName('ferry:test:rl:');
  prefixes.push(keyPrefix);
  const l = limiter({ redis, keyPrefix, key: 'all', messagesPerSecond: 1000, burst: 1000, leaseMs: 1000 });
  l.send('sensor-1', 'first');
  await waitFor('the first message (asked Redis, took a lease)', () => l.passed.length === 1);
  l.send('sensor-1', 'second');
  assert.deepEqual(l.passed, ['first', 'second'], 'the second passed synchronously, from the lease');
  l.stop();
});

test('a bucket key holding another type refuses only its messages (failed), leaves the key alone, and is no outage', { timeout: 60_000 }, async () => {
  const redis = await requireService('redis');
  const keyPrefix = randomName('ferry:test:rl:');
  prefixes.push(keyPrefix);
  const admin = new Redis(redis, { maxRetriesPerRequest: 1 });
  await admin.set(`${keyPrefix}config`, 'something else');
  const l = limiter({ redis, keyPrefix, messagesPerSecond: 0.001, burst: 2, failOpen: false });
  for (let i = 0; i < 3; i++) l.send('sensor-1', `s${i}`);
  // In the same script call as sensor-1's bucket, after it: its tokens are taken once.
  l.send('config', 'c0');
  await waitFor('every message decided', () => l.passed.length + l.rejected.length === 4);
  assert.deepEqual(l.passed, ['s0', 's1']);
  assert.deepEqual(
    l.rejected.map((r) => [r.id, r.label, r.reason]),
    [
      ['s2', 'rate_limited', "rate limited: over 0.001 messages/s for key 'sensor-1'"],
      ['c0', 'failed', `rate limit: key '${keyPrefix}config': WRONGTYPE the key holds a string, not a token bucket (a hash)`],
    ],
  );
  assert.equal(await admin.get(`${keyPrefix}config`), 'something else');
  assert.equal(Number(await admin.hget(`${keyPrefix}sensor-1`, 't')), 0, 'sensor-1 charged once: burst 2, two passed');
  assert.deepEqual(
    l.logs.filter((e) => e.level >= 40),
    [],
    'no outage warning',
  );
  l.stop();
  await admin.quit();
});

test('a key the ACL forbids fails the whole script call: each key is asked alone, and only the forbidden one is refused', { timeout: 60_000 }, async () => {
  const redis = await requireService('redis');
  const keyPrefix = randomName('ferry:test:rl:');
  prefixes.push(keyPrefix);
  const admin = new Redis(redis, { maxRetriesPerRequest: 1 });
  const user = randomName('ferry-test-rl-');
  await admin.call('ACL', 'SETUSER', user, 'on', '>secret', `~${keyPrefix}ok-*`, '+@all');
  try {
    const url = new URL(redis);
    url.username = user;
    url.password = 'secret';
    const l = limiter({ redis: url.toString(), keyPrefix, messagesPerSecond: 0.001, burst: 1, failOpen: false });
    l.send('ok-1', 'a0');
    l.send('secret-1', 'b0');
    l.send('ok-1', 'a1');
    await waitFor('every message decided', () => l.passed.length + l.rejected.length === 3);
    assert.deepEqual(l.passed, ['a0']);
    assert.deepEqual(
      l.rejected.map((r) => [r.id, r.label]),
      [
        ['a1', 'rate_limited'],
        ['b0', 'failed'],
      ],
    );
    assert.match(l.rejected[1]?.reason ?? '', new RegExp(`^rate limit: key '${keyPrefix}secret-1': NOPERM `));
    assert.equal(l.logs.filter((e) => e.level >= 40).length, 0, 'no outage warning');
    l.stop();
  } finally {
    await admin.call('ACL', 'DELUSER', user);
    await admin.quit();
  }
});

test('a rate limit key template without a value refuses the message (failed), instead of a bucket shared by every such device', { timeout: 60_000 }, async () => {
  const redis = await requireService('redis');
  const keyPrefix = randomName('ferry:test:rl:');
  prefixes.push(keyPrefix);
  const rateLimit = rateLimitSchema().parse({ redis, keyPrefix, key: '${username}', messagesPerSecond: 0.001, burst: 2 });
  const dead: string[] = [];
  const counters = new CounterRegistry();
  const operator = ingressOperators({ name: 'b', file: 'b.yaml', rateLimit, transform: [] } as unknown as BridgeConfig, {
    deadLetters: {
      deadLetter: (_bridge, delivery, _envelope, sink, reason) => {
        dead.push(`${delivery.envelope.origin.clientId}: ${sink}: ${reason}`);
        delivery.ack();
      },
    },
    logger: pino({ level: 'silent' }),
    counters,
    sourceFilters: [],
  });
  const input = new Subject<Delivery>();
  const passed: string[] = [];
  const subscription = operator(input).subscribe((d) => passed.push(d.envelope.origin.clientId ?? ''));
  for (const clientId of ['dev-a', 'dev-b', 'dev-c']) {
    input.next(createDelivery(createEnvelope({ topic: `devices/${clientId}/t`, payload: '{}', origin: { source: 'mqtt', clientId } }), { onAck() {}, onNack() {} }));
  }
  input.next(
    createDelivery(createEnvelope({ topic: 'devices/dev-d/t', payload: '{}', origin: { source: 'mqtt', clientId: 'dev-d', username: 'site-7' } }), {
      onAck() {},
      onNack() {},
    }),
  );
  await waitFor('every message decided', () => passed.length + dead.length === 4);
  assert.deepEqual(passed, ['dev-d']);
  assert.deepEqual(
    dead,
    ['dev-a', 'dev-b', 'dev-c'].map((id) => `${id}: rateLimit: rate limit key '\${username}' has no value: \${username} has no value: the message has no username`),
  );
  assert.equal(counters.get('bridge.messages.rejected{bridge=b,reason=failed}'), 3);
  subscription.unsubscribe();
});

test('a Redis connection name that resolves to nothing fails the stream (CONFIG_INVALID) instead of failing open', { timeout: 60_000 }, async () => {
  const parsed = rateLimitSchema().parse({ redis: 'cache', messagesPerSecond: 1, burst: 1, key: 'all' });
  const input = new Subject<Delivery>();
  const passed: string[] = [];
  const failed = new Promise<unknown>((resolve) => {
    input
      .pipe(rateLimit({ bridge: 'test', config: parsed, keyOf: () => 'all', reject: (d) => d.ack(), logger: pino({ level: 'silent' }), counters: new CounterRegistry() }))
      .subscribe({ next: (d) => passed.push(Buffer.from(d.envelope.payload).toString()), error: resolve });
  });
  const settled: string[] = [];
  for (let i = 0; i < 3; i++) {
    input.next(createDelivery(createEnvelope({ topic: 't', payload: `m${i}`, origin: { source: 'test', clientId: 'c' } }), { onAck() {}, onNack: (e) => settled.push(e.message) }));
  }
  const error = await failed;
  assert.ok(isFerryError(error, 'CONFIG_INVALID'), String(error));
  assert.match((error as Error).message, /no Redis connection named 'cache'/);
  assert.deepEqual(passed, [], 'nothing let through unlimited');
  assert.equal(settled.length, 3, 'the held messages are given back');
});

test("the library's rateLimit refuses a connection name at once, naming what to give instead", () => {
  assert.throws(
    () => libraryRateLimit({ redis: 'cache', messagesPerSecond: 1 }),
    (error: unknown) =>
      isFerryError(error, 'CONFIG_INVALID') &&
      /^rateLimit: redis 'cache' is not a redis:\/\/ or rediss:\/\/ URL; .*give the URL \(redis:\/\/127\.0\.0\.1:6379\)$/.test((error as Error).message),
  );
});
