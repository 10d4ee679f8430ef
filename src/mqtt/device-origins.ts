import type { Client } from 'aedes';
import type { Origin } from '../core/envelope.ts';
import type { Identity } from './acl.ts';

/**
 * The origin of a client's messages: one object per client, QoS and retain flag, shared by
 * its messages (fewer objects per message, and the buffer keeps its JSON).
 */
export class DeviceOrigins {
  readonly #identity: (client: Client) => Identity | undefined;
  readonly #origins = new WeakMap<Client, Origin[]>();

  /** `identity`: the login a client connected with, whose username its origins carry. */
  constructor(identity: (client: Client) => Identity | undefined) {
    this.#identity = identity;
  }

  /** A client's origin; a will carried over a restart (no client) gets one without a client id. */
  get(client: Client | null, qos: 0 | 1 | 2, retain: boolean): Origin {
    if (client === null) return { source: 'mqtt', qos, retain };
    let origins = this.#origins.get(client);
    if (origins === undefined) {
      origins = [];
      this.#origins.set(client, origins);
    }
    const at = qos * 2 + (retain ? 1 : 0);
    if (origins[at] === undefined) {
      const username = this.#identity(client)?.username;
      origins[at] = Object.freeze({ source: 'mqtt', qos, retain, clientId: client.id, ...(username === undefined ? {} : { username }) });
    }
    return origins[at];
  }
}
