// A project that installed Ferry's packed tarball: imports every entry point, runs a small
// pipeline against the real services, and is type-checked against the published declarations
// (test/e2e/package.test.ts copies it into a fresh project).
import { ConfigError, isFerryError, startGateway } from 'ferry';
import { durableBuffer } from 'ferry/buffer';
import { type KafkaSinkConfig, fromKafka, kafkaProducer, toKafka } from 'ferry/kafka';
import { fromMqtt, mqttPublisher, toMqtt } from 'ferry/mqtt';
import { fromPostgres, postgresDatabase, toPostgres } from 'ferry/postgres';
import { rateLimit, redisClient } from 'ferry/redis';
import { readHistory, sqliteDatabase, toHistory } from 'ferry/sqlite';
import { filter, firstValueFrom, scan } from 'rxjs';

const [brokers = '', redis = '', dir = '', topic = ''] = process.argv.slice(2);

// Every entry point's functions are there.
for (const fn of [
  startGateway,
  durableBuffer,
  fromKafka,
  kafkaProducer,
  toKafka,
  fromMqtt,
  mqttPublisher,
  toMqtt,
  fromPostgres,
  toPostgres,
  postgresDatabase,
  rateLimit,
  redisClient,
  readHistory,
  sqliteDatabase,
  toHistory,
]) {
  if (typeof fn !== 'function') throw new Error('missing export');
}

// Options are checked on creation, with the messages of `ferry validate`.
let refused = '';
try {
  toKafka({ brokers, topic: 'bad topic!' } satisfies KafkaSinkConfig);
} catch (error) {
  if (!(error instanceof ConfigError) || !isFerryError(error, 'CONFIG_INVALID')) throw error;
  refused = error.issues.map((issue) => `${issue.path}: ${issue.message}`).join('; ');
}

// Kafka -> rate limit (Redis) -> durable buffer -> history, three messages.
const producer = kafkaProducer({ brokers, acks: 'all' });
await producer.send(topic, [{ key: 'sensor-1', value: 'one' }, 'two', new TextEncoder().encode('three')]);
await producer.close();

const pipeline = fromKafka({ brokers, groupId: `${topic}-group`, topics: [topic], fromBeginning: true }).pipe(
  rateLimit({ redis, messagesPerSecond: 1000, key: 'all', keyPrefix: `${topic}:` }),
  durableBuffer({ dir, name: 'consumer', synchronous: 'normal' }),
  toHistory({ dir, keep: 10 }, { name: 'consumer' }),
);
const written = firstValueFrom(
  pipeline.pipe(
    scan((count, event) => count + (event.type === 'written' ? event.count : 0), 0),
    filter((count) => count >= 3),
  ),
);
await written;
const rows = readHistory(dir, { name: 'consumer' }).map((row) => Buffer.from(row.payload).toString());

// The toolkit handles: a Redis client and a typed SQLite database.
const cache = redisClient({ url: redis });
await cache.set(`${topic}:seen`, String(rows.length), { ttlMs: 60_000 });
const seen = await cache.get(`${topic}:seen`);
await cache.close();
const local = sqliteDatabase<{ notes: { body: string } }>({ file: 'notes.db' }, { dir });
await local.schema.createTable('notes').addColumn('body', 'text').execute();
await local.insertInto('notes').values({ body: 'typed' }).execute();
const notes = (await local.selectFrom('notes').select('body').execute()).map((note) => note.body);
await local.destroy();
console.log(JSON.stringify({ rows, refused, seen, notes }));
