import { join } from 'node:path';
import { after, before } from 'node:test';
import type { Aedes, Client } from 'aedes';
import pino from 'pino';
import { EmbeddedBroker } from '../../src/mqtt/embedded-broker.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { type AedesInstances, recordAedesInstances } from './aedes-instances.ts';
import { tempDirs } from './temp.ts';

/** An embedded broker with its state in broker.db, and the aedes inside it. */
export interface StateBroker<P> {
  readonly broker: EmbeddedBroker;
  readonly aedes: Aedes;
  readonly url: string;
  /** Its broker.db. */
  readonly path: string;
  /** aedes' persistence (Ferry's), typed as the test reaches into it. */
  readonly persistence: P;
  /** Every connection that sent a CONNECT, in order. */
  readonly connects: readonly Client[];
  /** The last connection that sent a CONNECT. */
  connecting(): Client | undefined;
  /** Closes it now (a restart on the same broker.db), rather than when the file's tests end. */
  close(): Promise<void>;
}

/**
 * For a test file that reaches into the embedded broker (holding a persistence answer or a
 * registration to force an ordering of connects): records the aedes instances from the file's
 * `before`, closes every broker started and puts aedes back in its `after`. Returns what starts
 * a broker on a free loopback port, its state in `path` (a new directory's broker.db by default).
 */
export function stateBrokers<P>(prefix: string): (path?: string) => Promise<StateBroker<P>> {
  const dirs = tempDirs(prefix);
  let instances: AedesInstances;
  const brokers: EmbeddedBroker[] = [];
  before(async () => {
    instances = await recordAedesInstances();
  });
  after(async () => {
    for (const broker of brokers) await broker.close();
    instances.restore();
  });
  return async (path = join(dirs(), 'broker.db')) => {
    const broker = await EmbeddedBroker.start({
      host: '127.0.0.1',
      port: 0,
      logger: pino({ level: 'silent' }),
      counters: new CounterRegistry(),
      state: { path, synchronous: 'normal' },
    });
    brokers.push(broker);
    const aedes = instances.created.at(-1) as Aedes;
    const persistence = (aedes as unknown as { persistence: P }).persistence;
    const connects: Client[] = [];
    const preConnect = aedes.preConnect;
    aedes.preConnect = (client, packet, callback) => {
      connects.push(client);
      preConnect.call(aedes, client, packet, callback);
    };
    const close = async () => {
      brokers.splice(brokers.indexOf(broker), 1);
      await broker.close();
    };
    return { broker, aedes, url: `mqtt://127.0.0.1:${broker.port}`, path, persistence, connects, connecting: () => connects.at(-1), close };
  };
}
