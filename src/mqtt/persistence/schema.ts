/**
 * The embedded broker's state (broker.db). A packet is stored as its payload (BLOB, or TEXT
 * when it was a string) and `meta`, the rest of it as JSON (packet-codec.ts); the columns
 * beside them are what the queries look things up by. user_version numbers the schema, for the
 * migrations of later versions.
 */
export const BROKER_STATE_SCHEMA = `
PRAGMA user_version = 1;
CREATE TABLE IF NOT EXISTS retained (
  topic TEXT PRIMARY KEY,
  payload BLOB,
  meta TEXT NOT NULL,
  expires_at INTEGER
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
