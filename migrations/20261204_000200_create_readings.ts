// Device readings, one row per message: the table bridges/telemetry-to-postgres.yaml and
// bridges/readings-to-postgres.ts write. The message's id is the key, so a message delivered
// twice adds one row.
import type { Kysely } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('readings')
    .addColumn('id', 'uuid', (c) => c.primaryKey())
    .addColumn('device', 'text', (c) => c.notNull())
    .addColumn('topic', 'text', (c) => c.notNull())
    .addColumn('received_at', 'timestamptz', (c) => c.notNull())
    .addColumn('body', 'jsonb')
    .execute();
  // The latest reading per device and a device's readings in a time range read this index.
  await db.schema.createIndex('readings_device_time').on('readings').columns(['device', 'received_at desc']).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('readings').execute();
}
