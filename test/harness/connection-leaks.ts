import { setTimeout as sleep } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { after, before } from 'node:test';
import type { Aedes, Client } from 'aedes';
import { EmbeddedBroker, type EmbeddedBrokerOptions } from '../../src/mqtt/embedded-broker.ts';
import { type AedesInstances, recordAedesInstances } from './aedes-instances.ts';

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

export interface FollowedBroker {
  readonly broker: EmbeddedBroker;
  readonly aedes: Aedes;
  /** Every connection the broker saw, from its CONNECT on. */
  readonly connections: WeakRef<Client>[];
}

/**
 * Embedded brokers whose connections are followed (`followConnections`), for a test file: it
 * records the aedes instances the brokers create before its tests, and closes the brokers and
 * stops recording after them.
 */
export function followedBrokers(): (options: EmbeddedBrokerOptions) => Promise<FollowedBroker> {
  let instances: AedesInstances | undefined;
  const brokers: EmbeddedBroker[] = [];
  before(async () => {
    instances = await recordAedesInstances();
  });
  after(async () => {
    for (const broker of brokers) await broker.close();
    instances?.restore();
  });
  return async (options) => {
    const broker = await EmbeddedBroker.start(options);
    brokers.push(broker);
    const aedes = instances?.created.at(-1) as Aedes;
    return { broker, aedes, connections: followConnections(aedes) };
  };
}
