import assert from 'node:assert/strict';
import { test } from 'node:test';
import { filterWithin, globMatches, mayPublish, maySubscribe } from '../../../src/mqtt/acl.ts';
import { hashPassword, verifyPassword } from '../../../src/mqtt/password.ts';
import { WindowLimiter } from '../../../src/mqtt/rate-limit.ts';

const device = { clientId: 'sensor-1', username: 'sensor-1', profile: 'sensor', publish: ['devices/%c/#'], subscribe: ['devices/%c/commands/#'] };

test('ACL patterns expand %c and %u and never let a filter reach beyond them', () => {
  assert.equal(mayPublish(device, 'devices/sensor-1/telemetry/t'), true);
  assert.equal(mayPublish(device, 'devices/sensor-2/telemetry/t'), false);
  assert.equal(mayPublish(device, '$SYS/x'), false);
  assert.equal(maySubscribe(device, 'devices/sensor-1/commands/#'), true);
  assert.equal(maySubscribe(device, 'devices/sensor-1/commands/reboot'), true);
  // `a/#` matches `a` itself (MQTT 3.1.1 §4.7.1.2), so the parent level is within the pattern (issue 16, item 8).
  assert.equal(maySubscribe(device, 'devices/sensor-1/commands'), true);
  for (const filter of ['#', '+/#', 'devices/+/commands/#', 'devices/sensor-1/#', '$SYS/#', 'devices/sensor-1', 'devices/sensor-1/command', 'devices/+/commands']) {
    assert.equal(maySubscribe(device, filter), false, filter);
  }
  assert.equal(filterWithin('a/+/c', 'a/+/+'), true);
  assert.equal(filterWithin('a/+/c', 'a/b/c'), false);
  assert.equal(filterWithin('$SYS/#', '$SYS/#'), true);
  assert.equal(filterWithin('$SYS/#', '#'), false);
  assert.equal(filterWithin('a/b', 'a/b/#'), true);
  assert.equal(filterWithin('a/+', 'a/+/#'), true);
  assert.equal(filterWithin('a', 'a/b/#'), false);
  assert.equal(filterWithin('a/b', 'a/b/+'), false);
});

test('globs match whole strings; %c and %u are literal, never wildcards', () => {
  assert.equal(globMatches('sensor-*', 'sensor-17'), true);
  assert.equal(globMatches('sensor-*', 'xsensor-17'), false);
  assert.equal(globMatches('s?', 's1'), true);
  assert.equal(globMatches('a.b', 'axb'), false);
  assert.equal(globMatches('%u', 'anything', { clientId: 'anything', username: '*' }), false);
  assert.equal(globMatches('%u', 'sensor-1', { clientId: 'sensor-1', username: 'sensor-1' }), true);
});

test('passwords are salted scrypt hashes, checked in constant time', async () => {
  const a = await hashPassword('s3cret');
  const b = await hashPassword('s3cret');
  assert.match(a, /^scrypt\$16384\$8\$1\$/);
  assert.notEqual(a, b, 'salted');
  assert.equal(await verifyPassword('s3cret', a), true);
  assert.equal(await verifyPassword('s3cret!', a), false);
  assert.equal(await verifyPassword('s3cret', 'plaintext'), false);
});

test('the window limiter blocks a key at its limit, for its block time, and forgets it after', () => {
  const limiter = new WindowLimiter({ max: 3, windowMs: 1000, blockMs: 5000 });
  assert.equal(limiter.record('k', 0), false);
  assert.equal(limiter.record('k', 100), false);
  assert.equal(limiter.blocked('k', 100), false);
  assert.equal(limiter.record('k', 200), true);
  assert.equal(limiter.blocked('k', 4000), true);
  assert.equal(limiter.blocked('other', 4000), false);
  assert.equal(limiter.blocked('k', 5300), false);
  assert.equal(limiter.record('k', 5300), false);
  assert.equal(limiter.record('j', 0), false);
  assert.equal(limiter.record('j', 1500), false, 'the first event left the window');
});

test('the authenticator limits connection attempts per address and lets anonymous clients in from loopback only', async () => {
  const { DeviceAuthenticator } = await import('../../../src/mqtt/auth.ts');
  const counters = { count: () => {} };
  const auth = new DeviceAuthenticator({
    profiles: [],
    allowAnonymous: 'loopback',
    anonymousAcl: { publish: ['#'], subscribe: ['#'] },
    maxConnectionsPerAddress: 3,
    maxAuthFailures: 10,
    counters,
  });
  assert.deepEqual(
    [1, 2, 3, 4, 5].map(() => auth.admitConnection('10.0.0.9')),
    [true, true, true, false, false],
  );
  assert.equal(auth.admitConnection('10.0.0.10'), true, 'another address is unaffected');
  for (const address of ['127.0.0.1', '::1', '::ffff:127.0.0.1']) assert.equal((await auth.authenticate('dev', undefined, undefined, address)).ok, true, address);
  assert.deepEqual(await auth.authenticate('dev', undefined, undefined, '192.0.2.7'), { ok: false, refusal: 'anonymous_not_allowed' });
});
