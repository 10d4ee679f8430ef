// The admin server bounds what a caller without the token can hold: sockets per address and in
// all, the time to a request's head and to a whole request; its answers are never sniffed.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { type Socket, connect } from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { eventually } from '../harness/eventually.ts';
import { type RunningFerry, startFerry } from '../harness/ferry-process.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-admin-sockets-');
const TOKEN = 'admin-sockets-token-0123456789';

let gw: RunningFerry;
let port: number;

before(async () => {
  const root = tempDir();
  mkdirSync(join(root, 'bridges'));
  writeFileSync(join(root, 'gateway.yaml'), `mqtt: {allowAnonymous: loopback}\nadmin: {host: 127.0.0.1, token: "${TOKEN}"}\nbridges: [bridges]\n`);
  gw = await startFerry(['--config', join(root, 'gateway.yaml'), '--data-dir', tempDir()]);
  port = Number(new URL(gw.adminUrl).port);
});

after(async () => {
  gw.child.kill('SIGTERM');
  await gw.exited;
});

interface Held {
  readonly socket: Socket;
  /** Resolves with the milliseconds from connect to close. */
  readonly closed: Promise<number>;
  isOpen(): boolean;
}

/** A socket to the admin server from a loopback address of its own, open once it resolves. */
function open(localAddress: string): Promise<Held> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const socket = connect({ host: '127.0.0.1', port, localAddress });
    socket.on('data', () => {});
    let open = true;
    const closed = new Promise<number>((done) =>
      socket.once('close', () => {
        open = false;
        done(Date.now() - started);
      }),
    );
    socket.once('error', () => {});
    socket.once('connect', () => resolve({ socket, closed, isOpen: () => open }));
    socket.once('close', () => reject(new Error('closed before connecting')));
  });
}

/** Whether `held` closes within `ms`. */
const closesWithin = (held: Held, ms: number) => Promise.race([held.closed.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);

/** The milliseconds from connect to close of `held`, or Infinity when still open `limitMs` after the connect. */
const closedAfter = (held: Held, limitMs: number) => Promise.race([held.closed, new Promise<number>((r) => setTimeout(() => r(Number.POSITIVE_INFINITY), limitMs))]);

function healthz(localAddress: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/healthz', localAddress, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

test('an address holds at most 32 sockets on the admin server, all addresses 256: one more is closed at once, other addresses are still answered', async () => {
  const held: Held[] = [];
  try {
    for (let i = 0; i < 32; i++) held.push(await open('127.0.0.1'));
    const over = await open('127.0.0.1');
    assert.ok(await closesWithin(over, 2000), 'the 33rd socket of one address is closed');
    assert.ok(
      held.every((h) => h.isOpen()),
      'the first 32 stay open',
    );
    assert.equal(await healthz('127.0.0.2'), 200, 'another address is answered');

    // 256 in all, from eight addresses: a ninth address gets no socket either.
    for (let a = 3; a <= 9; a++) for (let i = 0; i < 32; i++) held.push(await open(`127.0.0.${a}`));
    const beyond = await open('127.0.0.10');
    assert.ok(await closesWithin(beyond, 2000), 'a socket past 256 in all is closed');
    assert.ok(
      gw.logs.some((l) => l['msg'] === 'admin socket refused: too many open'),
      'the refusal is logged',
    );
  } finally {
    for (const h of held) h.socket.destroy();
  }
  // Once the sockets are gone, the address is answered again.
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(await healthz('127.0.0.1'), 200);
  // Each refusal is counted under the limit it hit: the 33rd of one address, the 257th in all.
  const metrics = await (await fetch(`${gw.adminUrl}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })).text();
  assert.match(metrics, /^# HELP ferry_admin_sockets_refused_total /m);
  assert.match(metrics, /^ferry_admin_sockets_refused_total\{reason="per_address"\} 1$/m);
  assert.match(metrics, /^ferry_admin_sockets_refused_total\{reason="total"\} 1$/m);
});

test('a socket is closed without a whole request head 10 s after its accept or its last answer, or a whole request in 30 s, or when it takes no answer for 30 s and 1 s per KB; a client asking every second keeps its socket', async () => {
  const idle = await open('127.0.0.11');
  // After an answer, line breaks every 2 s: node:http starts no head on them, and they kept the keep-alive timer from firing.
  const lineBreaks = await open('127.0.0.11');
  lineBreaks.socket.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
  const trickle = await open('127.0.0.11');
  trickle.socket.write(`GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${TOKEN}\r\n`);
  // A second request's head sent slowly, after a first one answered on the same socket.
  const second = await open('127.0.0.11');
  second.socket.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /healthz HTTP/1.1\r\n');
  // A body announced and sent a byte a second.
  const body = await open('127.0.0.11');
  body.socket.write(`POST /api/reload HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n`);
  const timers = [trickle, second, body].map((h) => setInterval(() => h.isOpen() && h.socket.write('x'), 1000));
  timers.push(setInterval(() => lineBreaks.isOpen() && lineBreaks.socket.write('\r\n'), 2000));
  // Answers asked for and never read: 400 of a 50 KB file, far more than the socket buffers hold.
  // The requests, 38 KB, arrive whole in one read: none is left half parsed, which node:http would time.
  const unread = await open('127.0.0.13');
  unread.socket.pause();
  unread.socket.write(`GET /ui/uplot.js HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${TOKEN}\r\n\r\n`.repeat(400));
  const unreadSince = Date.now();
  // A keep-alive client with a request every second.
  const steady = await open('127.0.0.12');
  let answers = 0;
  steady.socket.on('data', (chunk: Buffer) => (answers += chunk.toString().split('HTTP/1.1 200').length - 1));
  const ask = setInterval(() => steady.isOpen() && steady.socket.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'), 1000);
  try {
    const [idleMs, trickleMs, secondMs, lineBreaksMs] = await Promise.all([idle.closed, trickle.closed, second.closed, closedAfter(lineBreaks, 20_000)]);
    for (const [what, ms] of [
      ['idle', idleMs],
      ['head sent a byte a second', trickleMs],
      ['second head sent a byte a second', secondMs],
      ['line breaks after an answer', lineBreaksMs],
    ] as const) {
      assert.ok(ms >= 9_000 && ms <= 13_000, `${what}: closed after ${ms} ms`);
    }
    const bodyMs = await body.closed;
    assert.ok(bodyMs >= 28_000 && bodyMs <= 34_000, `body sent a byte a second: closed after ${bodyMs} ms`);
    assert.ok(steady.isOpen(), 'the steady client keeps its socket');
    assert.ok(answers >= 25, `the steady client was answered (${answers})`);

    // The unread answers: the one the socket stalled on, 51 KB, has 30 s and a second per KB of it
    // (about 81 s; a fixed 30 s cut large answers to slow links short), then the gateway gives up
    // on the socket (a paused socket sees no close), so once read it ends without the answers past it.
    const givenUpAfter = await eventually(
      () => {
        assert.ok(gw.logs.some((l) => String(l['msg']).startsWith('admin socket closed: answer not taken')));
        return Date.now() - unreadSince;
      },
      { timeoutMs: Math.max(0, unreadSince + 100_000 - Date.now()), intervalMs: 250 },
    );
    assert.ok(givenUpAfter >= 75_000 && givenUpAfter <= 95_000, `given up on after ${givenUpAfter} ms`);
    assert.ok(gw.logs.some((l) => l['msg'] === 'admin socket closed: answer not taken within 30 s and 1 s per KB'));
    let taken = 0;
    unread.socket.on('data', (chunk: Buffer) => (taken += chunk.toString('latin1').split('HTTP/1.1 200').length - 1));
    unread.socket.resume();
    assert.ok(await closesWithin(unread, 3_000), 'read at last, the socket ends');
    assert.ok(taken < 400, `the answers past the stalled one were never written (${taken} of 400 taken)`);
  } finally {
    for (const t of timers) clearInterval(t);
    clearInterval(ask);
    for (const h of [idle, lineBreaks, trickle, second, body, unread, steady]) h.socket.destroy();
  }
});

test('JSON and metrics answers carry X-Content-Type-Options: nosniff, refusals too', async () => {
  const bearer = { authorization: `Bearer ${TOKEN}` };
  for (const [path, headers] of [
    ['/api/status', bearer],
    ['/metrics', bearer],
    ['/healthz', {}],
    ['/api/status', {}],
    ['/nowhere', bearer],
  ] as const) {
    const answer = await fetch(`${gw.adminUrl}${path}`, { headers });
    await answer.arrayBuffer();
    assert.equal(answer.headers.get('x-content-type-options'), 'nosniff', `${path} (${answer.status})`);
  }
});
