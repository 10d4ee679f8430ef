// `ferry reload --admin notaurl` ended in a `TypeError: Invalid URL` stack trace, and `--admin
// http://127.0.0.1:9` said `(TypeError: fetch failed)`: fetch refuses the ports of its "bad port"
// list (9, 6000, 6667, ...) without connecting, so a gateway whose admin server listens on one
// could not be reloaded at all, while the default address said ECONNREFUSED. Now a bad URL is a
// usage error naming the option, and a gateway that cannot be reached is one line naming the
// address and the cause. A gateway that takes the request and never answers is given up on after
// the answer timeout, with one line saying so.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { type AddressInfo, type Socket, createServer } from 'node:net';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { REPO_ROOT, ferry } from '../harness/ferry-process.ts';
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

test('ferry reload to a server that takes the request and never answers: gives up after the answer timeout, one line, exit 1', { timeout: 60_000 }, async () => {
  // A real server that accepts the connection, reads the request and never writes a byte.
  const received: Buffer[] = [];
  const sockets: Socket[] = [];
  const server = createServer((socket) => {
    sockets.push(socket);
    socket.on('data', (chunk: Buffer) => received.push(chunk));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  // The command's own timeout is the drain timeout and a minute, and no option shortens it: the
  // command's function runs in a process of its own with 500 ms, so that its exit is seen too.
  const script = `const { reloadCommand } = await import(${JSON.stringify(pathToFileURL(`${REPO_ROOT}src/cli/reload.ts`).href)});
await reloadCommand({ admin: ${JSON.stringify(base)}, answerTimeoutMs: 500 });`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: REPO_ROOT, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const kill = () => {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) process.kill(-child.pid, 'SIGKILL');
  };
  process.once('exit', kill);
  // Well beyond the 500 ms: a command that hung is killed, and its exit code is then null.
  const limit = setTimeout(kill, 30_000);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  try {
    const [code] = (await once(child, 'close')) as [number | null];
    assert.equal(code, 1, stderr);
    assert.equal(stdout, '');
    assert.equal(
      stderr,
      `ferry: the gateway's admin server at ${base} took the request but gave no answer: no answer within 500 ms (timeout); the config may be applied or not: see the gateway's log\n`,
    );
    assert.match(Buffer.concat(received).toString(), /^POST \/api\/reload HTTP\/1\.1\r\n/, 'the server had the request');
  } finally {
    clearTimeout(limit);
    kill();
    process.off('exit', kill);
    for (const socket of sockets) socket.destroy();
    server.close();
  }
});
