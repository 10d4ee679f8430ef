import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { Redis } from 'ioredis';
import { isFerryError } from '../../src/core/errors.ts';
import { redisClient } from '../../src/lib/redis.ts';
import { RedisClients } from '../../src/redis/clients.ts';
import { redisConnectionSchema } from '../../src/redis/connection-config.ts';
import { HandlerRedis, redisTools } from '../../src/redis/handler-tools.ts';
import { tcpProxy } from '../harness/cuttable-proxy.ts';
import { closedPort } from '../harness/net.ts';
import { randomName, requireService } from '../harness/services.ts';

const prefixes: string[] = [];
after(async () => {
  const redis = new Redis(await requireService('redis'), { maxRetriesPerRequest: 1 });
  for (const prefix of prefixes) {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
  }
  await redis.quit();
});

/** A key prefix of this test, removed afterwards. */
function prefix(): string {
  const p = randomName('ferry:test:tools:');
  prefixes.push(p);
  return p;
}

test('tools.redis: strings with TTL and NX, del, exists, incr and expire, JSON values and hashes against real Redis', { timeout: 30_000 }, async () => {
  const url = await requireService('redis');
  const clients = new RedisClients();
  const lease = clients.acquire(redisConnectionSchema().parse({ url }));
  const redis = redisTools('cache', lease.connection);
  const p = prefix();
  try {
    assert.equal(await redis.get(`${p}none`), undefined);
    assert.equal(await redis.set(`${p}s`, 'one'), true);
    assert.equal(await redis.get(`${p}s`), 'one');
    assert.equal(await redis.set(`${p}s`, 'two', { nx: true }), false, 'NX on an existing key writes nothing');
    assert.equal(await redis.get(`${p}s`), 'one');
    assert.equal(await redis.set(`${p}n`, 'x', { nx: true, ttlMs: 60_000 }), true);
    const ttl = await redis.ttl(`${p}n`);
    assert.ok(ttl !== undefined && ttl > 0 && ttl <= 60_000, `ttl ${ttl}`);
    assert.equal(await redis.ttl(`${p}s`), undefined, 'no expiry');
    assert.equal(await redis.exists(`${p}s`), true);
    assert.equal(await redis.del(`${p}s`, `${p}none`), 1);
    assert.equal(await redis.exists(`${p}s`), false);

    assert.equal(await redis.incr(`${p}count`), 1);
    assert.equal(await redis.incr(`${p}count`, 5), 6);
    assert.equal(await redis.expire(`${p}count`, 30_000), true);
    assert.equal(await redis.expire(`${p}none`, 30_000), false);

    assert.equal(await redis.setJson(`${p}j`, { site: 'plant-north', lines: [1, 2] }), true);
    assert.deepEqual(await redis.getJson(`${p}j`), { site: 'plant-north', lines: [1, 2] });
    assert.equal(await redis.getJson(`${p}none`), undefined);
    await redis.set(`${p}text`, 'not json');
    await assert.rejects(redis.getJson(`${p}text`), /redis 'cache': the value of .*text is not JSON/);

    assert.equal(await redis.hset(`${p}h`, { a: '1', b: '2' }), 2);
    assert.equal(await redis.hget(`${p}h`, 'a'), '1');
    assert.equal(await redis.hget(`${p}h`, 'z'), undefined);
    assert.deepEqual(await redis.hgetall(`${p}h`), { a: '1', b: '2' });
    assert.deepEqual(await redis.hgetall(`${p}none`), {});
    assert.equal(await redis.hdel(`${p}h`, 'a', 'z'), 1);

    // A command Redis refuses names the connection and the command.
    await assert.rejects(redis.incr(`${p}h`), (error: unknown) => isFerryError(error) && /^redis 'cache' \(redis:\/\/[^)]*\): INCRBY .*h failed: WRONGTYPE/.test(error.message));
  } finally {
    lease.release();
  }
  assert.equal(clients.size, 0);
});

test('one client per distinct connection: equal settings share it, the last release closes it', { timeout: 30_000 }, async () => {
  const url = await requireService('redis');
  const clients = new RedisClients();
  const settings = redisConnectionSchema().parse({ url });
  const a = clients.acquire(settings);
  const b = clients.acquire({ ...settings });
  const c = clients.acquire({ ...settings, commandTimeoutMs: 500 });
  assert.equal(a.connection, b.connection);
  assert.notEqual(a.connection, c.connection);
  assert.equal(clients.size, 2);
  await redisTools('x', a.connection).exists('ferry:test:none');
  a.release();
  a.release(); // twice is once
  assert.equal(clients.size, 2);
  b.release();
  c.release();
  assert.equal(clients.size, 0);
  await assert.rejects(redisTools('x', a.connection).get('k'), /connection closed/);
});

test('offline: fail (the default) fails at once while Redis is unreachable; the first connection is waited for', { timeout: 30_000 }, async () => {
  const url = await requireService('redis');
  const target = new URL(url);
  const proxy = await tcpProxy({ host: target.hostname, port: Number(target.port || 6379) });
  const clients = new RedisClients();
  // A command timeout far above the test's own timeout: failing at once is the only way to pass.
  const lease = clients.acquire(redisConnectionSchema().parse({ url: `redis://127.0.0.1:${proxy.port}`, commandTimeoutMs: 120_000 }));
  const redis = redisTools('cache', lease.connection);
  const p = prefix();
  try {
    // Sent before the connection is made: it waits for it rather than failing.
    assert.equal(await redis.set(`${p}k`, 'v'), true);
    await proxy.cut();
    await assert.rejects(
      async () => {
        // The first command after the cut may be the one that finds the connection gone.
        for (let i = 0; i < 50; i++) {
          await redis.get(`${p}k`);
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      },
      (error: unknown) => isFerryError(error, 'UPSTREAM_UNAVAILABLE') && error.retryable && /redis 'cache' .*: GET .* failed: Redis .* is unreachable/.test(error.message),
    );
    await proxy.restore();
  } finally {
    lease.release();
    await proxy.close();
  }

  const unreachable = clients.acquire(redisConnectionSchema().parse({ url: `redis://127.0.0.1:${await closedPort()}`, commandTimeoutMs: 120_000 }));
  try {
    await assert.rejects(redisTools('nowhere', unreachable.connection).get('k'), /redis 'nowhere'/);
  } finally {
    unreachable.release();
  }
});

test('offline: wait holds a command while Redis is unreachable and runs it once the connection is back', { timeout: 30_000 }, async () => {
  const url = await requireService('redis');
  const target = new URL(url);
  const proxy = await tcpProxy({ host: target.hostname, port: Number(target.port || 6379) });
  const clients = new RedisClients();
  const lease = clients.acquire(redisConnectionSchema().parse({ url: `redis://127.0.0.1:${proxy.port}`, offline: 'wait', commandTimeoutMs: 20_000 }));
  const redis = redisTools('cache', lease.connection);
  const p = prefix();
  try {
    await redis.set(`${p}k`, 'v');
    await proxy.cut();
    const pending = redis.get(`${p}k`);
    await new Promise((resolve) => setTimeout(resolve, 300));
    await proxy.restore();
    assert.equal(await pending, 'v');
  } finally {
    lease.release();
    await proxy.close();
  }
});

test('a handler bridge gets only the connections gateway.yaml declares, and gives them back when it stops', { timeout: 30_000 }, async () => {
  const url = await requireService('redis');
  const clients = new RedisClients();
  const handler = new HandlerRedis('alarms', { cache: redisConnectionSchema().parse({ url }) }, clients);
  assert.throws(() => handler.get('sites'), /bridge 'alarms': tools\.redis\('sites'\): no such connection under `redis:` in gateway\.yaml \(declared: cache\)/);
  const cache = handler.get('cache');
  assert.equal(handler.get('cache'), cache);
  assert.equal(await cache.exists('ferry:test:none'), false);
  assert.equal(clients.size, 1);
  handler.close();
  assert.equal(clients.size, 0);
  assert.throws(() => handler.get('cache'), /stopped/);
});

test('setJson of a value with no JSON text rejects (never throws) with MESSAGE_INVALID and writes nothing', { timeout: 30_000 }, async () => {
  const url = await requireService('redis');
  const clients = new RedisClients();
  const lease = clients.acquire(redisConnectionSchema().parse({ url }));
  const tools = redisTools('cache', lease.connection);
  const key = `${prefix()}json`;
  try {
    const cycle: Record<string, unknown> = {};
    cycle['self'] = cycle;
    for (const value of [undefined, () => 1, { n: 1n }, cycle]) {
      // A call, not an await inside try: a synchronous throw would escape the promise's handlers.
      const pending = tools.setJson(key, value);
      await assert.rejects(pending, (error: unknown) => isFerryError(error, 'MESSAGE_INVALID') && error.message.startsWith(`redis 'cache': SET ${key}: `));
      assert.equal(await tools.exists(key), false, `${typeof value}: something was written`);
    }
    assert.equal(await tools.setJson(key, null), true);
    assert.equal(await tools.getJson(key), null);
  } finally {
    lease.release();
  }
});

test('tools let go of (a closed redisClient, a stopped bridge) reject their commands while others still share the connection', { timeout: 30_000 }, async () => {
  const url = await requireService('redis');
  const key = `${prefix()}shared`;
  const closed = redisClient({ url }, { name: 'closed' });
  const open = redisClient({ url }, { name: 'open' });
  const clients = new RedisClients();
  const settings = redisConnectionSchema().parse({ url });
  const other = clients.acquire(settings);
  const handler = new HandlerRedis('alarms', { cache: settings }, clients);
  try {
    await closed.set(key, 'v');
    const stopped = handler.get('cache');
    assert.equal(await stopped.get(key), 'v');
    await closed.close();
    handler.close();
    await assert.rejects(closed.get(key), (error: unknown) => isFerryError(error, 'SHUTDOWN') && /redis 'closed' .*connection closed/.test(error.message));
    await assert.rejects(stopped.get(key), (error: unknown) => isFerryError(error, 'SHUTDOWN'));
    // The connection itself stays with those still holding it.
    assert.equal(await open.get(key), 'v');
    assert.equal(await redisTools('other', other.connection).get(key), 'v');
  } finally {
    other.release();
    await open.close();
  }
});

test('a first connection that fails names its cause (ECONNREFUSED), not ioredis "max retries per request"', { timeout: 30_000 }, async () => {
  const port = await closedPort();
  const redis = redisClient({ url: `redis://127.0.0.1:${port}` }, { name: 'down' });
  try {
    await assert.rejects(
      redis.get('k'),
      (error: unknown) =>
        isFerryError(error, 'UPSTREAM_UNAVAILABLE') &&
        error.retryable &&
        new RegExp(`redis 'down' \\(redis://127\\.0\\.0\\.1:${port}\\): GET k failed: Redis .* is unreachable: connect ECONNREFUSED 127\\.0\\.0\\.1:${port}$`).test(
          error.message,
        ) &&
        (error.cause as { cause?: { code?: unknown } }).cause?.code === 'ECONNREFUSED',
    );
  } finally {
    await redis.close();
  }
});

test('set and setJson refuse a ttlMs that is not more than 0 and write nothing; hset of no field resolves 0 as hdel of none does', { timeout: 30_000 }, async () => {
  const redis = redisClient({ url: await requireService('redis') }, { name: 'cache' });
  const p = prefix();
  try {
    for (const ttlMs of [0, -5, Number.NaN, Number.POSITIVE_INFINITY]) {
      await assert.rejects(
        redis.set(`${p}s`, 'v', { ttlMs }),
        (error: unknown) => isFerryError(error, 'MESSAGE_INVALID') && /ttlMs must be more than 0 milliseconds/.test(error.message),
      );
      await assert.rejects(redis.setJson(`${p}j`, { a: 1 }, { ttlMs }), (error: unknown) => isFerryError(error, 'MESSAGE_INVALID'));
    }
    assert.equal(await redis.exists(`${p}s`), false);
    assert.equal(await redis.exists(`${p}j`), false);
    // A fraction of a millisecond is still a TTL: rounded up to 1 ms, not refused.
    assert.equal(await redis.set(`${p}f`, 'v', { ttlMs: 0.4 }), true);
    assert.equal(await redis.hset(`${p}h`, {}), 0);
    assert.equal(await redis.hdel(`${p}h`), 0);
    assert.deepEqual(await redis.hgetall(`${p}h`), {});
  } finally {
    await redis.close();
  }
});
