// `ferry reload --admin notaurl` ended in a `TypeError: Invalid URL` stack trace, and `--admin
// http://127.0.0.1:9` said `(TypeError: fetch failed)`: fetch refuses the ports of its "bad port"
// list (9, 6000, 6667, ...) without connecting, so a gateway whose admin server listens on one
// could not be reloaded at all, while the default address said ECONNREFUSED. Now a bad URL is a
// usage error naming the option, and a gateway that cannot be reached is one line naming the
// address and the cause.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { type AddressInfo, createServer } from 'node:net';
import { test } from 'node:test';
import { ferry } from '../harness/ferry-process.ts';
import { freePorts } from '../harness/net.ts';

const hint = '; is `ferry run` running there\\? Pass --admin URL or --config FILE\\n$';

for (const admin of ['notaurl', 'localhost:9180', 'ftp://127.0.0.1:9180']) {
  test(`ferry reload --admin ${admin}: a usage error naming --admin, no stack trace`, { timeout: 30_000 }, async () => {
    const result = await ferry(['reload', '--admin', admin]);
    assert.equal(result.code, 1);
    assert.equal(result.stdout, '');
    assert.match(
      result.stderr,
      new RegExp(`^error: option '--admin <url>' argument '${admin}' is invalid\\. expected the URL of the admin server, like http://127\\.0\\.0\\.1:9180`),
    );
    assert.doesNotMatch(result.stderr, /^\s+at /m);
  });
}

test('ferry reload to a port nothing listens on: one line naming the address and ECONNREFUSED, on a port of fetch\'s "bad port" list too', { timeout: 30_000 }, async () => {
  const [free] = await freePorts(1);
  // Port 9 (discard) is on fetch's list: it never even tried to connect there.
  for (const base of [`http://127.0.0.1:${free}`, 'http://127.0.0.1:9']) {
    const result = await ferry(['reload', '--admin', base]);
    assert.equal(result.code, 1);
    assert.equal(result.stdout, '');
    assert.match(
      result.stderr,
      new RegExp(`^ferry: cannot reach the gateway's admin server at ${base.replaceAll('.', '\\.')}: connection refused \\(ECONNREFUSED\\): nothing listens on that port${hint}`),
    );
  }
});

test('ferry reload to a host name that does not resolve: one line naming the DNS failure', { timeout: 30_000 }, async () => {
  const result = await ferry(['reload', '--admin', 'http://ferry-gateway.invalid:9180']);
  assert.equal(result.code, 1);
  assert.match(
    result.stderr,
    new RegExp(
      `^ferry: cannot reach the gateway's admin server at http://ferry-gateway\\.invalid:9180: (host not found \\(ENOTFOUND|DNS lookup failed \\(EAI_AGAIN)[^\\n]*${hint}`,
    ),
  );
});

test('ferry reload to a server that takes the request and closes the connection: one line saying the config may be applied or not', { timeout: 30_000 }, async () => {
  // A gateway that died while it reloaded: it read the request, and its connection ends unanswered.
  const server = createServer((socket) => socket.once('data', () => socket.destroy()));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    const result = await ferry(['reload', '--admin', base]);
    assert.equal(result.code, 1);
    assert.equal(
      result.stderr,
      `ferry: the gateway's admin server at ${base} took the request but gave no answer: the connection was reset (ECONNRESET); the config may be applied or not: see the gateway's log\n`,
    );
  } finally {
    server.close();
  }
});
