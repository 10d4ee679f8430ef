import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { Redis } from 'ioredis';
import { randomName, requireService } from '../harness/services.ts';

test('redis: get/set, pipelined INCRs and pub/sub', { timeout: 30_000 }, async (t) => {
  const url = await requireService('redis');
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  const subscriber = redis.duplicate();
  const key = randomName('ferry:test:');
  const counter = `${key}:counter`;
  t.after(async () => {
    await redis.del(key, counter).catch(() => {});
    await Promise.all([redis.quit(), subscriber.quit()]);
  });
  await Promise.all([redis.connect(), subscriber.connect()]);

  assert.equal(await redis.set(key, 'hello', 'EX', 60), 'OK');
  assert.equal(await redis.get(key), 'hello');

  const pipeline = redis.pipeline();
  for (let i = 0; i < 100; i++) pipeline.incr(counter);
  const results = await pipeline.exec();
  assert.ok(results);
  assert.equal(results.length, 100);
  results.forEach(([err, value], i) => {
    assert.equal(err, null);
    assert.equal(value, i + 1);
  });
  assert.equal(await redis.get(counter), '100');

  const channel = randomName('ferry:test:chan:');
  await subscriber.subscribe(channel);
  const message = once(subscriber, 'message', { signal: t.signal });
  assert.equal(await redis.publish(channel, 'ping'), 1);
  assert.deepEqual(await message, [channel, 'ping']);
  await subscriber.unsubscribe(channel);
});
