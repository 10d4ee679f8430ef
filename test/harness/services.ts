import { randomBytes } from 'node:crypto';
import { canConnect, describeTarget, type TcpTarget } from './net.ts';

export type ServiceName = 'kafka' | 'pg' | 'redis' | 'mqtt';

export interface TestEndpoints {
  /** Kafka bootstrap brokers ("host:port"); empty when FERRY_TEST_KAFKA is unset. */
  kafka: string[];
  /** PostgreSQL connection URL. */
  pg: string;
  /** Redis URL. */
  redis: string;
  /** URL of the external MQTT broker (Mosquitto). */
  mqtt: string;
}

export type ServiceCheck<N extends ServiceName> = { ok: true; endpoint: TestEndpoints[N] } | { ok: false; error: string };

interface ServiceInfo {
  label: string;
  envVar: string;
  /** Completes "... is not reachable at X (ENV): <fix>". */
  fix: string;
}

const REACH_TIMEOUT_MS = 2000;

const SERVICES: Record<ServiceName, ServiceInfo> = {
  kafka: {
    label: 'Kafka',
    envVar: 'FERRY_TEST_KAFKA',
    fix: 'run the suite through `npm test`, which starts one, or `npm run services` and export FERRY_TEST_KAFKA',
  },
  pg: {
    label: 'PostgreSQL',
    envVar: 'FERRY_TEST_PG',
    fix: 'start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` or point FERRY_TEST_PG at your server',
  },
  redis: {
    label: 'Redis',
    envVar: 'FERRY_TEST_REDIS',
    fix:
      'start it with `redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no ' +
      '--dir /var/lib/redis --logfile /var/log/redis/ci.log` or point FERRY_TEST_REDIS at your server',
  },
  mqtt: {
    label: 'Mosquitto',
    envVar: 'FERRY_TEST_MQTT',
    fix: 'start it with `mosquitto -d -c /etc/mosquitto/mosquitto.conf` or point FERRY_TEST_MQTT at your broker',
  },
};

export function serviceEnvVar(name: ServiceName): string {
  return SERVICES[name].envVar;
}

export function serviceLabel(name: ServiceName): string {
  return SERVICES[name].label;
}

export function testEndpoints(env: NodeJS.ProcessEnv = process.env): TestEndpoints {
  return {
    kafka: (env['FERRY_TEST_KAFKA'] ?? '')
      .split(',')
      .map((broker) => broker.trim())
      .filter((broker) => broker !== ''),
    pg: env['FERRY_TEST_PG'] || 'postgres://postgres@127.0.0.1:5432/test',
    redis: env['FERRY_TEST_REDIS'] || 'redis://127.0.0.1:6379',
    mqtt: env['FERRY_TEST_MQTT'] || 'mqtt://127.0.0.1:1883',
  };
}

/** Reachability check (TCP connect, 2 s timeout) that reports a one-line hint instead of throwing. */
export async function checkService<N extends ServiceName>(name: N): Promise<ServiceCheck<N>> {
  const info = SERVICES[name];
  const endpoint = testEndpoints()[name];
  if (name === 'kafka' && endpoint.length === 0) {
    return { ok: false, error: `Kafka is not configured (FERRY_TEST_KAFKA is unset): ${info.fix}` };
  }
  let targets: TcpTarget[];
  try {
    targets = tcpTargets(name, endpoint);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    return { ok: false, error: `${info.envVar} is not a valid ${info.label} address (${reason}): ${info.fix}` };
  }
  const reachable = await Promise.all(targets.map((target) => canConnect(target, REACH_TIMEOUT_MS)));
  if (reachable.some(Boolean)) return { ok: true, endpoint };
  const where = targets.map(describeTarget).join(', ');
  return { ok: false, error: `${info.label} is not reachable at ${where} (${info.envVar}): ${info.fix}` };
}

/**
 * The endpoint of a service the calling test needs. Throws (so the test fails, never skips)
 * with a one-line hint naming the env var and how to start the service when it is unreachable.
 */
export async function requireService<N extends ServiceName>(name: N): Promise<TestEndpoints[N]> {
  const check = await checkService(name);
  if (!check.ok) throw new Error(check.error);
  return check.endpoint;
}

/** `prefix` + 12 random hex chars, for per-test topic/table/key/channel names. */
export function randomName(prefix: string): string {
  return prefix + randomBytes(6).toString('hex');
}

const DEFAULT_PORTS: Record<string, number> = {
  'postgres:': 5432,
  'postgresql:': 5432,
  'redis:': 6379,
  'rediss:': 6379,
  'mqtt:': 1883,
  'tcp:': 1883,
  'mqtts:': 8883,
  'ssl:': 8883,
  'tls:': 8883,
  'ws:': 80,
  'wss:': 443,
};

function tcpTargets(name: ServiceName, endpoint: string | string[]): TcpTarget[] {
  if (Array.isArray(endpoint)) return endpoint.map(parseHostPort);
  const url = new URL(endpoint);
  // libpq style unix socket: postgres:///db?host=/var/run/postgresql
  const socketDir = url.searchParams.get('host');
  const defaultPort = DEFAULT_PORTS[url.protocol];
  if (defaultPort === undefined) throw new Error(`unsupported scheme ${url.protocol}`);
  const port = url.port ? Number(url.port) : defaultPort;
  if (name === 'pg' && socketDir?.startsWith('/')) return [{ path: `${socketDir}/.s.PGSQL.${port}` }];
  return [{ host: stripBrackets(url.hostname) || '127.0.0.1', port }];
}

function parseHostPort(broker: string): TcpTarget {
  const match = /^\[?([^\]]+?)\]?:(\d+)$/.exec(broker);
  if (!match) throw new Error(`"${broker}" is not host:port`);
  return { host: match[1] ?? '', port: Number(match[2]) };
}

function stripBrackets(host: string): string {
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}
