// Memory of the gateway around many TLS sockets that complete the handshake and never send
// CONNECT (an idle-socket attack), then close: RSS of the `ferry run` process before, at the
// peak and after they closed. Run with a glibc malloc setting in the environment to compare,
// e.g. `MALLOC_ARENA_MAX=2 node --import tsx bench/tls-rss.ts 10000`. With FERRY_BENCH_GC=1 the
// gateway runs with the inspector on a loopback port, and a full garbage collection is
// requested through it after the sockets closed (the native TLS state of a socket is freed only
// when the garbage collector collects its JavaScript handle).
//
//   node --import tsx bench/tls-rss.ts [sockets] [extra mqtt settings as YAML flow]
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { startFerry } from '../test/harness/ferry-process.ts';
import { makeCertificates } from '../test/harness/certs.ts';
import { tempDirs } from '../test/harness/temp.ts';
import { writeGatewayTree } from '../test/harness/gateway-tree.ts';
import { freePorts } from '../test/harness/net.ts';
import { collectGarbage } from './inspector.ts';
import { rssMb } from './load.ts';

const SOCKETS = Number(process.argv[2] ?? 10_000);
const EXTRA = process.argv[3] ?? '';
const BATCH = 200;

/** The V8 heap in use as the gateway's vitals last sampled it. */
async function heapMiB(adminUrl: string): Promise<number | undefined> {
  const text = await (await fetch(`${adminUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('ferry_process_memory_heap_used_bytes'));
  return line === undefined ? undefined : Math.round(Number(line.split(' ').pop()) / 1024 / 1024);
}

const dir = tempDirs('ferry-tls-rss-')();
makeCertificates(dir, []);
const config = writeGatewayTree(dir, `{host: 127.0.0.1, allowAnonymous: false, tls: {port: 0, cert: ${join(dir, 'server.crt')}, key: ${join(dir, 'server.key')}}${EXTRA}}`, {});
const [inspectPort] = process.env['FERRY_BENCH_GC'] === '1' ? await freePorts(1) : [];
const gw = await startFerry(['--config', config, '--data-dir', join(dir, 'data')], inspectPort === undefined ? {} : { NODE_OPTIONS: `--inspect=127.0.0.1:${inspectPort}` });

const pid = gw.child.pid as number;
try {
  const status = (await (await fetch(`${gw.adminUrl}/api/status`)).json()) as { listeners: { protocol: string; port: number }[] };
  const port = status.listeners.find((l) => l.protocol === 'mqtts')?.port as number;
  await sleep(1000);
  const before = Math.round(rssMb(pid));
  const ca = readFileSync(join(dir, 'ca.crt'));
  const sockets: TLSSocket[] = [];
  let handshakes = 0;
  let failed = 0;
  for (let i = 0; i < SOCKETS; i += BATCH) {
    await Promise.all(
      Array.from({ length: Math.min(BATCH, SOCKETS - i) }, (_, j) => {
        // Four source addresses, as in the attack that was reported.
        const tcp = netConnect({ host: '127.0.0.1', port, localAddress: `127.0.0.${2 + ((i + j) % 4)}` });
        const socket = tlsConnect({ socket: tcp, ca, servername: 'localhost' });
        sockets.push(socket);
        return new Promise<void>((done) => {
          socket.once('secureConnect', () => {
            handshakes += 1;
            done();
          });
          socket.once('error', () => {
            failed += 1;
            done();
          });
          socket.once('close', () => done());
        });
      }),
    );
  }
  const peak = Math.round(rssMb(pid));
  const openAtPeak = sockets.filter((s) => !s.destroyed && s.readyState === 'open').length;
  const heapAtPeak = await heapMiB(gw.adminUrl);
  for (const s of sockets) s.destroy();
  await sleep(5000);
  if (inspectPort !== undefined) await collectGarbage(inspectPort);
  const after = Math.round(rssMb(pid));
  await sleep(25_000);
  const later = Math.round(rssMb(pid));
  const heapLater = await heapMiB(gw.adminUrl);
  console.log(
    JSON.stringify({
      sockets: SOCKETS,
      handshakes,
      failed,
      openAtPeak,
      heapUsedMiB: { peak: heapAtPeak, after30s: heapLater },
      gc: inspectPort !== undefined,
      env: { MALLOC_ARENA_MAX: process.env['MALLOC_ARENA_MAX'], GLIBC_TUNABLES: process.env['GLIBC_TUNABLES'], LD_PRELOAD: process.env['LD_PRELOAD'] },
      rssMiB: { before, peak, after5s: after, after30s: later },
    }),
  );
} finally {
  gw.child.kill('SIGTERM');
  await gw.exited;
}
