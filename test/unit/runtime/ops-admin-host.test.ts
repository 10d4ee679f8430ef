// The tokenless admin server on loopback answers only to loopback Host names (no DNS rebinding).
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { test } from 'node:test';
import { AdminServer } from '../../../src/runtime/admin-server.ts';
import type { ReloadResult } from '../../../src/runtime/reload-plan.ts';

function call(port: number, path: string, host: string, headers: Record<string, string> = {}, method = 'GET', address = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: address, port, path, method, headers: { host, ...headers } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end(method === 'POST' ? '{}' : undefined);
  });
}

test('admin server without a token: a foreign Host gets 421; loopback names, addresses and the configured host pass', async () => {
  let reloads = 0;
  const reload = async (): Promise<ReloadResult> => {
    reloads++;
    return { ok: true, applied: { added: [], removed: [], changed: [], unchanged: [], devices: false, databases: [], tls: false }, warnings: [] };
  };
  const admin = await AdminServer.start('127.0.0.1', 0, { ready: () => ({ ready: true }), status: () => ({}), reload });
  try {
    const json = { 'content-type': 'application/json' };
    assert.equal(await call(admin.port, '/api/status', 'attacker.example:9180'), 421);
    assert.equal(await call(admin.port, '/api/reload', 'attacker.example:9180', json, 'POST'), 421);
    assert.equal(await call(admin.port, '/api/status', 'attacker.example'), 421);
    assert.equal(await call(admin.port, '/api/status', '127.0.0.1.attacker.example'), 421);
    assert.equal(reloads, 0, 'the rebound page did not reload');
    for (const host of [`localhost:${admin.port}`, 'LOCALHOST', `127.0.0.1:${admin.port}`, '127.1.2.3:80', `[::1]:${admin.port}`, '[::1]'])
      assert.equal(await call(admin.port, '/api/status', host), 200, host);
    assert.equal(await call(admin.port, '/api/reload', `127.0.0.1:${admin.port}`, json, 'POST'), 200);
    assert.equal(reloads, 1);
  } finally {
    await admin.close();
  }

  const own = await AdminServer.start('127.0.0.2', 0, { ready: () => ({ ready: true }), status: () => ({}) });
  try {
    assert.equal(await call(own.port, '/api/status', `127.0.0.2:${own.port}`, {}, 'GET', '127.0.0.2'), 200);
  } finally {
    await own.close();
  }
});

test('admin server with a token: the Host is not checked, the token is', async () => {
  const token = 'a-token-of-16-chars-or-more';
  const admin = await AdminServer.start('127.0.0.1', 0, { ready: () => ({ ready: true }), status: () => ({}) }, { token });
  try {
    assert.equal(await call(admin.port, '/api/status', 'gateway.example:9180', { authorization: `Bearer ${token}` }), 200);
    assert.equal(await call(admin.port, '/api/status', 'gateway.example:9180'), 401);
  } finally {
    await admin.close();
  }
});
