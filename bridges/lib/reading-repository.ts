// The tables of migrations/ as Kysely types, and the queries the example bridge and a backend
// need on them. Not a bridge: files in subdirectories of bridges/ are not loaded as bridges.
import type { ColumnType, Generated, Insertable, Kysely, Selectable } from 'kysely';

export interface DevicesTable {
  id: string;
  first_seen: ColumnType<Date, Date | undefined, never>;
  last_seen: ColumnType<Date, Date | undefined, Date>;
}

export interface ReadingsTable {
  /** The message's id (UUIDv7): a message delivered twice adds one row. */
  id: string;
  device: string;
  topic: string;
  received_at: ColumnType<Date, Date, never>;
  body: unknown;
}

export interface DeviceCommandsTable {
  id: Generated<string>;
  device: string;
  command: unknown;
  created_at: Generated<Date>;
}

/** The database `main` of config/gateway.yaml, as migrations/ makes it. */
export interface Tables {
  devices: DevicesTable;
  readings: ReadingsTable;
  device_commands: DeviceCommandsTable;
}

export type Reading = Selectable<ReadingsTable>;
export type NewReading = Insertable<ReadingsTable>;

export class ReadingRepository {
  readonly #db: Kysely<Tables>;

  constructor(db: Kysely<Tables>) {
    this.#db = db;
  }

  /**
   * Inserts readings and marks their devices as heard, in one transaction. A reading whose id
   * is there already (a message delivered again) is skipped. Returns how many were added.
   */
  async insertBatch(readings: readonly NewReading[]): Promise<number> {
    if (readings.length === 0) return 0;
    return this.#db.transaction().execute(async (trx) => {
      const inserted = await trx
        .insertInto('readings')
        .values([...readings])
        .onConflict((oc) => oc.column('id').doNothing())
        .executeTakeFirst();
      const lastSeen = new Map<string, Date>();
      for (const r of readings) {
        const seen = lastSeen.get(r.device);
        if (seen === undefined || r.received_at > seen) lastSeen.set(r.device, r.received_at);
      }
      // In a fixed order, so that two batches of the same devices cannot deadlock.
      const devices = [...lastSeen].sort(([a], [b]) => (a < b ? -1 : 1)).map(([id, seen]) => ({ id, first_seen: seen, last_seen: seen }));
      await trx
        .insertInto('devices')
        .values(devices)
        .onConflict((oc) => oc.column('id').doUpdateSet((eb) => ({ last_seen: eb.fn('greatest', ['devices.last_seen', eb.ref('excluded.last_seen')]) })))
        .execute();
      return Number(inserted.numInsertedOrUpdatedRows ?? 0);
    });
  }

  /** Each device's latest reading, by device id. */
  async latestPerDevice(): Promise<Reading[]> {
    return this.#db.selectFrom('readings').selectAll().distinctOn('device').orderBy('device').orderBy('received_at', 'desc').orderBy('id', 'desc').execute();
  }

  /** A device's readings received in [from, to), oldest first. */
  async between(device: string, from: Date, to: Date): Promise<Reading[]> {
    return this.#db
      .selectFrom('readings')
      .selectAll()
      .where('device', '=', device)
      .where('received_at', '>=', from)
      .where('received_at', '<', to)
      .orderBy('received_at')
      .orderBy('id')
      .execute();
  }
}
