import { resolve } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { isFerryError, describeError } from '../core/errors.ts';
import { type GatewayConfig, loadGatewayConfig } from '../config/load.ts';
import { createLogger } from '../observability/logger.ts';
import { LogBridge } from '../observability/log-bridge.ts';
import { Gateway } from '../runtime/gateway.ts';
import { componentKinds } from '../runtime/registry.ts';
import { DataDirLock, lockPath } from '../runtime/data-dir-lock.ts';
import { loadForCommand } from './load.ts';
import { VERSION } from './version.ts';
import { collectStartupGarbage } from '../runtime/startup-garbage.ts';
import { resumeOptimizingCompilerUnderLoad } from '../runtime/compiler-tiering.ts';
import { capYoungGeneration } from '../runtime/young-generation.ts';

export interface RunOptions {
  readonly config: string;
  readonly mqttPort?: number;
  readonly adminPort?: number;
  readonly dataDir?: string;
  readonly logLevel?: string;
}

/**
 * The exit code after the gateway's storage could not be trusted any more (Gateway's
 * onRestartNeeded: the buffer found corrupt after the start by the check, an append, a sink's read or
 * the upkeep, a failed sync of the buffer's or the history's WAL, broker.db found corrupt): EX_TEMPFAIL, a failure that a new start resolves. systemd's `Restart=on-failure` and Docker's
 * `restart: on-failure` start the gateway again, which checks the buffer before it opens it.
 */
export const EXIT_RESTART = 75;

const levels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/**
 * How far V8 lets the old generation grow past what survived the last full GC, in percent.
 * Left to itself V8 grows it up to 4x while allocation is fast: under 20,000 messages/s the
 * gateway's heap reached ~150 MB (peak RSS ~290 MB) although less than 50 MB of it was live,
 * and the young-generation collections that dominate its GC time got slower with the large
 * old generation. End-to-end benchmark, 100,000 messages, 3 alternating rounds: at 40%,
 * peak RSS 188-199 MB and 34.9-40.8 CPU ms per 1,000 messages; at 50%, 197-207 MB and
 * 40.7-43.9 ms; at 30%, 189-196 MB and 43.5-49.1 ms (more full GCs); V8's default,
 * 278-290 MB and 43.7-47.3 ms. A flag the GC reads as it runs, so it can be set here rather
 * than on node's command line; one given there wins.
 */
const HEAP_GROWING_PERCENT = 40;

function limitHeapGrowth(): void {
  const given = process.execArgv.some((arg) => /heap[-_]growing[-_]percent/.test(arg));
  if (!given) setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
}

export async function runCommand(options: RunOptions): Promise<void> {
  limitHeapGrowth();
  // At most 8 MiB a semi-space, where V8 grows it to 16 under load (src/runtime/young-generation.ts).
  capYoungGeneration();
  const loaded = await loadForCommand(options.config);
  if (loaded === undefined) {
    process.exitCode = 1;
    return;
  }
  if (options.logLevel !== undefined && !(levels as readonly string[]).includes(options.logLevel)) {
    process.stderr.write(`ferry: --log-level must be one of ${levels.join(', ')}\n`);
    process.exitCode = 1;
    return;
  }
  const config = withOverrides(loaded, options);
  const lock = lockDataDir(config.dataDirPath);
  if (lock === undefined) {
    process.exitCode = 1;
    return;
  }
  const logBridge = config.telemetryExport === undefined ? undefined : new LogBridge();
  const logger = createLogger({ level: config.log.level, pretty: config.log.pretty, name: config.gateway.name, ...(logBridge === undefined ? {} : { bridge: logBridge }) });
  let stopping = false;
  const stop = (exitCode: number) => {
    stopping = true;
    gateway.stop().then(
      () => {
        lock.release();
        logger.flush();
        process.exit(exitCode);
      },
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed');
        logger.flush();
        process.exit(1);
      },
    );
  };
  // A reload reads the same files with the same command-line overrides.
  const gateway = new Gateway(config, logger, VERSION, {
    load: async () => withOverrides(await loadGatewayConfig(options.config, { kinds: componentKinds }), options),
    ...(logBridge === undefined ? {} : { logBridge }),
    onRestartNeeded: (why) => {
      if (stopping) return;
      logger.error({ reason: why, exitCode: EXIT_RESTART }, `${why}: stopping; exit code ${EXIT_RESTART} asks the service manager to start the gateway again`);
      stop(EXIT_RESTART);
    },
  });
  // Installed before the start, so that an early SIGHUP is refused (logged) rather than ending
  // the process. The gateway logs the outcome: what changed, or every problem of the config.
  process.on('SIGHUP', () => {
    if (stopping) return;
    logger.info({ signal: 'SIGHUP' }, 'reloading the config');
    gateway.reload().catch((error: unknown) => logger.error({ err: error }, 'reload failed'));
  });

  try {
    // performance.now() counts from process start, so this is the whole startup time.
    await gateway.start(0);
    // TurboFan, held back for the start by bin/ferry.js, comes back with the first load; the
    // start's own garbage collection is not load.
    const tiering = resumeOptimizingCompilerUnderLoad();
    collectStartupGarbage(() => tiering?.rebase());
  } catch (error) {
    const message = hintFor(error);
    logger.fatal(startErrorFields(error), message);
    process.stderr.write(`ferry: ${message}\n`);
    logger.flush();
    lock.release();
    process.exitCode = 1;
    return;
  }

  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now');
      logger.flush();
      process.exit(130);
    }
    logger.info({ signal }, 'shutting down (send the signal again to exit at once)');
    stop(0);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}

/** The data directory's lock (see DataDirLock), or undefined with the reason on stderr. */
function lockDataDir(dataDir: string): DataDirLock | undefined {
  let lock: DataDirLock | undefined;
  try {
    lock = DataDirLock.acquire(dataDir);
  } catch (error) {
    process.stderr.write(`ferry: cannot start: data directory ${dataDir}: ${describeError(error)} (choose it with --data-dir or gateway.dataDir)\n`);
    return undefined;
  }
  if (lock === undefined) {
    process.stderr.write(
      `ferry: the data directory ${dataDir} is in use by another gateway (\`ferry run\` or a program using Ferry's startGateway; it holds ${lockPath(dataDir)}): stop that gateway first, or give this one a directory of its own with --data-dir (or gateway.dataDir)\n`,
    );
  }
  return lock;
}

export function withOverrides(config: GatewayConfig, options: RunOptions): GatewayConfig {
  return {
    ...config,
    mqtt: { ...config.mqtt, ...(options.mqttPort === undefined ? {} : { port: options.mqttPort }) },
    admin: { ...config.admin, ...(options.adminPort === undefined ? {} : { port: options.adminPort }) },
    log: { ...config.log, ...(options.logLevel === undefined ? {} : { level: options.logLevel as GatewayConfig['log']['level'] }) },
    ...(options.dataDir === undefined ? {} : { dataDirPath: resolve(options.dataDir) }),
  };
}

/**
 * The fields a failed start is logged with. A taken port is the operator's to fix and the hint
 * says how: its code, component and cause, without the stack that pino writes for any `err`
 * (some 25 lines of internals in a terminal, above the hint).
 */
function startErrorFields(error: unknown): Record<string, unknown> {
  if (!isFerryError(error, 'PORT_IN_USE')) return { err: error };
  return { code: error.code, component: error.component, cause: describeError(error.cause) };
}

function hintFor(error: unknown): string {
  if (isFerryError(error, 'PORT_IN_USE')) {
    const flags: Record<string, string> = {
      'admin server': '--admin-port (or admin.port)',
      'mqtt tls listener': 'mqtt.tls.port',
      'mqtt websocket listener': 'mqtt.websocket.port',
    };
    const flag = flags[error.component ?? ''] ?? '--mqtt-port (or mqtt.port)';
    return `${error.message}: another program holds it; choose a free port with ${flag}`;
  }
  return `cannot start: ${describeError(error)}`;
}
