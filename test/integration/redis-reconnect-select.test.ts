import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Redis } from 'ioredis';
import { isFerryError } from '../../src/core/errors.ts';
import { RedisClients } from '../../src/redis/clients.ts';
import { redisConnectionSchema } from '../../src/redis/connection-config.ts';
import { eventually } from '../harness/eventually.ts';
import { type PrivateRedis, startPrivateRedis } from '../harness/private-redis.ts';

// A connection naming a database (redis://host:port/5) selects it again on every reconnection.
// When the restarted server refuses that SELECT (it now has fewer databases, or its ACL no
// longer allows SELECT), ioredis only reports the error and goes on: the commands that waited
// for the reconnection (offline: wait) ran on database 0, another keyspace than the URL's. They
// must fail as unavailable instead, until the server takes the URL's database again.

/** The keys of database `db`, read by a client of its own. */
async function keysOf(server: PrivateRedis, db: number): Promise<string[]> {
  const admin = new Redis(`${server.url}/${db}`, { maxRetriesPerRequest: 1, lazyConnect: true });
  try {
    await admin.connect();
    return (await admin.keys('*')).sort();
  } finally {
    admin.disconnect();
  }
}

const refusedAsUnavailable = (reason: RegExp) => (error: unknown) => isFerryError(error, 'UPSTREAM_UNAVAILABLE') && error.retryable && reason.test(error.message);

for (const [refusal, restartArgs, reply] of [
  ['a database the restarted server does not have', ['--databases', '4'], /DB index is out of range/],
  ['an ACL that no longer allows SELECT', ['--user', 'default', 'on', 'nopass', '~*', '&*', '+@all', '-select'], /NOPERM/],
] as const) {
  test(`a reconnection whose SELECT is refused (${refusal}) runs no command on database 0; the URL's database is used again once it is served`, { timeout: 60_000 }, async () => {
    const server = await startPrivateRedis();
    const clients = new RedisClients();
    // offline: wait keeps commands sent while the connection is down for the reconnection.
    const lease = clients.acquire(redisConnectionSchema().parse({ url: `${server.url}/5`, offline: 'wait', commandTimeoutMs: 3000 }));
    const { connection } = lease;
    try {
      assert.equal(await connection.run((client) => client.set('before', '1')), 'OK');
      assert.deepEqual(await keysOf(server, 5), ['before']);

      await server.stop();
      const waiting = connection.run((client) => client.set('waited', '1'));
      waiting.catch(() => {});
      await server.start(restartArgs);

      await assert.rejects(waiting, refusedAsUnavailable(/./));
      await assert.rejects(
        connection.run((client) => client.set('after-refusal', '1')),
        refusedAsUnavailable(reply),
      );
      assert.deepEqual(await keysOf(server, 0), [], 'nothing written to database 0');

      // The server takes database 5 again: commands go to it, not to database 0.
      await server.stop();
      await server.start([]);
      await eventually(async () => assert.equal(await connection.run((client) => client.set('back', '1')), 'OK'), { timeoutMs: 15_000 });
      // ('waited' may be there too: ioredis sends a command it timed out once it can.)
      assert.ok((await keysOf(server, 5)).includes('back'));
      assert.deepEqual(await keysOf(server, 0), [], 'nothing written to database 0');
    } finally {
      lease.release();
      await server.stop();
    }
  });
}
