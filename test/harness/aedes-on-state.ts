import { once } from 'node:events';
import { type AddressInfo, type Server, type Socket, createServer } from 'node:net';
import { Aedes } from 'aedes';
import type { SqlitePersistence } from '../../src/mqtt/persistence/sqlite-persistence.ts';

export interface AedesOnState {
  readonly aedes: Aedes;
  readonly port: number;
  /** Closes the listener, its connections, aedes and the persistence; idempotent. */
  close(): Promise<void>;
}

/**
 * Plain aedes (Ferry's patch applied, none of the embedded broker's hooks) on Ferry's broker
 * state, listening on a free loopback port: for tests of the persistence under aedes itself.
 * `quiet`: aedes' client errors are not reported (tests that drop connections on purpose).
 */
export async function aedesOnState(persistence: SqlitePersistence, options: { quiet?: boolean } = {}): Promise<AedesOnState> {
  const aedes = await Aedes.createBroker({ persistence });
  await persistence.watch(aedes);
  if (options.quiet) aedes.on('clientError', () => {});
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    aedes.handle(socket);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  let closed = false;
  return {
    aedes,
    port: (server.address() as AddressInfo).port,
    close: async () => {
      if (closed) return;
      closed = true;
      server.close();
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
      await persistence.destroy();
    },
  };
}
