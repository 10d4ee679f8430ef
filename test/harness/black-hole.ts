import { once } from 'node:events';
import { type Socket, createServer } from 'node:net';

export interface BlackHole {
  /** host:port to hand a client as its upstream. */
  readonly address: string;
  close(): void;
}

/** A TCP server that accepts connections and never answers: an upstream that hangs. */
export async function blackHole(): Promise<BlackHole> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => sockets.add(socket));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    address: `127.0.0.1:${(server.address() as { port: number }).port}`,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}
