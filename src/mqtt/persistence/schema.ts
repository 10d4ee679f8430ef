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

-- Messages queued for persistent sessions, in seq order per client. message_id is the packet id
-- once the message was numbered for sending; a QoS 2 message whose PUBREC came is its PUBREL.
CREATE TABLE IF NOT EXISTS outgoing (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  client_id TEXT NOT NULL,
  broker_id TEXT,
  broker_counter INTEGER,
  message_id INTEGER,
  expires_at INTEGER,
  payload BLOB,
  meta TEXT NOT NULL
);
-- A message queued for many sessions is as many rows with the same broker counter: keyed by the
-- counter first, they sit side by side in that index. Only numbered copies (sent, awaiting their
-- PUBACK) are in the packet id index. Both keep a commit's pages few.
CREATE INDEX IF NOT EXISTS outgoing_client ON outgoing (client_id, seq);
CREATE INDEX IF NOT EXISTS outgoing_counter ON outgoing (broker_counter, client_id);
CREATE INDEX IF NOT EXISTS outgoing_message ON outgoing (client_id, message_id) WHERE message_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS outgoing_expiry ON outgoing (expires_at) WHERE expires_at IS NOT NULL;

-- QoS 2 messages received and answered with PUBREC, until their PUBREL.
CREATE TABLE IF NOT EXISTS incoming (
  client_id TEXT NOT NULL,
  message_id INTEGER NOT NULL,
  payload BLOB,
  meta TEXT NOT NULL,
  PRIMARY KEY (client_id, message_id)
) WITHOUT ROWID;

-- due_at is set only for a will carried over from an earlier run: when it is published.
CREATE TABLE IF NOT EXISTS wills (
  client_id TEXT PRIMARY KEY,
  broker_id TEXT NOT NULL,
  payload BLOB,
  meta TEXT NOT NULL,
  due_at INTEGER
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

/** The schema version BROKER_STATE_SCHEMA and USAGE_SCHEMA make. */
export const BROKER_STATE_VERSION = 2;

/**
 * What the limits on broker state (`mqtt.limits`) read: the retained messages and bytes of
 * each publishing client and of the whole gateway, and the messages and bytes queued for each
 * session, kept by triggers in the same transaction as the rows they count, so that they are
 * exact after a crash and after `ferry sessions purge` or `ferry retained purge` changed the
 * file. Bytes are payload bytes.
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
CREATE TABLE IF NOT EXISTS queue_usage (
  client_id TEXT PRIMARY KEY,
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

CREATE TRIGGER IF NOT EXISTS queue_added AFTER INSERT ON outgoing BEGIN
  INSERT INTO queue_usage (client_id, messages, bytes) VALUES (NEW.client_id, 1, coalesce(octet_length(NEW.payload), 0))
    ON CONFLICT (client_id) DO UPDATE SET messages = messages + 1, bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER IF NOT EXISTS queue_removed AFTER DELETE ON outgoing BEGIN
  UPDATE queue_usage SET messages = messages - 1, bytes = bytes - coalesce(octet_length(OLD.payload), 0) WHERE client_id = OLD.client_id;
  DELETE FROM queue_usage WHERE client_id = OLD.client_id AND messages <= 0;
END;
CREATE TRIGGER IF NOT EXISTS queue_replaced AFTER UPDATE OF payload ON outgoing BEGIN
  UPDATE queue_usage SET bytes = bytes - coalesce(octet_length(OLD.payload), 0) + coalesce(octet_length(NEW.payload), 0) WHERE client_id = NEW.client_id;
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
 * totals) and no usage counts (counted once from the rows).
 */
export function migrateBrokerState(db: MigratedDatabase): void {
  db.transaction(() => {
    db.exec(BROKER_STATE_SCHEMA);
    const version = db.pragma('user_version', { simple: true }) as number;
    if (version >= BROKER_STATE_VERSION) return;
    const columns = db.prepare('PRAGMA table_info(retained)').all() as { name: string }[];
    if (!columns.some((c) => c.name === 'owner')) db.exec('ALTER TABLE retained ADD COLUMN owner TEXT');
    db.exec(USAGE_SCHEMA);
    db.exec(`
      DELETE FROM retained_total; DELETE FROM retained_usage; DELETE FROM queue_usage;
      INSERT INTO retained_total (id, messages, bytes) SELECT 0, count(*), coalesce(sum(octet_length(payload)), 0) FROM retained;
      INSERT INTO retained_usage (owner, messages, bytes) SELECT owner, count(*), coalesce(sum(octet_length(payload)), 0) FROM retained WHERE owner IS NOT NULL GROUP BY owner;
      INSERT INTO queue_usage (client_id, messages, bytes) SELECT client_id, count(*), coalesce(sum(octet_length(payload)), 0) FROM outgoing GROUP BY client_id;
      PRAGMA user_version = ${BROKER_STATE_VERSION};
    `);
  })();
}
