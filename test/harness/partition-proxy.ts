import { once } from 'node:events';
import { type Socket, connect, createServer } from 'node:net';

export interface PartitionProxy {
  /** Port on 127.0.0.1 to hand a client instead of the target's. */
  readonly port: number;
  /**
   * The connections open now go silent both ways, for good, and neither end is told: the
   * client's replies stop coming, and the server's side stays open however the client's ends
   * (as across a network cut off, whose far side learns nothing until its TCP gives up). New
   * connections are forwarded as before.
   */
  partition(): void;
  /** Closes everything, the server's sides of partitioned connections too. */
  close(): void;
}

/**
 * A TCP relay in front of a real server that can cut the path under the connections open
 * without closing them: what a network partition looks like to both ends, which a proxy that
 * closes its sockets (tcp-proxy.ts) cannot show.
 */
export async function partitionProxy(target: { host: string; port: number }): Promise<PartitionProxy> {
  const live = new Set<{ client: Socket; upstream: Socket }>();
  const held: Socket[] = [];
  const server = createServer((client) => {
    const upstream = connect(target.port, target.host);
    const pair = { client, upstream };
    live.add(pair);
    client.on('data', (data) => live.has(pair) && upstream.write(data));
    upstream.on('data', (data) => live.has(pair) && client.write(data));
    for (const socket of [client, upstream]) {
      socket.on('error', () => {});
      socket.on('close', () => {
        if (!live.delete(pair)) return;
        client.destroy();
        upstream.destroy();
      });
    }
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as { port: number }).port,
    partition: () => {
      for (const pair of live) held.push(pair.client, pair.upstream);
      live.clear();
    },
    close: () => {
      for (const socket of held) socket.destroy();
      for (const pair of live) {
        pair.client.destroy();
        pair.upstream.destroy();
      }
      live.clear();
      server.close();
    },
  };
}
