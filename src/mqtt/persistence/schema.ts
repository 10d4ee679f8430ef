/**
 * The embedded broker's state (broker.db). A packet is stored as its payload (BLOB, or TEXT
 * when it was a string) and `meta`, the rest of it as JSON (packet-codec.ts); the columns
 * beside them are what the queries look things up by. user_version numbers the schema
 * (migrateBrokerState brings an older file up to it).
 */
export const BROKER_STATE_SCHEMA = `
CREATE TABLE IF NOT EXISTS retained (
  topic TEXT PRIMARY KEY,
  payload BLOB,
  meta TEXT NOT NULL,
  expires_at INTEGER,
  owner TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS retained_expiry ON retained (expires_at) WHERE expires_at IS NOT NULL;

-- Every subscription of a persistent session (QoS 0 ones too: they are restored on reconnect).
CREATE TABLE IF NOT EXISTS subscriptions (
  client_id TEXT NOT NULL,
  topic TEXT NOT NULL,
  qos INTEGER NOT NULL,
  rh INTEGER,
  rap INTEGER,
  nl INTEGER,
  subscription_id INTEGER,
  PRIMARY KEY (client_id, topic)
) WITHOUT ROWID;

-- A QoS 1 or 2 message queued for persistent sessions, stored once however many sessions it is
-- queued for (a publish to 100 offline sessions is one row here and 100 small rows in queue).
-- copies: the queue rows of it left; the last one removed removes it (trigger queue_copy_removed).
CREATE TABLE IF NOT EXISTS queued_messages (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  broker_id TEXT,
  broker_counter INTEGER,
  copies INTEGER NOT NULL,
  payload BLOB,
  meta TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS queued_messages_counter ON queued_messages (broker_counter);

-- Each session's copies, in queue order: seq is the id of the queued message. message_id is the
-- packet id once the copy was numbered for sending. A copy replaced by another packet (its
-- PUBREL after PUBREC; a copy numbered by another broker) has that packet in payload and meta
-- (NULL otherwise: the queued message's), with its broker id and counter. bytes: payload bytes
-- (for mqtt.limits.queuedBytesPerSession).
CREATE TABLE IF NOT EXISTS queue (
  client_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  message_id INTEGER,
  bytes INTEGER NOT NULL,
  expires_at INTEGER,
  own_broker_id TEXT,
  own_broker_counter INTEGER,
  payload BLOB,
  meta TEXT,
  PRIMARY KEY (client_id, seq)
) WITHOUT ROWID;
-- Only numbered copies (sent, awaiting their PUBACK), replaced ones and ones with an MQTT 5
-- expiry are indexed beyond the key: a copy queued for an offline session is one B-tree entry.
CREATE INDEX IF NOT EXISTS queue_message_id ON queue (client_id, message_id) WHERE message_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS queue_replaced ON queue (client_id, own_broker_counter) WHERE meta IS NOT NULL;
CREATE INDEX IF NOT EXISTS queue_expiry ON queue (expires_at) WHERE expires_at IS NOT NULL;
CREATE TRIGGER IF NOT EXISTS queue_copy_removed AFTER DELETE ON queue BEGIN
  UPDATE queued_messages SET copies = copies - 1 WHERE id = OLD.seq;
  DELETE FROM queued_messages WHERE id = OLD.seq AND copies <= 0;
END;

-- QoS 2 messages received and answered with PUBREC, until their PUBREL.
CREATE TABLE IF NOT EXISTS incoming (
  client_id TEXT NOT NULL,
  message_id INTEGER NOT NULL,
  payload BLOB,
  meta TEXT NOT NULL,
  PRIMARY KEY (client_id, message_id)
) WITHOUT ROWID;

-- due_at is set only for a will carried over from an earlier run: when it is published. The
-- login that stored it, against whose current ACL such a will is checked (carried-wills.ts): owner,
-- its username ('' for anonymous clients, NULL when logins were off), profile, its device
-- profile (NULL for anonymous clients), protocol, its client's MQTT version (NULL: a will stored
-- by version 3 or older, whose login is not known).
CREATE TABLE IF NOT EXISTS wills (
  client_id TEXT PRIMARY KEY,
  broker_id TEXT NOT NULL,
  payload BLOB,
  meta TEXT NOT NULL,
  due_at INTEGER,
  owner TEXT,
  profile TEXT,
  protocol INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS wills_due ON wills (due_at) WHERE due_at IS NOT NULL;

-- Persistent sessions. owner: the username that made the session ('' for anonymous clients,
-- NULL when logins are off). expiry_seconds: the MQTT 5 Session Expiry Interval, NULL when it
-- never expires (MQTT 3.1.1). disconnected_at: when its connection ended, NULL while connected.
-- expires_at is set only for a session carried over from an earlier run: when it ends.
CREATE TABLE IF NOT EXISTS sessions (
  client_id TEXT PRIMARY KEY,
  owner TEXT,
  expiry_seconds INTEGER,
  disconnected_at INTEGER,
  expires_at INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions (expires_at) WHERE expires_at IS NOT NULL;
`;

/** The schema version BROKER_STATE_SCHEMA, USAGE_SCHEMA and COMMANDS_SCHEMA make. */
export const BROKER_STATE_VERSION = 6;

/** The oldest schema `ferry sessions` and `ferry retained` read: versions 3 to 6 only added what they do not read (commands, wills' logins, answers' QoS and refusals). */
export const STATE_FILE_MIN_VERSION = 2;

/**
 * What keeps a command (command-memory.ts) from reaching its device twice when its source
 * delivers it again (Kafka after a restart): the key of the command a session's copy is
 * (queue.command_key, added by the migration; only commands' copies are in its index), and the
 * commands a client answered (acked, or refused for good), kept until they expire, with the QoS
 * of the answer: 1 for a PUBACK (or a refusal), 0 for a command sent at QoS 0 only, NULL for an
 * answer kept by version 4 or older (which did not keep it); and the refusal: the PUBACK reason
 * code in hex ('0x87') or 'packet_too_large', NULL for a delivery or an answer kept by version 5
 * or older (which did not keep it).
 */
export const COMMANDS_SCHEMA = `
CREATE INDEX IF NOT EXISTS queue_command ON queue (command_key) WHERE command_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS commands_answered (
  command_key TEXT PRIMARY KEY,
  client_id TEXT NOT NULL,
  expires_at INTEGER NOT NULL,
  qos INTEGER,
  refusal TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS commands_answered_expiry ON commands_answered (expires_at);
`;

/**
 * What the limits on retained messages (`mqtt.limits`) read: the retained messages and bytes of
 * each publishing client and of the whole gateway, kept by triggers in the same transaction as
 * the rows they count, so that they are exact after a crash and after `ferry retained purge`
 * changed the file. Bytes are payload bytes. (A session's queue is counted from its rows when
 * needed: see outgoing-queue.ts.)
 */
export const USAGE_SCHEMA = `
CREATE TABLE IF NOT EXISTS retained_total (
  id INTEGER PRIMARY KEY CHECK (id = 0),
  messages INTEGER NOT NULL,
  bytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS retained_usage (
  owner TEXT PRIMARY KEY,
  messages INTEGER NOT NULL,
  bytes INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS retained_added AFTER INSERT ON retained BEGIN
  UPDATE retained_total SET messages = messages + 1, bytes = bytes + coalesce(octet_length(NEW.payload), 0);
  INSERT INTO retained_usage (owner, messages, bytes) SELECT NEW.owner, 1, coalesce(octet_length(NEW.payload), 0) WHERE NEW.owner IS NOT NULL
    ON CONFLICT (owner) DO UPDATE SET messages = messages + 1, bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER IF NOT EXISTS retained_removed AFTER DELETE ON retained BEGIN
  UPDATE retained_total SET messages = messages - 1, bytes = bytes - coalesce(octet_length(OLD.payload), 0);
  UPDATE retained_usage SET messages = messages - 1, bytes = bytes - coalesce(octet_length(OLD.payload), 0) WHERE owner = OLD.owner;
  DELETE FROM retained_usage WHERE owner = OLD.owner AND messages <= 0;
END;
CREATE TRIGGER IF NOT EXISTS retained_replaced AFTER UPDATE OF payload, owner ON retained BEGIN
  UPDATE retained_total SET bytes = bytes - coalesce(octet_length(OLD.payload), 0) + coalesce(octet_length(NEW.payload), 0);
  UPDATE retained_usage SET messages = messages - 1, bytes = bytes - coalesce(octet_length(OLD.payload), 0) WHERE owner = OLD.owner;
  DELETE FROM retained_usage WHERE owner = OLD.owner AND messages <= 0;
  INSERT INTO retained_usage (owner, messages, bytes) SELECT NEW.owner, 1, coalesce(octet_length(NEW.payload), 0) WHERE NEW.owner IS NOT NULL
    ON CONFLICT (owner) DO UPDATE SET messages = messages + 1, bytes = bytes + excluded.bytes;
END;

`;

/** The part of better-sqlite3's Database that the migration uses. */
interface MigratedDatabase {
  exec(sql: string): unknown;
  pragma(sql: string, options: { simple: true }): unknown;
  prepare(sql: string): { all(): unknown[] };
  transaction<T>(f: () => T): () => T;
}

/**
 * Creates the broker state's tables, or brings a file of an older version up to date: version 1
 * had no owner of retained messages (they count against no client, and against the gateway's
 * totals), no usage counts (counted once from the rows), and a full copy of a queued message
 * per session in `outgoing` (each becomes a message of its own with one copy); version 2 had no
 * commands' keys (its queued messages have none: none is taken for a command sent again);
 * version 3 kept no login with a will (its wills have none: see carried-wills.ts for what becomes
 * of them); version 4 kept no QoS with a command's answer (its answers have none: read again, such
 * a command counts as delivered at an unknown QoS); version 5 kept no refusal with it (read
 * again, a command its device refused counts as delivered, as it did then).
 */
export function migrateBrokerState(db: MigratedDatabase): void {
  db.transaction(() => {
    db.exec(BROKER_STATE_SCHEMA);
    const version = db.pragma('user_version', { simple: true }) as number;
    if (version >= BROKER_STATE_VERSION) return;
    if (version < 2) toVersion2(db);
    if (!hasColumn(db, 'queue', 'command_key')) db.exec('ALTER TABLE queue ADD COLUMN command_key TEXT');
    db.exec(COMMANDS_SCHEMA);
    if (!hasColumn(db, 'commands_answered', 'qos')) db.exec('ALTER TABLE commands_answered ADD COLUMN qos INTEGER');
    if (!hasColumn(db, 'commands_answered', 'refusal')) db.exec('ALTER TABLE commands_answered ADD COLUMN refusal TEXT');
    for (const [column, type] of [
      ['owner', 'TEXT'],
      ['profile', 'TEXT'],
      ['protocol', 'INTEGER'],
    ] as const) {
      if (!hasColumn(db, 'wills', column)) db.exec(`ALTER TABLE wills ADD COLUMN ${column} ${type}`);
    }
    db.exec(`PRAGMA user_version = ${BROKER_STATE_VERSION}`);
  })();
}

function hasColumn(db: MigratedDatabase, table: string, column: string): boolean {
  return (db.prepare(`PRAGMA table_info(${table})`).all() as { name: string }[]).some((c) => c.name === column);
}

/** Version 1 to 2 (see migrateBrokerState). */
function toVersion2(db: MigratedDatabase): void {
  if (!hasColumn(db, 'retained', 'owner')) db.exec('ALTER TABLE retained ADD COLUMN owner TEXT');
  db.exec(USAGE_SCHEMA);
  db.exec(`
    DELETE FROM retained_total; DELETE FROM retained_usage;
    INSERT INTO retained_total (id, messages, bytes) SELECT 0, count(*), coalesce(sum(octet_length(payload)), 0) FROM retained;
    INSERT INTO retained_usage (owner, messages, bytes) SELECT owner, count(*), coalesce(sum(octet_length(payload)), 0) FROM retained WHERE owner IS NOT NULL GROUP BY owner;
  `);
  const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'outgoing'").all();
  if (tables.length > 0) {
    db.exec(`
      INSERT INTO queued_messages (id, broker_id, broker_counter, copies, payload, meta) SELECT seq, broker_id, broker_counter, 1, payload, meta FROM outgoing;
      INSERT INTO queue (client_id, seq, message_id, bytes, expires_at) SELECT client_id, seq, message_id, coalesce(octet_length(payload), 0), expires_at FROM outgoing;
      DROP TABLE outgoing;
    `);
  }
}
