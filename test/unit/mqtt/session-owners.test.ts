import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SessionOwners } from '../../../src/mqtt/session-owners.ts';

test('a session belongs to the username that made it: the same login resumes, another starts clean, an anonymous client is refused', () => {
  const owners = new SessionOwners();
  const [c1, c2, c3, c4] = [{}, {}, {}, {}];
  assert.equal(owners.claim('sensor-1', { username: 'sensor-1' }, c1), 'own');
  assert.equal(owners.claim('sensor-1', { username: 'sensor-1' }, c2), 'own');
  assert.equal(owners.claim('sensor-1', { username: undefined }, c3), 'refuse');
  assert.equal(owners.claim('sensor-1', { username: 'tech' }, c4), 'fresh');
  assert.equal(owners.claim('sensor-1', { username: 'tech' }, c4), 'own');
});

test("anonymous clients share one owner, and a login's claim over an anonymous session starts it clean", () => {
  const owners = new SessionOwners();
  assert.equal(owners.claim('x', { username: undefined }, {}), 'own');
  assert.equal(owners.claim('x', { username: undefined }, {}), 'own');
  assert.equal(owners.claim('x', { username: 'dev' }, {}), 'fresh');
});

test('a session is released only by the connection that claimed it last', () => {
  const owners = new SessionOwners();
  const [old, taker] = [{}, {}];
  owners.claim('sensor-1', { username: 'sensor-1' }, old);
  owners.claim('sensor-1', { username: 'sensor-1' }, taker);
  owners.release('sensor-1', old); // the taken-over connection closing
  assert.equal(owners.claim('sensor-1', { username: undefined }, {}), 'refuse');
  owners.release('sensor-1', taker);
  assert.equal(owners.size, 0);
  assert.equal(owners.claim('sensor-1', { username: undefined }, {}), 'own');
});

test('with saved owners, a session made before a restart still belongs to its login, and a persistent one is saved with its owner', () => {
  const disk = new Map<string, string>([['sensor-1', 'sensor-1']]);
  const saved = { savedOwner: (id: string) => disk.get(id), saveOwner: (id: string, owner: string) => void disk.set(id, owner) };
  const owners = new SessionOwners(saved);
  assert.equal(owners.claim('sensor-1', { username: undefined }, {}), 'refuse');
  const tech = {};
  assert.equal(owners.claim('sensor-1', { username: 'tech' }, tech), 'fresh');
  assert.equal(disk.get('sensor-1'), 'sensor-1', 'nothing is saved until the session is persistent');
  owners.persisted('sensor-1', tech);
  assert.equal(disk.get('sensor-1'), 'tech');
  owners.persisted('sensor-1', {}); // not the connection that claimed it
  assert.equal(disk.get('sensor-1'), 'tech');
});
