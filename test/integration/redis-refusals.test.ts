import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { Subject } from 'rxjs';
import { type Delivery, createDelivery } from '../../src/core/delivery.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import { isFerryError } from '../../src/core/errors.ts';
import { compileTemplate } from '../../src/core/template.ts';
import { createTransformContext } from '../../src/core/transform.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { RedisClients } from '../../src/redis/clients.ts';
import { redisConnectionSchema } from '../../src/redis/connection-config.ts';
import { leasedTools } from '../../src/redis/handler-tools.ts';
import { lookupStep } from '../../src/redis/lookup.ts';
import { type LookupConfig, lookupSchema } from '../../src/redis/lookup-config.ts';
import { type RateLimitConfig, rateLimitSchema } from '../../src/redis/rate-limit-config.ts';
import { rateLimit } from '../../src/redis/rate-limit.ts';
import { eventually } from '../harness/eventually.ts';
import { capturedEntries, type LoggedLine } from '../harness/log-lines.ts';
import { type PrivateRedis, startPrivateRedis } from '../harness/private-redis.ts';

// Replies by which Redis refuses every command of a kind, whatever the key (a full Redis: OOM;
// credentials it does not take: WRONGPASS; an ACL without the command: NOPERM ... to run), are
// an outage of that Redis, not a fault of the key at hand: they once refused (dead-lettered)
// every rate-limited message instead of applying failOpen, and reached handlers as
// MESSAGE_INVALID. A private server, filled to its maxmemory, is the full Redis. The same goes
// for a database in the URL the server does not have: ioredis only reported the refused SELECT
// and ran every command on database 0.

let server: PrivateRedis;
let admin: Redis;
const withAuth = (user: string, password: string) => `redis://${user}:${password}@127.0.0.1:${server.port}`;

before(async () => {
  server = await startPrivateRedis(['--requirepass', 'pw', '--maxmemory', '4mb', '--maxmemory-policy', 'noeviction']);
  admin = new Redis(withAuth('default', 'pw'), { maxRetriesPerRequest: 1 });
  await admin.set('stored', 'kept');
  await admin.call('ACL', 'SETUSER', 'noscripts', 'on', '>s', '~*', '+@all', '-evalsha', '-eval');
  // Fill it: from here on every write is refused with OOM, reads are still served.
  const chunk = 'x'.repeat(64 * 1024);
  for (let i = 0; ; i++) {
    try {
      await admin.set(`fill:${i}`, chunk);
    } catch (error) {
      assert.match((error as Error).message, /^OOM /);
      break;
    }
  }
});

after(async () => {
  admin.disconnect();
  await server.stop();
});

function delivery(device: string, payload: string, settled: Map<string, string>): Delivery {
  const envelope = createEnvelope({ topic: `devices/${device}/telemetry`, payload, origin: { source: 'test', clientId: device } });
  return createDelivery(envelope, { onAck: () => settled.set(payload, 'ack'), onNack: (e) => settled.set(payload, `nack: ${e.message}`) });
}

function limiter(config: Partial<RateLimitConfig> & { redis: string }) {
  const parsed = rateLimitSchema().parse({ messagesPerSecond: 0.001, burst: 1, timeoutMs: 500, ...config });
  const counters = new CounterRegistry();
  const { logger, entries: logs } = capturedEntries<LoggedLine>('info');
  const input = new Subject<Delivery>();
  const passed: string[] = [];
  const rejected: string[] = [];
  const settled = new Map<string, string>();
  const subscription = input
    .pipe(
      rateLimit({
        bridge: 'test',
        config: parsed,
        keyOf: () => 'sensor-1',
        reject: (d, reason) => {
          rejected.push(reason);
          d.ack();
        },
        logger,
        counters,
        clients: new RedisClients(),
      }),
    )
    .subscribe((d) => passed.push(Buffer.from(d.envelope.payload).toString()));
  return { passed, rejected, settled, counters, logs, send: (payload: string) => input.next(delivery('sensor-1', payload, settled)), stop: () => subscription.unsubscribe() };
}

test('a full Redis (OOM) is an outage for the rate limit: failOpen lets messages through, counted, with one warning naming it; none is refused', { timeout: 30_000 }, async () => {
  const l = limiter({ redis: withAuth('default', 'pw') });
  try {
    for (let i = 0; i < 3; i++) l.send(`m${i}`);
    await eventually(() => assert.equal(l.passed.length + l.rejected.length, 3));
    assert.deepEqual(l.rejected, []);
    assert.deepEqual(l.passed, ['m0', 'm1', 'm2']);
    assert.equal(l.counters.get('ratelimit.unavailable{bridge=test}'), 3);
    const warnings = l.logs.filter((e) => e.level === 40);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]?.msg ?? '', /^rate limit: Redis unavailable \(.*refuses to serve: OOM .*\); letting messages through without a limit \(failOpen\)/);
  } finally {
    l.stop();
  }
});

test('a password Redis refuses and an ACL without EVALSHA hold messages under failOpen: false, instead of refusing each one', { timeout: 30_000 }, async () => {
  for (const [url, reply] of [
    [withAuth('default', 'wrong'), /WRONGPASS/],
    [withAuth('noscripts', 's'), /NOPERM .*'evalsha' command/],
  ] as const) {
    const l = limiter({ redis: url, failOpen: false });
    try {
      l.send('h0');
      l.send('h1');
      await eventually(() => assert.ok(l.logs.some((e) => e.level === 40)));
      const warning = l.logs.find((e) => e.level === 40)?.msg ?? '';
      assert.match(warning, /holding messages unacknowledged until it is back \(failOpen: false\)$/);
      assert.match(warning, reply);
      assert.deepEqual(l.rejected, []);
      assert.deepEqual(l.passed, []);
      assert.equal(l.settled.size, 0, 'held unacknowledged');
    } finally {
      l.stop();
    }
    assert.equal(l.settled.get('h0'), 'nack: gateway stopping: message not stored');
  }
});

test('handler tools: a write a full Redis refuses rejects retryable UPSTREAM_UNAVAILABLE; reads go on', { timeout: 30_000 }, async () => {
  const clients = new RedisClients();
  const { tools, release } = leasedTools('main', clients.acquire(redisConnectionSchema().parse({ url: withAuth('default', 'pw') })));
  try {
    assert.equal(await tools.get('stored'), 'kept');
    await assert.rejects(
      tools.setJson('new', { a: 1 }),
      (error: unknown) =>
        isFerryError(error, 'UPSTREAM_UNAVAILABLE') && error.retryable && /^redis 'main' \(.*\): SET new failed: Redis .* refuses to serve: OOM /.test(error.message),
    );
  } finally {
    release();
  }
});

test('lookup: a password Redis refuses is an outage (onUnavailable: hold), not a refusal of each key', { timeout: 30_000 }, async () => {
  const parsed = lookupSchema().parse({ redis: withAuth('default', 'wrong'), key: 'site:${clientId}', field: 'site', cacheMs: 0 }) as LookupConfig;
  const { logger, entries: logs } = capturedEntries<LoggedLine>('info');
  const rejected: string[] = [];
  const passed: string[] = [];
  const settled = new Map<string, string>();
  const context = createTransformContext((d, _original, reason) => {
    rejected.push(reason);
    d.ack();
  });
  const template = compileTemplate(parsed.key);
  const input = new Subject<Delivery>();
  const subscription = input
    .pipe(
      lookupStep({
        bridge: 'test',
        config: parsed,
        context,
        keyOf: (d) => template.render({ envelope: d.envelope, filters: [] }),
        logger,
        counters: new CounterRegistry(),
        clients: new RedisClients(),
      }),
    )
    .subscribe((d) => passed.push(Buffer.from(d.envelope.payload).toString()));
  try {
    input.next(delivery('pump-7', '{"n":1}', settled));
    await eventually(() => assert.ok(logs.some((e) => e.level === 40)));
    assert.match(logs.find((e) => e.level === 40)?.msg ?? '', /^lookup: Redis unavailable \(.*WRONGPASS.*\); holding messages unacknowledged/);
    assert.deepEqual(rejected, []);
    assert.deepEqual(passed, []);
    assert.equal(settled.size, 0, 'held unacknowledged');
  } finally {
    subscription.unsubscribe();
  }
});

test('a database Redis does not have (SELECT refused) fails commands as unavailable, instead of running them on database 0', { timeout: 30_000 }, async () => {
  const clients = new RedisClients();
  // The server has the default 16 databases.
  const { tools, release } = leasedTools('main', clients.acquire(redisConnectionSchema().parse({ url: `${withAuth('default', 'pw')}/99` })));
  try {
    await assert.rejects(
      tools.get('stored'),
      (error: unknown) =>
        isFerryError(error, 'UPSTREAM_UNAVAILABLE') &&
        error.retryable &&
        /^redis 'main' \(.*\/99\): GET stored failed: Redis .* refuses the URL's database: ERR DB index is out of range$/.test(error.message),
    );
  } finally {
    release();
  }
  // A database it has is selected: 'stored' lives in database 0 only.
  const { tools: three, release: releaseThree } = leasedTools('three', clients.acquire(redisConnectionSchema().parse({ url: `${withAuth('default', 'pw')}/3` })));
  try {
    assert.equal(await three.get('stored'), undefined);
  } finally {
    releaseThree();
  }
});

test('a Redis URL ioredis would refuse, or read a database from that is not a number, is a config problem, not a runtime one', () => {
  for (const url of ['redis://127.0.0.1:99999', 'redis://127.0.0.1:6379/abc', 'redis://127.0.0.1:6379?db=x', 'redis://bad host:6379']) {
    const connection = redisConnectionSchema().safeParse({ url });
    assert.equal(connection.success, false, url);
    const limit = rateLimitSchema().safeParse({ redis: url, messagesPerSecond: 1 });
    assert.equal(limit.success, false, url);
    const lookup = lookupSchema().safeParse({ redis: url, key: 'k', field: 'f' });
    assert.equal(lookup.success, false, url);
  }
  for (const url of ['redis://127.0.0.1:6379', 'redis://u:p%40ss@cache:6380/3', 'rediss://cache?db=2']) assert.equal(redisConnectionSchema().safeParse({ url }).success, true, url);
  assert.equal(rateLimitSchema().safeParse({ redis: 'cache', messagesPerSecond: 1 }).success, true);
});
