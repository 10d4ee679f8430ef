// Memory per idle connected device: `ferry run` (the embedded broker with the history bridge,
// the compiled build when current) with N MQTT 3.1.1 devices connected (keep alive 60 s, clean
// session) and each subscribed to its command topic at QoS 1, as a fleet waiting for commands
// is. The gateway's RSS and V8 heap in use are read idle before the devices come and 5 s after
// the last SUBACK, each after a full garbage collection (requested through the inspector), so
// that garbage from the connecting does not count; the difference over N is the memory one
// connection holds. The devices are raw sockets of this process (CONNECT and SUBSCRIBE written
// at once), spread over four loopback source addresses.
import { mkdtempSync, rmSync } from 'node:fs';
import { type Socket, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import mqttPacket from 'mqtt-packet';
import { startFerry } from '../test/harness/ferry-process.ts';
import { writeGatewayTree } from '../test/harness/gateway-tree.ts';
import { freePorts } from '../test/harness/net.ts';
import { collectGarbage } from './inspector.ts';
import { rssMb } from './load.ts';

/** Connections opened at once. */
const BATCH = 250;
/** CONNACK (4 bytes) and SUBACK with one return code (5 bytes). */
const ANSWER_BYTES = 9;

export const PER_CONNECTION_GOAL_KB = 20;

export interface IdleDevicesResult {
  readonly devices: number;
  readonly connected: number;
  readonly rssMiB: { readonly idle: number; readonly connected: number };
  readonly heapMiB: { readonly idle: number; readonly connected: number };
  /** (RSS connected − RSS idle) / devices, KiB. */
  readonly rssPerConnectionKiB: number;
  /** The same for the V8 heap in use. */
  readonly heapPerConnectionKiB: number;
}

/** Opens one device: CONNECT and SUBSCRIBE written at once; resolves when both were answered. */
function device(port: number, index: number, sockets: Socket[]): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port, localAddress: `127.0.0.${2 + (index % 4)}` });
    sockets.push(socket);
    let received = 0;
    socket.on('data', (chunk: Buffer) => {
      received += chunk.length;
      if (received >= ANSWER_BYTES) resolve(true);
    });
    socket.once('error', () => resolve(false));
    socket.once('close', () => resolve(false));
    const clientId = `idle-${index}`;
    socket.write(
      Buffer.concat([
        mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId, keepalive: 60 }),
        mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: `devices/${clientId}/commands/#`, qos: 1 }] }),
      ]),
    );
  });
}

export async function benchIdleDevices(options: { readonly devices: number; readonly log: (line: string) => void }): Promise<IdleDevicesResult> {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-bench-idle-'));
  const limits = `maxSocketsPerAddress: ${options.devices}, maxConnectionsPerAddress: ${options.devices}, maxConnections: ${options.devices + 100}`;
  const config = writeGatewayTree(dir, `{host: 127.0.0.1, allowAnonymous: loopback, ${limits}}`, {});
  const [inspectPort] = await freePorts(1);
  const gw = await startFerry(['--config', config, '--data-dir', join(dir, 'data')], { NODE_OPTIONS: `--inspect=127.0.0.1:${inspectPort}` });
  const pid = gw.child.pid as number;
  const sockets: Socket[] = [];
  try {
    const port = Number(new URL(gw.mqttUrl).port);
    await sleep(3000);
    const heapIdle = await collectGarbage(inspectPort as number);
    const rssIdle = rssMb(pid);
    let connected = 0;
    for (let i = 0; i < options.devices; i += BATCH) {
      const answered = await Promise.all(Array.from({ length: Math.min(BATCH, options.devices - i) }, (_, j) => device(port, i + j, sockets)));
      connected += answered.filter(Boolean).length;
      if ((i / BATCH) % 10 === 9) options.log(`  ${connected} of ${options.devices} devices connected and subscribed`);
    }
    await sleep(5000);
    const heapConnected = await collectGarbage(inspectPort as number);
    const rssConnected = rssMb(pid);
    const perDevice = (mib: number) => Math.round(((mib * 1024) / options.devices) * 10) / 10;
    const round1 = (n: number) => Math.round(n * 10) / 10;
    return {
      devices: options.devices,
      connected,
      rssMiB: { idle: round1(rssIdle), connected: round1(rssConnected) },
      heapMiB: { idle: round1(heapIdle), connected: round1(heapConnected) },
      rssPerConnectionKiB: perDevice(rssConnected - rssIdle),
      heapPerConnectionKiB: perDevice(heapConnected - heapIdle),
    };
  } finally {
    for (const s of sockets) s.destroy();
    gw.child.kill('SIGTERM');
    await gw.exited;
    rmSync(dir, { recursive: true, force: true });
  }
}
