import { readFileSync } from 'node:fs';
import { connect, createServer, type NetConnectOpts, type Server } from 'node:net';

export type TcpTarget = { host: string; port: number } | { path: string };

/** Where free ports are picked: above the well-known and registered ports most services use. */
const PICK_FROM = 20_000;

/**
 * The first port of the range the kernel hands out by itself (a bind to port 0, the local end
 * of an outgoing connection): Linux's ip_local_port_range, 32768 by default.
 */
function ephemeralFloor(): number {
  try {
    const floor = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(floor) && floor > 0 ? floor : 32_768;
  } catch {
    return 32_768;
  }
}

/** A server listening on 127.0.0.1:port, or undefined when the port is taken (or not ours to take). */
function tryListen(port: number): Promise<Server | undefined> {
  const server = createServer();
  return new Promise((resolve, reject) => {
    const failed = (error: NodeJS.ErrnoException) => {
      server.off('listening', listening);
      if (error.code === 'EADDRINUSE' || error.code === 'EACCES') resolve(undefined);
      else reject(error);
    };
    const listening = () => {
      server.off('error', failed);
      resolve(server);
    };
    server.once('error', failed);
    server.once('listening', listening);
    server.listen(port, '127.0.0.1');
  });
}

/**
 * Returns `count` distinct loopback ports that were free a moment ago, picked at random below
 * the kernel's ephemeral range. All are held open together while picking, so they never
 * collide with each other. Below that range no outgoing connection and no bind to port 0 gets
 * one: a server stopped and started again on its port (Kafka after a 30 s outage, Postgres or
 * Mosquitto after a crash) found it taken by another test's connection when it was picked from
 * the ephemeral range. Another process binding it on purpose is still possible, and acceptable
 * for a test harness.
 */
export async function freePorts(count: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    const ports: number[] = [];
    const span = ephemeralFloor() - PICK_FROM;
    for (let i = 0; i < count; i++) {
      let server: Server | undefined;
      for (let attempt = 0; attempt < 100 && server === undefined && span > 0; attempt++) {
        const candidate = PICK_FROM + Math.floor(Math.random() * span);
        if (!ports.includes(candidate)) server = await tryListen(candidate);
      }
      // No room below the ephemeral range (or none free there): one the kernel picks.
      server ??= await tryListen(0);
      if (server === undefined) throw new Error('no free loopback port');
      servers.push(server);
      const address = server.address();
      if (address === null || typeof address === 'string') throw new Error('unexpected server address');
      ports.push(address.port);
    }
    return ports;
  } finally {
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  }
}

/** A loopback port nothing listens on: one the kernel handed out a moment ago, and closed again. */
export async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Resolves true when a TCP (or unix socket) connection succeeds within timeoutMs; never rejects. */
export function canConnect(target: TcpTarget, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const options: NetConnectOpts = 'path' in target ? { path: target.path } : { host: target.host, port: target.port };
    const socket = connect(options);
    const finish = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => finish(false));
    socket.once('connect', () => finish(true));
    socket.once('error', () => finish(false));
  });
}

export function describeTarget(target: TcpTarget): string {
  if ('path' in target) return target.path;
  return target.host.includes(':') ? `[${target.host}]:${target.port}` : `${target.host}:${target.port}`;
}
