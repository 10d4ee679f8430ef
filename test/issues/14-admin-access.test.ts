// The admin server checks who calls it: a token off loopback, no reload from a web page.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { ferry, startFerry } from '../harness/ferry-process.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-admin-');
const TOKEN = 'a-long-admin-token-0123456789';

function tree(admin: string): string {
  const root = tempDir();
  mkdirSync(join(root, 'bridges'));
  writeFileSync(join(root, 'gateway.yaml'), `mqtt: {allowAnonymous: loopback}\nadmin: ${admin}\nbridges: [bridges]\n`);
  return join(root, 'gateway.yaml');
}

test('an admin server reachable from other machines needs a token: ferry validate says so at the line', async () => {
  const out = await ferry(['validate', '--config', tree('{host: 0.0.0.0}')]);
  assert.equal(out.code, 1);
  assert.match(out.stderr, /gateway\.yaml:2:\d+: admin\.host: the admin server on 0\.0\.0\.0 is reachable from other machines: set admin\.token/);
  assert.equal((await ferry(['validate', '--config', tree(`{host: 0.0.0.0, token: "${TOKEN}"}`)])).code, 0);
});

test('with a token, /api/* and /metrics answer 401 without it; health and readiness stay open; reload takes only JSON; the token is never shown', async () => {
  const config = tree(`{host: 127.0.0.1, token: "${TOKEN}"}`);
  const gw = await startFerry(['--config', config, '--data-dir', tempDir()]);
  try {
    const get = (path: string, token?: string) => fetch(`${gw.adminUrl}${path}`, token === undefined ? {} : { headers: { authorization: `Bearer ${token}` } });
    for (const path of ['/api/status', '/metrics']) {
      assert.equal((await get(path)).status, 401, path);
      assert.equal((await get(path, 'wrong-token-wrong-token-xx')).status, 401, path);
      assert.equal((await get(path, TOKEN)).status, 200, path);
    }
    for (const path of ['/healthz', '/readyz']) assert.equal((await get(path)).status, 200, path);

    const reload = (headers: Record<string, string>) =>
      fetch(`${gw.adminUrl}/api/reload`, { method: 'POST', headers, body: headers['content-type'] === 'application/json' ? '{}' : 'a=1' });
    assert.equal((await reload({ 'content-type': 'application/json' })).status, 401, 'no token');
    // What a cross-site form can send: a simple request, refused whatever it carries.
    assert.equal((await reload({ authorization: `Bearer ${TOKEN}`, 'content-type': 'application/x-www-form-urlencoded' })).status, 415);
    assert.equal((await reload({ authorization: `Bearer ${TOKEN}`, 'content-type': 'text/plain' })).status, 415);
    assert.equal((await reload({ authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' })).status, 200);

    // ferry reload finds the token in the config it is given, or in FERRY_ADMIN_TOKEN.
    const viaConfig = await ferry(['reload', '--admin', gw.adminUrl, '--config', config]);
    assert.equal(viaConfig.code, 0, viaConfig.stderr);
    assert.equal((await ferry(['reload', '--admin', gw.adminUrl], { FERRY_ADMIN_TOKEN: TOKEN })).code, 0);
    const without = await ferry(['reload', '--admin', gw.adminUrl]);
    assert.equal(without.code, 1);
    assert.match(without.stderr, /HTTP 401\); no admin token was sent: set FERRY_ADMIN_TOKEN/);

    const status = await (await get('/api/status', TOKEN)).text();
    assert.ok(!status.includes(TOKEN), 'not in /api/status');
    assert.ok(!JSON.stringify(gw.logs).includes(TOKEN), 'not in the log');
  } finally {
    gw.child.kill('SIGTERM');
    await gw.exited;
  }
});
