// Device telemetry persisted through a repository on the gateway's `main` database (see
// bridges/lib/reading-repository.ts and migrations/): readings in batches, each device's last
// contact kept up to date. On when POSTGRES_URL is set; run `ferry migrate up` first.
import { bufferTime, concatMap, defer, filter, ignoreElements, retry, tap, timer } from 'rxjs';
import { defineBridge, type Message } from 'ferry';
import { type NewReading, ReadingRepository, type Tables } from './lib/reading-repository.ts';

/** The reading of a message, or undefined (and the message dead-lettered) when its payload is not JSON. */
function reading(message: Message): NewReading | undefined {
  let body: unknown;
  try {
    body = message.json();
  } catch {
    message.reject('payload is not JSON');
    return undefined;
  }
  return { id: message.id, device: message.captures[0] ?? 'unknown', topic: message.topic, received_at: new Date(message.timestamp), body: JSON.stringify(body) };
}

export default defineBridge({
  name: 'readings-to-postgres',
  description: 'Device telemetry into the readings and devices tables through ReadingRepository; on when POSTGRES_URL is set.',
  enabled: Boolean(process.env.POSTGRES_URL),
  from: { mqtt: { topics: ['devices/+/telemetry/#'] } },
  // No sink: the handler writes through tools.database and acks each message once its batch committed.
  to: {},
  handle: (messages, tools) => {
    const readings = new ReadingRepository(tools.database<Tables>('main'));
    return messages.pipe(
      bufferTime(100, null, 500),
      filter((batch) => batch.length > 0),
      // One batch at a time, in order; a failed write (PostgreSQL down) is tried again, the
      // messages waiting in the buffer meanwhile.
      concatMap((batch) => {
        const rows = batch.flatMap((m) => reading(m) ?? []);
        return defer(() => readings.insertBatch(rows)).pipe(
          retry({ delay: (_error, attempt) => timer(Math.min(30_000, 250 * 2 ** attempt)) }),
          tap(() => tools.done(batch)),
        );
      }),
      ignoreElements(),
    );
  },
});
