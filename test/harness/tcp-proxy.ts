import { once } from 'node:events';
import { type Socket, connect, createServer } from 'node:net';

export interface TcpProxy {
  /** Port on 127.0.0.1 to hand a client instead of the target's. */
  readonly port: number;
  /** From now on, connections are closed as soon as they are accepted (an upstream that is down). */
  refuse(): void;
  /** From now on, connections are forwarded to the target. Takes effect at once. */
  forward(): void;
  close(): Promise<void>;
}

/**
 * A TCP relay in front of a real server, to switch an outage on and off between two
 * writes of a client: the server stays real, only the path to it breaks.
 */
export async function tcpProxy(target: { host: string; port: number }, options: { refusing?: boolean } = {}): Promise<TcpProxy> {
  let refusing = options.refusing ?? false;
  const sockets = new Set<Socket>();
  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  };
  const server = createServer((client) => {
    track(client);
    if (refusing) {
      client.destroy();
      return;
    }
    const upstream = connect(target.port, target.host);
    track(upstream);
    client.pipe(upstream).pipe(client);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.once('close', () => upstream.destroy());
    upstream.once('close', () => client.destroy());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as { port: number }).port,
    refuse: () => {
      refusing = true;
    },
    forward: () => {
      refusing = false;
    },
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
