// Plain aedes with no hooks, in its own process like the gateway: the baseline of the ingest
// benchmark. Listens on 127.0.0.1 (port from argv, 0 for a free one) and prints `port <n>`.
import { once } from 'node:events';
import { createServer } from 'node:net';
import { Aedes } from 'aedes';

const aedes = await Aedes.createBroker();
const server = createServer((socket) => aedes.handle(socket));
server.listen(Number(process.argv[2] ?? 0), '127.0.0.1');
await once(server, 'listening');
const address = server.address();
process.stdout.write(`port ${typeof address === 'object' && address !== null ? address.port : 0}\n`);
process.on('SIGTERM', () => {
  server.close();
  aedes.close(() => process.exit(0));
});
