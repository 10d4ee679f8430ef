import type { Aedes, AedesOptions } from 'aedes';
import { loadLeanMqttPacket } from '../../src/mqtt/lean-mqtt-packet.ts';

export interface AedesInstances {
  /** Each aedes instance created since, in order: the embedded broker's own, for tests that reach inside it. */
  readonly created: readonly Aedes[];
  /** Puts aedes' own `createBroker` back; for the test file's `after`. */
  restore(): void;
}

/**
 * Records every aedes instance the embedded broker creates from here on, for tests that set
 * aedes' internals (a connection's packet id counter) the broker does not expose. aedes is
 * loaded after the lean mqtt-packet, as EmbeddedBroker loads it.
 */
export async function recordAedesInstances(): Promise<AedesInstances> {
  loadLeanMqttPacket();
  const { Aedes: AedesClass } = await import('aedes');
  const created: Aedes[] = [];
  const createBroker = AedesClass.createBroker;
  AedesClass.createBroker = async (options?: AedesOptions) => {
    const aedes = await createBroker.call(AedesClass, options);
    created.push(aedes);
    return aedes;
  };
  return {
    created,
    restore: () => {
      AedesClass.createBroker = createBroker;
    },
  };
}
