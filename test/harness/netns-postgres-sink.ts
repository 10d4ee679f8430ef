// A postgres sink in a network namespace of its own (run by `unshare -n`), reaching the server
// through a relay on the namespace's loopback to the server's Unix socket. Taking that loopback
// down drops every packet silently in the kernel: a network cut off as the sink's TCP meets it
// (no reply, no RST, keepalive probes unanswered), which a relay in user space cannot show (its
// kernel answers them). Driven over IPC by test/integration/postgres-cut-waits.test.ts:
// 'send' hands the sink the next message, 'cut' and 'restore' take the loopback down and up;
// it reports { ready }, { acked }, { nacked, code }, { cut } and { restored }, with times from
// performance.now().
import { execFileSync } from 'node:child_process';
import { connect, createServer } from 'node:net';
import pino from 'pino';
import { Subject } from 'rxjs';
import { createDelivery, type Delivery } from '../../src/core/delivery.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { postgresSink } from '../../src/postgres/sink.ts';

const { SOCKET, USER, DATABASE, TABLE, STATEMENT_TIMEOUT_MS, CONNECT_TIMEOUT_MS } = process.env as Record<string, string>;
const report = (message: Record<string, unknown>) => process.send?.({ ...message, at: performance.now() });
const loopback = (state: 'up' | 'down') => execFileSync('ip', ['link', 'set', 'lo', state]);

loopback('up');
const relay = createServer((client) => {
  const upstream = connect(SOCKET as string);
  client.pipe(upstream).pipe(client);
  client.on('error', () => upstream.destroy());
  upstream.on('error', () => client.destroy());
});
await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
const port = (relay.address() as { port: number }).port;

const config = postgresSink.schema.parse({
  url: `postgres://${USER}@127.0.0.1:${port}/${DATABASE}`,
  table: TABLE,
  columns: { id: '${id}', seq: '${payload.seq}' },
  batchSize: 1,
  concurrency: 1,
  statementTimeoutMs: Number(STATEMENT_TIMEOUT_MS),
  connectTimeoutMs: Number(CONNECT_TIMEOUT_MS),
});
const sink = postgresSink.create(config, { logger: pino({ level: 'silent' }), counters: new CounterRegistry(), dataDir: '/nonexistent', bridge: 'cut', sourceFilters: [] });
const input = new Subject<Delivery>();
// As the buffer does: a message nacked retryably is handed to the sink again.
const send = (seq: number, envelope = createEnvelope({ topic: 't', payload: JSON.stringify({ seq }), origin: { source: 'mqtt', clientId: 'd', qos: 1 } })) =>
  input.next(
    createDelivery(envelope, {
      onAck: () => report({ acked: seq }),
      onNack: (error) => {
        report({ nacked: seq, code: (error as { code?: unknown }).code, message: error.message });
        setTimeout(() => send(seq, envelope), 200);
      },
    }),
  );
const subscription = sink(input).subscribe();
let next = 0;
process.on('message', (message) => {
  if (message === 'send') send(next++);
  else if (message === 'cut') {
    loopback('down');
    report({ cut: true });
  } else if (message === 'restore') {
    loopback('up');
    report({ restored: true });
  } else if (message === 'exit') {
    subscription.unsubscribe();
    relay.close();
    process.exit(0);
  }
});
report({ ready: true });
