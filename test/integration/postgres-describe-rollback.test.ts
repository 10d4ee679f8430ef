// The sink checks its insert at startup in a transaction it rolls back. A refusal of class 42
// (the mapping cannot fit the table) stops the sink, even when the connection fails before the
// ROLLBACK is answered: the refusal was the server's, and the failure of the connection after it
// does not make the mapping fit. Found by review: the ROLLBACK's failure was thrown in place of
// the refusal, so the sink did not stop but nacked every batch as UPSTREAM_UNAVAILABLE.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { type Socket, connect, createServer } from 'node:net';
import { test } from 'node:test';
import pino from 'pino';
import { Subject } from 'rxjs';
import { type Delivery, createDelivery } from '../../src/core/delivery.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import { isFerryError } from '../../src/core/errors.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { postgresSink } from '../../src/postgres/sink.ts';
import { testSchema } from '../harness/pg-schema.ts';

/** A TCP relay to the server that closes both sides of a connection when its client sends a ROLLBACK, which it does not forward. */
async function rollbackCutter(target: { host: string; port: number }) {
  const sockets = new Set<Socket>();
  let cuts = 0;
  const server = createServer((client) => {
    const upstream = connect(target.port, target.host);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('error', () => {});
      socket.on('close', () => {
        sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
    upstream.on('data', (data) => client.write(data));
    client.on('data', (data: Buffer) => {
      if (data.includes('ROLLBACK')) {
        cuts += 1;
        client.destroy();
        upstream.destroy();
        return;
      }
      upstream.write(data);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as { port: number }).port,
    cuts: () => cuts,
    close: () => {
      for (const socket of sockets) socket.destroy();
      server.close();
    },
  };
}

test('postgres sink: an insert the table refuses stops the sink at startup even when the connection fails before its ROLLBACK is answered', { timeout: 30_000 }, async (t) => {
  const db = await testSchema(t);
  // No unique index for the conflict target: the empty insert is refused with 42P10.
  await db.query(`CREATE TABLE ${db.name}.nokey (id uuid, device text)`);
  const url = new URL(db.url);
  const relay = await rollbackCutter({ host: url.hostname, port: Number(url.port || 5432) });
  t.after(() => relay.close());
  url.host = `127.0.0.1:${relay.port}`;
  const config = postgresSink.schema.parse({ url: url.toString(), table: `${db.name}.nokey`, columns: { id: '${id}', device: '${1}' }, batchTimeMs: 5, connectTimeoutMs: 2000 });
  const sink = postgresSink.create(config, { logger: pino({ level: 'silent' }), counters: new CounterRegistry(), dataDir: '/nonexistent', bridge: 'nokey', sourceFilters: [] });
  const input = new Subject<Delivery>();
  const nacks: string[] = [];
  const stopped = new Promise<unknown>((resolve) => {
    const subscription = sink(input).subscribe({ error: resolve, complete: () => resolve('completed') });
    t.after(() => subscription.unsubscribe());
  });
  const send = () =>
    input.next(
      createDelivery(createEnvelope({ topic: 'devices/d1/telemetry/t', payload: '{}', origin: { source: 'mqtt', clientId: 'd1', qos: 1 } }), {
        onAck: () => {},
        onNack: (error) => nacks.push(error.message),
      }),
    );
  send();
  // A message every 200 ms, as the buffer hands a nacked one again.
  const sending = setInterval(send, 200);
  t.after(() => clearInterval(sending));
  let timer: NodeJS.Timeout | undefined;
  const error = await Promise.race([stopped, new Promise((resolve) => (timer = setTimeout(() => resolve('still running after 5 s'), 5_000)))]);
  clearTimeout(timer);
  assert.ok(relay.cuts() >= 1, 'no ROLLBACK was cut off');
  assert.ok(isFerryError(error, 'CONFIG_INVALID'), `the sink did not stop for the mapping: ${String(error)} (nacks: ${nacks.slice(0, 3).join('; ')})`);
  assert.match(error.message, /nokey refuses the insert: SQLSTATE 42P10/);
});
