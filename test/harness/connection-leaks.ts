import { setTimeout as sleep } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Aedes, Client } from 'aedes';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** Follows every connection `aedes` sees, from its CONNECT on, with a WeakRef: see `alive`. */
export function followConnections(aedes: Aedes): WeakRef<Client>[] {
  const connections: WeakRef<Client>[] = [];
  const preConnect = aedes.preConnect;
  aedes.preConnect = (client, packet, callback) => {
    connections.push(new WeakRef(client));
    preConnect.call(aedes, client, packet, callback);
  };
  return connections;
}

/**
 * Connections not garbage collected: full collections, a few turns apart (a WeakRef target is
 * kept until the end of the job that read it, and aedes lets go of a closed connection over a
 * few turns), until none is left or 10 s passed.
 */
export async function alive(connections: readonly WeakRef<Client>[]): Promise<number> {
  let left = connections.length;
  for (let i = 0; i < 100 && left > 0; i++) {
    await sleep(100);
    gc();
    left = connections.filter((ref) => ref.deref() !== undefined).length;
  }
  return left;
}
