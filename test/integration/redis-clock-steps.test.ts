// The token buckets when Redis' clock (TIME) steps: set by NTP on the Redis host, or Redis
// restarted on a host whose clock differs. A step back leaves each bucket written at a time the
// clock has not reached; a step forward makes the deadline the buckets learnt from earlier
// replies too early. Neither may stop the limit: a bucket refills from Redis' new time, and a
// call still waited for is not refused as late.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { isFerryError } from '../../src/core/errors.ts';
import { RedisTokenBuckets, type ScriptingClient } from '../../src/redis/token-buckets.ts';
import { startPrivateRedis } from '../harness/private-redis.ts';

const HOUR_MS = 3_600_000;

test("a bucket written at a time Redis' clock has not reached (the clock was set back) refills from Redis' time", { timeout: 30_000 }, async () => {
  const server = await startPrivateRedis();
  const redis = new Redis(server.url, { maxRetriesPerRequest: 1 });
  const buckets = new RedisTokenBuckets(redis, { messagesPerSecond: 10, burst: 10 }, 1000, 1000);
  try {
    assert.deepEqual(await buckets.take([{ key: 'stepped', count: 10 }]), [{ granted: 10, waitMs: 0 }]);
    // The bucket as a clock an hour ahead left it: empty, written an hour from Redis' time now.
    const [seconds] = await redis.time();
    await redis.hset('stepped', 't', '0', 'ts', String(Number(seconds) * 1000 + HOUR_MS));
    const first = await buckets.take([{ key: 'stepped', count: 1 }]);
    assert.equal(first[0]?.granted, 0);
    // 10 a second: half a second later, about 5 tokens (not none for the hour the clock was ahead).
    await sleep(600);
    const [later] = await buckets.take([{ key: 'stepped', count: 5 }]);
    assert.equal(later?.granted, 5, `granted ${later?.granted} after 600 ms at 10/s`);
    assert.ok(Number(await redis.hget('stepped', 'ts')) <= (Number((await redis.time())[0]) + 1) * 1000, "the bucket is stamped with Redis' time");
  } finally {
    redis.disconnect();
    await server.stop();
  }
});

/**
 * The buckets' client to `redis`, whose clock looks `shift.ms` ahead of TIME: the deadline a call
 * carries is moved back by it before Redis compares it with TIME, and the time Redis answers is
 * moved ahead. The real server's clock cannot be moved here: the machine's clock is shared, and
 * libfaketime cannot run this redis-server (its jemalloc recurses into clock_gettime at start).
 */
function clockAhead(redis: Redis, shift: { ms: number }): ScriptingClient {
  const deadlineMoved = (numKeys: number, args: (string | number)[]) => args.map((arg, i) => (i === numKeys + 3 && Number(arg) > 0 ? Number(arg) - shift.ms : arg));
  const timeMoved = (reply: unknown) => {
    const flat = [...(reply as (number | string)[])];
    flat[flat.length - 1] = Number(flat[flat.length - 1]) + shift.ms;
    return flat;
  };
  return {
    evalsha: async (sha, numKeys, ...args) => timeMoved(await redis.evalsha(sha, numKeys, ...deadlineMoved(numKeys, args))),
    eval: async (script, numKeys, ...args) => timeMoved(await redis.eval(script, numKeys, ...deadlineMoved(numKeys, args))),
  };
}

test('a call that Redis, its clock set ahead, finds past its deadline while it is waited for is sent again and takes its tokens', { timeout: 30_000 }, async () => {
  const server = await startPrivateRedis();
  const redis = new Redis(server.url, { maxRetriesPerRequest: 1 });
  const shift = { ms: 0 };
  const buckets = new RedisTokenBuckets(clockAhead(redis, shift), { messagesPerSecond: 0.01, burst: 10 }, 1000, 1000);
  try {
    // The first answers make Redis' clock known.
    assert.deepEqual(await buckets.take([{ key: 'ahead', count: 1 }]), [{ granted: 1, waitMs: 0 }]);
    assert.deepEqual(await buckets.take([{ key: 'ahead', count: 1 }]), [{ granted: 1, waitMs: 0 }]);
    shift.ms = HOUR_MS;
    // Answered at once, the call is not late: refused, the limiter counted Redis unavailable
    // for a second (failOpen: a second without a limit).
    const started = Date.now();
    const grants = await buckets.take([{ key: 'ahead', count: 2 }]).catch((error: unknown) => {
      assert.ok(isFerryError(error, 'UPSTREAM_UNAVAILABLE'));
      return error.message;
    });
    assert.deepEqual(grants, [{ granted: 2, waitMs: 0 }]);
    assert.ok(Date.now() - started < 1000);
    assert.equal(Math.round(Number(await redis.hget('ahead', 't'))), 6);
    // The clock learnt since: the next call goes at once.
    assert.deepEqual(await buckets.take([{ key: 'ahead', count: 1 }]), [{ granted: 1, waitMs: 0 }]);
    // Set back again: a deadline later than needed, the call takes as usual.
    shift.ms = 0;
    assert.deepEqual(await buckets.take([{ key: 'ahead', count: 1 }]), [{ granted: 1, waitMs: 0 }]);
    assert.equal(Math.round(Number(await redis.hget('ahead', 't'))), 4);
  } finally {
    redis.disconnect();
    await server.stop();
  }
});
