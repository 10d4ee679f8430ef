// The outbox bridges/commands-from-postgres.yaml reads: a backend inserts a row per command,
// and the trigger wakes the gateway (LISTEN device_commands) so that it goes out at once.
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('device_commands')
    .addColumn('id', 'bigint', (c) => c.primaryKey().generatedAlwaysAsIdentity())
    .addColumn('device', 'text', (c) => c.notNull())
    .addColumn('command', 'jsonb', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await sql`CREATE FUNCTION device_commands_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN PERFORM pg_notify('device_commands', ''); RETURN NULL; END $$`.execute(db);
  await sql`CREATE TRIGGER device_commands_notify AFTER INSERT ON device_commands
    FOR EACH STATEMENT EXECUTE FUNCTION device_commands_notify()`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('device_commands').execute();
  await sql`DROP FUNCTION device_commands_notify()`.execute(db);
}
