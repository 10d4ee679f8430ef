import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type AuthOptions, DeviceAuthenticator } from '../../../src/mqtt/auth.ts';
import { CounterRegistry } from '../../../src/observability/counters.ts';

// What a login of an earlier run may do under the access of now, without its password: the
// broker checks a will carried over from that run with it (test/integration/broker-state-wills.test.ts).

const HASH = 'scrypt$16384$8$1$c2FsdA$aGFzaA';
const SENSOR_ACL = { publish: ['devices/%c/#'], subscribe: [] };

function authenticator(access: Partial<AuthOptions> = {}): DeviceAuthenticator {
  return new DeviceAuthenticator({
    profiles: [
      { name: 'sensor', clientId: 'sensor-*', credentials: [{ username: 'sensor-*', passwordHash: HASH, clientId: '%u' }], acl: SENSOR_ACL },
      { name: 'camera', clientId: '*', credentials: [{ username: 'cam-1', clientId: '*' }], acl: { publish: ['video/#'], subscribe: [] } },
    ],
    allowAnonymous: false,
    anonymousAcl: { publish: ['public/#'], subscribe: [] },
    maxConnectionsPerAddress: 1000,
    maxAuthFailures: 10,
    counters: new CounterRegistry(),
    ...access,
  });
}

test('a login keeps the identity of the profile it connected with while a credential of that profile still admits it', () => {
  const auth = authenticator();
  assert.deepEqual(auth.standingIdentity('sensor-3', 'sensor-3', 'sensor'), { clientId: 'sensor-3', username: 'sensor-3', profile: 'sensor', ...SENSOR_ACL });
  // A certificate login (no password hash) counts as well.
  assert.equal(auth.standingIdentity('any-id', 'cam-1', 'camera')?.profile, 'camera');
});

test('a login the access no longer admits under that profile and client id has no identity', () => {
  const auth = authenticator();
  assert.equal(auth.standingIdentity('sensor-4', 'sensor-3', 'sensor'), undefined, "the credential's client id is %u");
  assert.equal(auth.standingIdentity('sensor-3', 'sensor-3', 'camera'), undefined, 'another profile');
  assert.equal(auth.standingIdentity('sensor-3', 'sensor-3', undefined), undefined, 'no profile');
  auth.updateAccess({ profiles: [], allowAnonymous: false, anonymousAcl: { publish: [], subscribe: [] } });
  assert.equal(auth.standingIdentity('sensor-3', 'sensor-3', 'sensor'), undefined, 'the profile is gone after a reload');
});

test('an anonymous client has the anonymous ACL while anonymous clients are allowed, from anywhere or loopback only', () => {
  assert.equal(authenticator().standingIdentity('x', undefined, undefined), undefined);
  for (const allowAnonymous of [true, 'loopback'] as const) {
    assert.deepEqual(authenticator({ allowAnonymous }).standingIdentity('x', undefined, undefined), {
      clientId: 'x',
      username: undefined,
      profile: undefined,
      publish: ['public/#'],
      subscribe: [],
    });
  }
});
