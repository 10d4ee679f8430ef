import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { Subject } from 'rxjs';
import { type Delivery, createDelivery } from '../../src/core/delivery.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import { isFerryError } from '../../src/core/errors.ts';
import { compileTemplate } from '../../src/core/template.ts';
import { createTransformContext } from '../../src/core/transform.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { RedisClients } from '../../src/redis/clients.ts';
import { lookupStep } from '../../src/redis/lookup.ts';
import { type LookupConfig, lookupSchema } from '../../src/redis/lookup-config.ts';
import { tcpProxy } from '../harness/cuttable-proxy.ts';
import { eventually } from '../harness/eventually.ts';
import { capturedEntries, type LoggedLine } from '../harness/log-lines.ts';
import { randomName, requireService } from '../harness/services.ts';

const prefixes: string[] = [];
let admin: Redis | undefined;
async function redis(): Promise<Redis> {
  admin ??= new Redis(await requireService('redis'), { maxRetriesPerRequest: 1 });
  return admin;
}
after(async () => {
  const r = await redis();
  for (const prefix of prefixes) {
    const keys = await r.keys(`${prefix}*`);
    if (keys.length > 0) await r.del(...keys);
  }
  await r.quit();
});

function prefix(): string {
  const p = randomName('ferry:test:lookup:');
  prefixes.push(p);
  return p;
}

/** One lookup step over a Subject: what passed (payloads), what was refused (with reasons) and how each delivery settled. */
function step(config: Record<string, unknown>) {
  const parsed = lookupSchema().parse(config) as LookupConfig;
  const counters = new CounterRegistry();
  const { logger, entries: logs } = capturedEntries<LoggedLine>('info');
  const clients = new RedisClients();
  const passed: string[] = [];
  const rejected: { payload: string; reason: string; label: string }[] = [];
  const settled = new Map<string, string>();
  const context = createTransformContext((delivery, original, reason, label) => {
    rejected.push({ payload: Buffer.from(original.payload).toString(), reason, label });
    delivery.ack();
  });
  const template = compileTemplate(parsed.key);
  const filters = ['devices/+/alarms'];
  const input = new Subject<Delivery>();
  const subscription = input
    .pipe(lookupStep({ bridge: 'test', config: parsed, context, keyOf: (d) => template.render({ envelope: d.envelope, filters }), logger, counters, clients }))
    .subscribe((d) => passed.push(Buffer.from(d.envelope.payload).toString()));
  return {
    passed,
    rejected,
    settled,
    counters,
    logs,
    clients,
    send(device: string, payload: string) {
      const envelope = createEnvelope({ topic: `devices/${device}/alarms`, payload, origin: { source: 'test', clientId: device } });
      input.next(createDelivery(envelope, { onAck: () => settled.set(payload, 'ack'), onNack: (e) => settled.set(payload, `nack: ${e.message}`) }));
    },
    stop: () => subscription.unsubscribe(),
  };
}

test('lookup writes the value Redis holds for the key into the payload, in order; misses pass unchanged or take the default', { timeout: 30_000 }, async () => {
  const url = await requireService('redis');
  const p = prefix();
  await (await redis()).mset(`${p}site:pump-7`, 'plant-south/pumphouse', `${p}site:sensor-1`, 'plant-north/line-1');
  const s = step({ redis: url, key: `${p}site:\${1}`, field: 'meta.site' });
  s.send('pump-7', '{"n":1,"meta":{"x":1}}');
  s.send('nobody', '{"n":2}');
  s.send('sensor-1', '{"n":3}');
  s.send('pump-7', '{"n":4}');
  await eventually(() => assert.equal(s.passed.length, 4));
  assert.deepEqual(s.passed, [
    '{"n":1,"meta":{"x":1,"site":"plant-south/pumphouse"}}',
    '{"n":2}',
    '{"n":3,"meta":{"site":"plant-north/line-1"}}',
    '{"n":4,"meta":{"site":"plant-south/pumphouse"}}',
  ]);
  assert.equal(s.counters.get('lookup.hits{bridge=test}'), 3);
  assert.equal(s.counters.get('lookup.misses{bridge=test}'), 1);
  s.stop();
  assert.equal(s.clients.size, 0, 'the connection is released when the step stops');

  const withDefault = step({ redis: url, key: `${p}site:\${1}`, field: 'site', default: 'unknown' });
  withDefault.send('nobody', '{"n":5}');
  await eventually(() => assert.deepEqual(withDefault.passed, ['{"n":5,"site":"unknown"}']));
  withDefault.stop();
});

test('lookup reads hashes and JSON values; refuses a miss with onMiss: reject and payloads that are not JSON objects', { timeout: 30_000 }, async () => {
  const url = await requireService('redis');
  const p = prefix();
  await (await redis()).hset(`${p}device:pump-7`, { site: '{"plant":"south","line":2}', broken: '{' });
  const s = step({ redis: url, key: `${p}device:\${1}`, hashField: 'site', as: 'json', field: 'site', onMiss: 'reject' });
  s.send('pump-7', '{"n":1}');
  s.send('nobody', '{"n":2}');
  s.send('pump-7', '[1,2]');
  s.send('pump-7', 'not json');
  await eventually(() => assert.equal(s.passed.length + s.rejected.length, 4));
  assert.deepEqual(s.passed, ['{"n":1,"site":{"plant":"south","line":2}}']);
  assert.deepEqual(s.rejected.map((r) => [r.payload, r.label]).sort(), [
    ['[1,2]', 'not_object'],
    ['not json', 'not_json'],
    ['{"n":2}', 'failed'],
  ]);
  assert.match(s.rejected.find((r) => r.payload === '{"n":2}')?.reason ?? '', /^lookup: no value in Redis for key '.*device:nobody'$/);
  s.stop();

  const broken = step({ redis: url, key: `${p}device:\${1}`, hashField: 'broken', as: 'json', field: 'site' });
  broken.send('pump-7', '{"n":3}');
  await eventually(() => assert.equal(broken.rejected.length, 1));
  assert.match(broken.rejected[0]?.reason ?? '', /^lookup: the value of key '.*device:pump-7' is not JSON/);
  broken.stop();
});

test('lookup caches values (and misses) for cacheMs; cacheMs: 0 reads Redis for every message', { timeout: 30_000 }, async () => {
  const url = await requireService('redis');
  const p = prefix();
  const r = await redis();
  await r.set(`${p}site:pump-7`, 'old');
  const cached = step({ redis: url, key: `${p}site:\${1}`, field: 'site', cacheMs: 600_000 });
  const fresh = step({ redis: url, key: `${p}site:\${1}`, field: 'site', cacheMs: 0 });
  cached.send('pump-7', '{"n":1}');
  fresh.send('pump-7', '{"n":1}');
  await eventually(() => assert.equal(cached.passed.length + fresh.passed.length, 2));
  await r.set(`${p}site:pump-7`, 'new');
  cached.send('pump-7', '{"n":2}');
  assert.deepEqual(cached.passed, ['{"n":1,"site":"old"}', '{"n":2,"site":"old"}'], 'a cached value passes at once, without Redis');
  fresh.send('pump-7', '{"n":2}');
  await eventually(() => assert.deepEqual(fresh.passed, ['{"n":1,"site":"old"}', '{"n":2,"site":"new"}']));
  cached.stop();
  fresh.stop();
});

test('Redis down: hold keeps messages unacknowledged until it is back, pass stores them without the field (counted), reject dead-letters them; nothing is dropped', {
  timeout: 60_000,
}, async () => {
  const url = new URL(await requireService('redis'));
  const proxy = await tcpProxy({ host: url.hostname, port: Number(url.port || 6379) });
  const p = prefix();
  await (await redis()).set(`${p}site:pump-7`, 'south');
  const via = `redis://127.0.0.1:${proxy.port}`;
  const config = { redis: via, key: `${p}site:\${1}`, field: 'site', cacheMs: 0 };
  const hold = step({ ...config, maxWaiting: 2 });
  const pass = step({ ...config, onUnavailable: 'pass' });
  const reject = step({ ...config, onUnavailable: 'reject' });
  try {
    for (const s of [hold, pass, reject]) s.send('pump-7', '{"n":0}');
    await eventually(() => assert.equal(hold.passed.length + pass.passed.length + reject.passed.length, 3));
    await proxy.cut();
    for (const s of [hold, pass, reject]) {
      s.send('pump-7', '{"n":1}');
      s.send('pump-7', '{"n":2}');
    }
    hold.send('pump-7', '{"n":3}');
    assert.match(hold.settled.get('{"n":3}') ?? '', /^nack: lookup of bridge 'test': 2 messages already waiting for Redis \(maxWaiting\)$/);
    await eventually(() => {
      assert.deepEqual(pass.passed, ['{"n":0,"site":"south"}', '{"n":1}', '{"n":2}']);
      assert.deepEqual(
        reject.rejected.map((r) => r.payload),
        ['{"n":1}', '{"n":2}'],
      );
    });
    assert.equal(pass.counters.get('lookup.unavailable{bridge=test}'), 2);
    assert.match(reject.rejected[0]?.reason ?? '', /^lookup: Redis unavailable: /);
    assert.ok(hold.logs.some((l) => l.level === 40 && /holding messages unacknowledged until it is back/.test(l.msg)));
    assert.deepEqual(hold.passed, ['{"n":0,"site":"south"}'], 'held while Redis is down');
    assert.equal(hold.settled.has('{"n":1}'), false);
    await proxy.restore();
    await eventually(() => assert.deepEqual(hold.passed, ['{"n":0,"site":"south"}', '{"n":1,"site":"south"}', '{"n":2,"site":"south"}']), { timeoutMs: 20_000 });
  } finally {
    for (const s of [hold, pass, reject]) s.stop();
    await proxy.close();
  }
});

test('a key Redis refuses to read (WRONGTYPE) refuses only its messages (failed); the others pass, and it is no outage', { timeout: 30_000 }, async () => {
  const url = await requireService('redis');
  const p = prefix();
  const r = await redis();
  await r.hset(`${p}device:good`, { site: 'south' });
  await r.set(`${p}device:bad`, 'a string, not a hash');
  const s = step({ redis: url, key: `${p}device:\${1}`, hashField: 'site', field: 'site', cacheMs: 0 });
  s.send('good', '{"n":1}');
  s.send('bad', '{"n":2}');
  s.send('good', '{"n":3}');
  await eventually(() => assert.equal(s.passed.length + s.rejected.length, 3));
  assert.deepEqual(s.passed, ['{"n":1,"site":"south"}', '{"n":3,"site":"south"}']);
  assert.deepEqual(s.rejected, [
    { payload: '{"n":2}', reason: `lookup: key '${p}device:bad': WRONGTYPE Operation against a key holding the wrong kind of value`, label: 'failed' },
  ]);
  assert.deepEqual(
    s.logs.filter((l) => l.level >= 40),
    [],
    'no outage warning',
  );
  s.stop();
});

test('a key the ACL forbids fails a whole MGET: each key is read alone, and only the forbidden one is refused', { timeout: 30_000 }, async () => {
  const url = new URL(await requireService('redis'));
  const p = prefix();
  const r = await redis();
  await r.set(`${p}ok:pump-7`, 'south');
  const user = randomName('ferry-test-lookup-');
  await r.call('ACL', 'SETUSER', user, 'on', '>secret', `~${p}ok:*`, '+@all');
  try {
    url.username = user;
    url.password = 'secret';
    const s = step({ redis: url.toString(), key: `${p}\${1}`, field: 'site', onUnavailable: 'pass', cacheMs: 0 });
    s.send('ok:pump-7', '{"n":1}');
    s.send('secret', '{"n":2}');
    s.send('ok:pump-7', '{"n":3}');
    await eventually(() => assert.equal(s.passed.length + s.rejected.length, 3));
    assert.deepEqual(s.passed, ['{"n":1,"site":"south"}', '{"n":3,"site":"south"}']);
    assert.deepEqual(
      s.rejected.map((x) => [x.payload, x.label]),
      [['{"n":2}', 'failed']],
    );
    assert.match(s.rejected[0]?.reason ?? '', new RegExp(`^lookup: key '${p}secret': NOPERM `));
    assert.equal(s.counters.get('lookup.unavailable{bridge=test}'), 0);
    s.stop();
  } finally {
    await r.call('ACL', 'DELUSER', user);
  }
});

test('lookup writes big integers of the payload and of a JSON value back as they came', { timeout: 30_000 }, async () => {
  const url = await requireService('redis');
  const p = prefix();
  await (await redis()).set(`${p}device:pump-7`, '{"serial":18446744073709551615,"gain":1.0}');
  const s = step({ redis: url, key: `${p}device:\${1}`, field: 'device', as: 'json' });
  s.send('pump-7', '{"ts_ns":1733000000123456789,"celsius":21.5}');
  await eventually(() => assert.equal(s.passed.length, 1));
  assert.deepEqual(s.passed, ['{"ts_ns":1733000000123456789,"celsius":21.5,"device":{"serial":18446744073709551615,"gain":1.0}}']);
  s.stop();
});

test('a connection name that resolves to nothing fails the stream (CONFIG_INVALID) instead of holding every message', { timeout: 30_000 }, async () => {
  const parsed = lookupSchema().parse({ redis: 'sites', key: 'site:${1}', field: 'site' }) as LookupConfig;
  const context = createTransformContext((delivery) => delivery.ack());
  const input = new Subject<Delivery>();
  const failed = new Promise<unknown>((resolve) => {
    input
      .pipe(lookupStep({ bridge: 'test', config: parsed, context, keyOf: () => 'site:x', logger: pino({ level: 'silent' }), counters: new CounterRegistry() }))
      .subscribe({ error: resolve });
  });
  const settled: string[] = [];
  input.next(createDelivery(createEnvelope({ topic: 't', payload: '{}', origin: { source: 'test', clientId: 'c' } }), { onAck() {}, onNack: (e) => settled.push(e.message) }));
  const error = await failed;
  assert.ok(isFerryError(error, 'CONFIG_INVALID'), String(error));
  assert.match((error as Error).message, /no Redis connection named 'sites'/);
  assert.equal(settled.length, 1, 'the held message is given back');
});
