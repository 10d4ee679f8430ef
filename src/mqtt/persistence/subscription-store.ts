import type { Readable } from 'node:stream';
import type Database from 'better-sqlite3';
import type { GroupCommit } from './group-commit.ts';
import { type ClientRef, type SubscriptionIndex, type SubscriptionRecord, type TopicSubscription, createSubscriptionIndex } from './memory-parts.ts';

/** Topics whose matching subscriptions are kept; all are forgotten when more come. */
const MAX_TOPICS_KEPT = 10_000;

interface SubscriptionRow {
  readonly client_id: string;
  readonly topic: string;
  readonly qos: number;
  readonly rh: number | null;
  readonly rap: number | null;
  readonly nl: number | null;
  readonly subscription_id: number | null;
}

/**
 * The subscriptions of persistent sessions: rows on disk, and in memory the index every
 * publish is matched against (aedes-persistence's own, see memory-parts.ts), read from the rows
 * at startup and changed with them, in the same synchronous step. Every QoS 1 and 2 publish
 * asks which subscriptions its topic matches (aedes queues it for them): the answer is kept per
 * topic until the subscriptions change, as a device publishes to the same few topics all day.
 */
export class SubscriptionStore {
  readonly #db: Database.Database;
  readonly #commit: GroupCommit;
  readonly #upsert: Database.Statement;
  readonly #delete: Database.Statement;
  readonly #clientHas: Database.Statement;
  readonly #deleteClient: Database.Statement;
  #index: SubscriptionIndex = createSubscriptionIndex();
  /** The subscriptions each topic matched, since the last change of the index. */
  readonly #byTopic = new Map<string, Promise<TopicSubscription[]>>();

  constructor(db: Database.Database, commit: GroupCommit) {
    this.#db = db;
    this.#commit = commit;
    this.#upsert = db.prepare(
      `INSERT INTO subscriptions (client_id, topic, qos, rh, rap, nl, subscription_id) VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (client_id, topic) DO UPDATE SET qos = excluded.qos, rh = excluded.rh, rap = excluded.rap, nl = excluded.nl, subscription_id = excluded.subscription_id`,
    );
    this.#delete = db.prepare('DELETE FROM subscriptions WHERE client_id = ? AND topic = ?');
    this.#clientHas = db.prepare('SELECT 1 FROM subscriptions WHERE client_id = ? LIMIT 1');
    this.#deleteClient = db.prepare('DELETE FROM subscriptions WHERE client_id = ?');
  }

  /** Reads every subscription into a new index (at startup, and after a transaction was lost). */
  load(): void {
    const index = createSubscriptionIndex();
    let clientId: string | undefined;
    let subs: SubscriptionRecord[] = [];
    const flush = () => {
      if (clientId !== undefined) void index.addSubscriptions({ id: clientId }, subs);
    };
    for (const row of this.#db.prepare('SELECT * FROM subscriptions ORDER BY client_id').iterate() as IterableIterator<SubscriptionRow>) {
      if (row.client_id !== clientId) {
        flush();
        clientId = row.client_id;
        subs = [];
      }
      const sub = { topic: row.topic, qos: row.qos, rh: row.rh ?? undefined, rap: bool(row.rap), nl: bool(row.nl) };
      subs.push(row.subscription_id === null ? sub : { ...sub, subscriptionIdentifier: row.subscription_id });
    }
    flush();
    this.#index = index;
    this.#byTopic.clear();
  }

  /** Resolves once on disk (the SUBACK waits for it); the index has them at once. */
  add(client: ClientRef, subs: readonly SubscriptionRecord[]): Promise<void> {
    return this.#commit.durable(() => {
      for (const sub of subs) this.#upsert.run(client.id, sub.topic, sub.qos, sub.rh ?? null, flag(sub.rap), flag(sub.nl), sub.subscriptionIdentifier ?? null);
      void this.#index.addSubscriptions(client, subs);
      this.#byTopic.clear();
    });
  }

  remove(client: ClientRef, topics: readonly string[]): Promise<void> {
    return this.#commit.durable(() => {
      for (const topic of topics) this.#delete.run(client.id, topic);
      void this.#index.removeSubscriptions(client, topics);
      this.#byTopic.clear();
    });
  }

  clean(client: ClientRef): Promise<void> {
    if (this.#clientHas.get(client.id) === undefined) {
      const cleaned = this.#index.cleanSubscriptions(client);
      this.#byTopic.clear();
      return cleaned;
    }
    return this.#commit.durable(() => this.dropClient(client.id));
  }

  /** Removes every subscription of a client whose session ended, inside the caller's transaction. */
  dropClient(clientId: string): void {
    this.#deleteClient.run(clientId);
    void this.#index.cleanSubscriptions({ id: clientId });
    this.#byTopic.clear();
  }

  byClient(client: ClientRef): Promise<SubscriptionRecord[]> {
    return this.#index.subscriptionsByClient(client);
  }

  /** The subscriptions `topic` matches; the same array for the same topic until they change (not to be changed by the caller). */
  byTopic(topic: string): Promise<TopicSubscription[]> {
    let matched = this.#byTopic.get(topic);
    if (matched === undefined) {
      if (this.#byTopic.size >= MAX_TOPICS_KEPT) this.#byTopic.clear();
      matched = this.#index.subscriptionsByTopic(topic);
      this.#byTopic.set(topic, matched);
    }
    return matched;
  }

  count(): Promise<{ subsCount: number; clientsCount: number }> {
    return this.#index.countOffline();
  }

  clientList(topic: string): Readable {
    return this.#index.getClientList(topic);
  }
}

function flag(value: boolean | undefined): number | null {
  return value === undefined ? null : value ? 1 : 0;
}

function bool(value: number | null): boolean | undefined {
  return value === null ? undefined : value === 1;
}
