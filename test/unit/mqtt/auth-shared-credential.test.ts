import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type AuthOptions, DeviceAuthenticator } from '../../../src/mqtt/auth.ts';
import { hashPassword } from '../../../src/mqtt/password.ts';
import { CounterRegistry } from '../../../src/observability/counters.ts';

// Regression: failed logins were limited per (address, username), so a glob credential
// (`sensor-*`, one password for many usernames) gave every new username fresh guesses.

const FLEET = 'fleet-secret';

async function authenticator(extra: Partial<AuthOptions> = {}): Promise<DeviceAuthenticator> {
  const [fleet, boiler] = await Promise.all([hashPassword(FLEET), hashPassword('boiler-secret')]);
  return new DeviceAuthenticator({
    profiles: [
      { name: 'sensor', clientId: 'sensor-*', credentials: [{ username: 'sensor-*', passwordHash: fleet, clientId: '%u' }], acl: { publish: ['devices/%c/#'], subscribe: [] } },
      { name: 'boiler', clientId: '*', credentials: [{ username: 'boiler', passwordHash: boiler, clientId: '*' }], acl: { publish: [], subscribe: [] } },
    ],
    allowAnonymous: false,
    anonymousAcl: { publish: [], subscribe: [] },
    maxConnectionsPerAddress: 1000,
    maxAuthFailures: 10,
    counters: new CounterRegistry(),
    ...extra,
  });
}

async function login(auth: DeviceAuthenticator, username: string, password: string, address: string): Promise<string> {
  const result = await auth.authenticate(username, username, Buffer.from(password), address);
  return result.ok ? 'ok' : result.refusal;
}

test('wrong passwords for a shared credential count together over all the usernames it matches', async () => {
  const auth = await authenticator();
  const attacker = '203.0.113.9';
  const answers: string[] = [];
  for (let i = 0; i < 12; i++) answers.push(await login(auth, `sensor-g${i}`, `guess-${i}`, attacker));
  assert.deepEqual(answers, [...Array(10).fill('bad_credentials'), 'too_many_failures', 'too_many_failures']);
  // The right password is refused while the credential is blocked for that address, whatever the username.
  assert.equal(await login(auth, 'sensor-g99', FLEET, attacker), 'too_many_failures');
  assert.equal(await login(auth, 'sensor-1', FLEET, attacker), 'too_many_failures');
  // Other addresses, and other credentials from the same address, are not blocked.
  assert.equal(await login(auth, 'sensor-1', FLEET, '198.51.100.7'), 'ok');
  assert.equal(await login(auth, 'boiler', 'boiler-secret', attacker), 'ok');
});

test('unknown usernames are still limited one by one', async () => {
  const auth = await authenticator();
  const address = '203.0.113.10';
  for (let i = 0; i < 10; i++) assert.equal(await login(auth, 'nobody', `guess-${i}`, address), 'bad_credentials');
  assert.equal(await login(auth, 'nobody', 'guess-10', address), 'too_many_failures');
  // Another unknown username from the same address, and the shared credential, still get their checks.
  assert.equal(await login(auth, 'nobody-else', 'guess', address), 'bad_credentials');
  assert.equal(await login(auth, 'sensor-1', FLEET, address), 'ok');
});

test('checks under way are bounded per shared credential, not per username', async () => {
  const auth = await authenticator({ loginChecks: { concurrent: 1, queued: 100, perAddress: 100, perUsername: 2 } });
  const answers = await Promise.all(Array.from({ length: 5 }, (_, i) => login(auth, `sensor-p${i}`, `guess-${i}`, `192.0.2.${i}`)));
  assert.deepEqual(answers.toSorted(), ['bad_credentials', 'bad_credentials', 'too_many_attempts', 'too_many_attempts', 'too_many_attempts']);
  // Another credential is not held up by them.
  assert.equal(await login(auth, 'boiler', 'boiler-secret', '192.0.2.1'), 'ok');
});
