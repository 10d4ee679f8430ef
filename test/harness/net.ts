import { connect, createServer, type NetConnectOpts, type Server } from 'node:net';

export type TcpTarget = { host: string; port: number } | { path: string };

/**
 * Returns `count` distinct loopback ports that were free a moment ago. All are held open
 * together while picking, so they never collide with each other; another process may still
 * grab one before the caller binds it, which is acceptable for a test harness.
 */
export async function freePorts(count: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < count; i++) {
      const server = createServer();
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', resolve);
      });
      const address = server.address();
      if (address === null || typeof address === 'string') throw new Error('unexpected server address');
      ports.push(address.port);
    }
    return ports;
  } finally {
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  }
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
