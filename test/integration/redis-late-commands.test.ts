import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, connect as netConnect, type Socket } from 'node:net';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { Subject } from 'rxjs';
import { type Delivery, createDelivery } from '../../src/core/delivery.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import { isFerryError } from '../../src/core/errors.ts';
import { RedisClients, RedisConnection } from '../../src/redis/clients.ts';
import { redisConnectionSchema } from '../../src/redis/connection-config.ts';
import { redisTools } from '../../src/redis/handler-tools.ts';
import { rateLimitSchema } from '../../src/redis/rate-limit-config.ts';
import { rateLimit } from '../../src/redis/rate-limit.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { RedisTokenBuckets } from '../../src/redis/token-buckets.ts';
import { tcpProxy } from '../harness/cuttable-proxy.ts';
import { eventually } from '../harness/eventually.ts';
import { capturedEntries, type LoggedLine } from '../harness/log-lines.ts';
import { startPrivateRedis } from '../harness/private-redis.ts';

// A command the caller was told had failed (it timed out) must not be run later by Ferry's own
// doing: ioredis keeps such a command and writes it once a connection is ready, or writes it
// again after a reconnection. A Redis that is slow (DEBUG SLEEP on another connection, on a
// private server: the shared one is never stalled) still runs what was written to it; the token
// script then takes nothing once its caller gave up.

const timedOut = (error: unknown) => isFerryError(error, 'UPSTREAM_UNAVAILABLE') && /timed out/.test(error.message);

/** Token buckets of 10 tokens, 0.01 a second, whose scripts run on `connection`; a take waits `timeoutMs`. */
function bucketsOn(connection: RedisConnection, timeoutMs: number, commandTimeoutMs?: number): RedisTokenBuckets {
  return new RedisTokenBuckets(
    { evalsha: (...args) => connection.run((c) => c.evalsha(...args)), eval: (...args) => connection.run((c) => c.eval(...args)) },
    { messagesPerSecond: 0.01, burst: 10 },
    timeoutMs,
    commandTimeoutMs,
  );
}

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
  const buckets = bucketsOn(connection, 300);
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

/**
 * A TCP proxy that holds what the client writes for `delayMs` before passing it on, in order:
 * a slow link towards Redis, which a server cannot be made to produce on its own.
 */
async function slowLink(target: { host: string; port: number }) {
  const sockets = new Set<Socket>();
  const link = { delayMs: 0, port: 0, close: async () => {} };
  const server = createServer((client) => {
    const upstream = netConnect(target.port, target.host);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    let last = 0;
    client.on('data', (chunk) => {
      // Never before what was written earlier, even when the delay shrinks.
      const at = Math.max(last, Date.now() + link.delayMs);
      last = at;
      setTimeout(() => upstream.write(chunk), at - Date.now());
    });
    upstream.pipe(client);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  link.port = (server.address() as { port: number }).port;
  link.close = async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return link;
}

test('a token take sent again as EVAL after NOSCRIPT gets its own command time: a slow link does not make the limiter refuse it', { timeout: 30_000 }, async () => {
  const server = await startPrivateRedis();
  const link = await slowLink({ host: '127.0.0.1', port: server.port });
  const admin = new Redis(server.url, { maxRetriesPerRequest: 1 });
  const clients = new RedisClients();
  const { logger, entries: logs } = capturedEntries<LoggedLine>('info');
  const counters = new CounterRegistry();
  const input = new Subject<Delivery>();
  const passed: string[] = [];
  const config = {
    ...rateLimitSchema().parse({ redis: 'main', key: 'one', messagesPerSecond: 0.01, burst: 10, leaseMs: 0, failOpen: false, timeoutMs: 1000 }),
    connection: redisConnectionSchema().parse({ url: `redis://127.0.0.1:${link.port}`, commandTimeoutMs: 300 }),
  };
  const subscription = input
    .pipe(rateLimit({ bridge: 'test', config, keyOf: () => 'one', reject: (d) => d.ack(), logger, counters, clients }))
    .subscribe((d) => passed.push(Buffer.from(d.envelope.payload).toString()));
  const send = (payload: string) => input.next(createDelivery(createEnvelope({ topic: 't', payload, origin: { source: 'test' } }), { onAck: () => {}, onNack: () => {} }));
  try {
    // The first answers, over a quick link, make Redis' clock known.
    send('m0');
    await eventually(() => assert.deepEqual(passed, ['m0']));
    send('m1');
    await eventually(() => assert.deepEqual(passed, ['m0', 'm1']));
    await admin.call('SCRIPT', 'FLUSH');
    // 200 ms towards Redis: EVALSHA is answered NOSCRIPT after 200 ms, and the EVAL then sent
    // runs 400 ms after the call began: within the limiter's 1000 ms and its own 300 ms.
    link.delayMs = 200;
    const sent = Date.now();
    send('m2');
    await eventually(() => assert.deepEqual(passed, ['m0', 'm1', 'm2']), { timeoutMs: 5000 });
    assert.ok(Date.now() - sent < 900, `passed after ${Date.now() - sent} ms, not after a retry`);
    assert.deepEqual(
      logs.filter((l) => l.level >= 40).map((l) => l.msg),
      [],
      'Redis was not counted as unavailable',
    );
    assert.equal(Math.round(Number(await admin.hget('ferry:ratelimit:test:one', 't'))), 7);
  } finally {
    subscription.unsubscribe();
    admin.disconnect();
    await link.close();
    await server.stop();
  }
});

test('a key asked alone again after Redis refused another key of its call takes no tokens once the take gave up', { timeout: 30_000 }, async () => {
  const server = await startPrivateRedis(['--enable-debug-command', 'yes']);
  const admin = new Redis(server.url, { maxRetriesPerRequest: 1 });
  await admin.call('ACL', 'SETUSER', 'limited', 'on', '>secret', '~ok-*', '+@all');
  const url = new URL(server.url);
  url.username = 'limited';
  url.password = 'secret';
  const connection = new RedisConnection(redisConnectionSchema().parse({ url: url.toString(), commandTimeoutMs: 2000 }));
  const buckets = bucketsOn(connection, 200, 2000);
  try {
    assert.deepEqual(await buckets.take([{ key: 'ok-1', count: 0 }]), [{ granted: 0, waitMs: 0 }]);
    assert.deepEqual(await buckets.take([{ key: 'ok-1', count: 0 }]), [{ granted: 0, waitMs: 0 }]);

    // Redis busy for longer than the take waits (200 ms), not for longer than a command may take
    // (2000 ms): the call's NOPERM comes after the take gave up, and each key is then asked alone.
    const stall = admin.call('DEBUG', 'SLEEP', '0.6');
    await sleep(50);
    await assert.rejects(
      buckets.take([
        { key: 'ok-1', count: 10 },
        { key: 'secret-1', count: 1 },
      ]),
      (error: unknown) => isFerryError(error, 'UPSTREAM_UNAVAILABLE'),
    );
    await stall;
    assert.equal(Number(await admin.hget('ok-1', 't')), 10, 'the key asked alone after the take gave up took nothing');
  } finally {
    connection.close();
    admin.disconnect();
    await server.stop();
  }
});
