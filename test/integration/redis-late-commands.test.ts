import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { isFerryError } from '../../src/core/errors.ts';
import { RedisClients, RedisConnection } from '../../src/redis/clients.ts';
import { redisConnectionSchema } from '../../src/redis/connection-config.ts';
import { redisTools } from '../../src/redis/handler-tools.ts';
import { RedisTokenBuckets } from '../../src/redis/token-buckets.ts';
import { tcpProxy } from '../harness/cuttable-proxy.ts';
import { eventually } from '../harness/eventually.ts';
import { startPrivateRedis } from '../harness/private-redis.ts';

// A command the caller was told had failed (it timed out) must not be run later by Ferry's own
// doing: ioredis keeps such a command and writes it once a connection is ready, or writes it
// again after a reconnection. A Redis that is slow (DEBUG SLEEP on another connection, on a
// private server: the shared one is never stalled) still runs what was written to it; the token
// script then takes nothing once its caller gave up.

const timedOut = (error: unknown) => isFerryError(error, 'UPSTREAM_UNAVAILABLE') && /timed out/.test(error.message);

test('a command that timed out waiting for the reconnection (offline: wait) is not sent once Redis is back', { timeout: 30_000 }, async () => {
  const server = await startPrivateRedis();
  const clients = new RedisClients();
  const lease = clients.acquire(redisConnectionSchema().parse({ url: server.url, offline: 'wait', commandTimeoutMs: 300 }));
  const tools = redisTools('main', lease.connection);
  try {
    assert.equal(await tools.set('before', '1'), true);
    await server.stop();
    await assert.rejects(tools.incr('counter'), timedOut);
    await server.start();
    await eventually(async () => assert.equal(await tools.set('after', '1'), true), { timeoutMs: 10_000 });
    const admin = new Redis(server.url, { maxRetriesPerRequest: 1 });
    try {
      assert.equal(await admin.get('counter'), null, 'the INCR that timed out did not run on the restarted server');
    } finally {
      admin.disconnect();
    }
  } finally {
    lease.release();
    await server.stop();
  }
});

test('a command in flight when the connection closed is not written again after the reconnection once it timed out', { timeout: 30_000 }, async () => {
  const server = await startPrivateRedis(['--enable-debug-command', 'yes']);
  const proxy = await tcpProxy({ host: '127.0.0.1', port: server.port });
  const admin = new Redis(server.url, { maxRetriesPerRequest: 1 });
  const connection = new RedisConnection(redisConnectionSchema().parse({ url: `redis://127.0.0.1:${proxy.port}`, offline: 'wait', commandTimeoutMs: 300 }));
  const tools = redisTools('main', connection);
  try {
    assert.equal(await tools.get('warm'), undefined);
    const stall = admin.call('DEBUG', 'SLEEP', '1.5');
    await sleep(50);
    // Written while Redis sleeps: it times out, then the connection is cut. Redis still runs it
    // when it wakes (nothing can take back what it received); ioredis would send it once more.
    await assert.rejects(tools.incr('counter'), timedOut);
    await proxy.cut();
    await proxy.restore();
    await stall;
    await eventually(async () => assert.equal(await tools.get('warm'), undefined), { timeoutMs: 10_000 });
    assert.equal(await admin.get('counter'), '1', 'the INCR ran once, when Redis received it, and was not sent again');
  } finally {
    connection.close();
    admin.disconnect();
    await proxy.close();
    await server.stop();
  }
});

test('a token take that Redis runs after its caller gave up takes no tokens; one within its time does', { timeout: 30_000 }, async () => {
  const server = await startPrivateRedis(['--enable-debug-command', 'yes']);
  const admin = new Redis(server.url, { maxRetriesPerRequest: 1 });
  const connection = new RedisConnection(redisConnectionSchema().parse({ url: server.url, commandTimeoutMs: 300 }));
  const buckets = new RedisTokenBuckets(
    { evalsha: (...args) => connection.run((c) => c.evalsha(...args)), eval: (...args) => connection.run((c) => c.eval(...args)) },
    { messagesPerSecond: 0.01, burst: 10 },
    300,
  );
  try {
    // The first answers make Redis' clock known.
    assert.deepEqual(await buckets.take([{ key: 'bucket', count: 0 }]), [{ granted: 0, waitMs: 0 }]);
    assert.deepEqual(await buckets.take([{ key: 'other', count: 0 }]), [{ granted: 0, waitMs: 0 }]);

    // Redis busy for longer than the caller waits: the call reaches it late.
    const stall = admin.call('DEBUG', 'SLEEP', '1');
    await sleep(50);
    await assert.rejects(buckets.take([{ key: 'bucket', count: 10 }]), timedOut);
    await stall;
    await sleep(50);
    assert.equal(Number(await admin.hget('bucket', 't')), 10, 'the late call took nothing');
    assert.deepEqual(await buckets.take([{ key: 'bucket', count: 10 }]), [{ granted: 10, waitMs: 0 }]);

    // Busy for less than the caller waits: the call takes as usual.
    const short = admin.call('DEBUG', 'SLEEP', '0.1');
    await sleep(20);
    assert.deepEqual(await buckets.take([{ key: 'other', count: 4 }]), [{ granted: 4, waitMs: 0 }]);
    await short;
  } finally {
    connection.close();
    admin.disconnect();
    await server.stop();
  }
});
