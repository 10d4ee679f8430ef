import { join } from 'node:path';
import type { Logger } from 'pino';
import { EmbeddedBroker } from '../../src/mqtt/embedded-broker.ts';
import type { CounterRegistry } from '../../src/observability/counters.ts';

/** Where an embedded broker keeps its sessions: in broker.db (synchronous NORMAL), or in memory only. */
export type BrokerPersistence = 'sqlite' | 'memory';

/** An embedded broker on a free loopback port, with its state in `<dir>/broker.db` unless `persistence` is 'memory'. */
export function startLoopbackBroker(persistence: BrokerPersistence, dir: string, logger: Logger, counters: CounterRegistry): Promise<EmbeddedBroker> {
  const state = persistence === 'sqlite' ? { state: { path: join(dir, 'broker.db'), synchronous: 'normal' as const } } : {};
  return EmbeddedBroker.start({ host: '127.0.0.1', port: 0, logger, counters, ...state });
}
