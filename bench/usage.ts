// What `npm run bench -- --help` prints: the scenarios, what each needs, the options and the
// environment variables that size the runs.

/** Each scenario with what it measures and, in brackets, what it needs beyond Node. */
export const SCENARIO_HELP = {
  buffer: 'the durable buffer: enqueue and drain against raw better-sqlite3; buffer stats with a backlog',
  packing: "what the buffer's packs save: a row a message (as before packs) against the buffer's packs and a bare row per commit, written, read back and deleted",
  guard: "the packet-size guard's cost in aedes, QoS 0",
  ingest: 'QoS 1 and QoS 0 ingest into the gateway against plain aedes (and Mosquitto when installed)',
  e2e: "devices to Kafka through the gateway against plain aedes ingest, a naive bridge and Kafka's own producer [Kafka]",
  steady: "the gateway's CPU at steady rates to Kafka against plain aedes [Kafka]",
  distant: 'a backlog drained into a Kafka and a Mosquitto 0, 20 and 50 ms away, with the defaults and with larger settings [Kafka; mosquitto for its part]',
  payloads: 'payloads of 200 B, 2 KiB and 16 KiB end to end, and the Kafka encoding per size [Kafka]',
  devices: 'memory per idle connected device (10,000 devices)',
  kafkaclient: 'kafkajs (patched) against @platformatic/kafka, producing the same records [Kafka]',
  handler: 'a TypeScript handler bridge against the YAML bridge, each to Kafka [Kafka]',
  state: "the broker's state on disk against in memory, and a start with many saved sessions",
  external: 'an external broker (Mosquitto) as the source against the embedded broker [Kafka, mosquitto]',
  postgres: 'the postgres sink against a raw COPY, and devices to PostgreSQL end to end [PostgreSQL]',
  startup: 'start to accepting connections and idle memory of the embedded default, compiled and from sources; idle CPU; a start with a backlog',
  telemetry: 'OTLP export and the eBPF collector against telemetry off, end to end [Kafka; bpftrace for eBPF]',
  ratelimit: 'a Redis rate limit that limits nothing against none [Redis]',
} as const;

export type Scenario = keyof typeof SCENARIO_HELP;
export const SCENARIOS = Object.keys(SCENARIO_HELP) as Scenario[];

/** Environment variables the scenarios read, with their defaults. */
const ENVIRONMENT: readonly (readonly [name: string, what: string])[] = [
  ['FERRY_BENCH_MESSAGES', 'buffer: messages enqueued and drained (100000)'],
  ['FERRY_BENCH_STATUS_BACKLOG', "buffer: the backlog behind a down sink for the stats' measure (1000000)"],
  ['FERRY_BENCH_PACKING_MESSAGES', 'packing: messages written a round, a multiple of 1,024 (307200)'],
  ['FERRY_BENCH_INGEST_MESSAGES', 'ingest, ratelimit: QoS 1 messages a round, QoS 0 four times as many (50000)'],
  ['FERRY_BENCH_E2E_MESSAGES', 'e2e: messages a round (100000)'],
  ['FERRY_BENCH_E2E_ROUNDS', 'e2e: alternating rounds (3)'],
  ['FERRY_BENCH_NAIVE_MESSAGES', 'e2e: messages through the naive bridge (10000)'],
  ['FERRY_BENCH_WARMUP_MS', 'ms each broker is kept under load before it is measured; 0: one burst (1500)'],
  ['FERRY_BENCH_STEADY_RATES', 'steady: the rates, msgs/s (500,2000,8000)'],
  ['FERRY_BENCH_DISTANT_MESSAGES', 'distant: messages in the backlog (50000)'],
  ['FERRY_BENCH_DISTANT_RTTS', "distant: Kafka's round trips, ms (0,20,50)"],
  ['FERRY_BENCH_PAYLOAD_MESSAGES', 'payloads: messages of 200 B, fewer of the larger (50000)'],
  ['FERRY_BENCH_DEVICES', 'devices: idle devices connected (10000)'],
  ['FERRY_BENCH_KAFKA_CLIENT_RECORDS', 'kafkaclient: records a round (100000)'],
  ['FERRY_BENCH_HANDLER_MESSAGES', 'handler: messages a round (50000)'],
  ['FERRY_BENCH_EXTERNAL_MESSAGES', 'external: messages a round (50000)'],
  ['FERRY_BENCH_PG', 'postgres: the server (FERRY_TEST_PG, else postgres://postgres@127.0.0.1:5432/postgres)'],
  ['FERRY_BENCH_PG_ROWS', 'postgres: rows a round of the sink against COPY (50000)'],
  ['FERRY_BENCH_PG_E2E_MESSAGES', 'postgres: messages devices publish end to end (20000)'],
  ['FERRY_BENCH_PG_BATCH', "postgres: the sink's batch size (500)"],
  ['FERRY_BENCH_PG_ROUNDS', 'postgres: alternating rounds (5)'],
  ['FERRY_BENCH_PG_CONCURRENCY', "postgres: the sink's concurrency (its default)"],
  ['FERRY_BENCH_STARTUP_ROUNDS', 'startup: fresh processes of each build (5)'],
  ['FERRY_BENCH_STARTUP_BACKLOG', 'startup: messages in the buffer for the start with a backlog (1000000, about 400 MB of disk)'],
  ['FERRY_BENCH_DROP_CACHES', 'startup: 1 empties the page cache before each start with the backlog (root only)'],
  ['FERRY_BENCH_TELEMETRY_MESSAGES', 'telemetry: messages a round (50000)'],
  ['FERRY_BENCH_TELEMETRY_ROUNDS', 'telemetry: alternating rounds (3)'],
  ['FERRY_TEST_REDIS', 'ratelimit: the Redis (redis://127.0.0.1:6379)'],
];

export function usage(): string {
  const width = Math.max(...SCENARIOS.map((s) => s.length));
  const envWidth = Math.max(...ENVIRONMENT.map(([name]) => name.length));
  return [
    'Usage: npm run bench [-- [scenario...] [--out <file>] [--profile <dir>]]',
    '',
    'Measures Ferry against baselines started in the same run on this machine, prints a table of',
    "ratios and issue 11's goals (met or not), and writes every figure as JSON. Absolute rates",
    'depend on the machine; compare the ratios. With no scenario named, all of them run.',
    '',
    'Scenarios ([...]: what it needs besides Node; Kafka is a broker the run starts on loopback,',
    'which takes Java 17 and Maven to fetch its jars):',
    ...SCENARIOS.map((s) => `  ${s.padEnd(width)}  ${SCENARIO_HELP[s]}`),
    '',
    'Options:',
    '  --out <file>       where the results go (default bench/results.json)',
    '  --profile <dir>    CPU profiles of the gateways under the end-to-end, payload-size and',
    '                     external-broker loads (node --cpu-prof), written to <dir>',
    '  --only <s[,s]>     the same as naming scenarios',
    '  -h, --help         this help',
    '',
    'Environment (defaults in brackets):',
    ...ENVIRONMENT.map(([name, what]) => `  ${name.padEnd(envWidth)}  ${what}`),
    '',
    'Example: npm run bench -- ingest e2e --out /tmp/run.json',
    '',
  ].join('\n');
}
