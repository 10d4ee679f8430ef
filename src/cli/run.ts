import { resolve } from 'node:path';
import { isFerryError, describeError } from '../core/errors.ts';
import { type GatewayConfig, loadGatewayConfig } from '../config/load.ts';
import { createLogger } from '../observability/logger.ts';
import { Gateway } from '../runtime/gateway.ts';
import { componentKinds } from '../runtime/registry.ts';
import { loadForCommand } from './load.ts';
import { VERSION } from './version.ts';

export interface RunOptions {
  readonly config: string;
  readonly mqttPort?: number;
  readonly adminPort?: number;
  readonly dataDir?: string;
  readonly logLevel?: string;
}

const levels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

export async function runCommand(options: RunOptions): Promise<void> {
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
  const logger = createLogger({ level: config.log.level, pretty: config.log.pretty, name: config.gateway.name });
  // A reload reads the same files with the same command-line overrides.
  const gateway = new Gateway(config, logger, VERSION, { load: async () => withOverrides(await loadGatewayConfig(options.config, { kinds: componentKinds }), options) });
  let stopping = false;
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
  } catch (error) {
    const message = hintFor(error);
    logger.fatal({ err: error }, message);
    process.stderr.write(`ferry: ${message}\n`);
    logger.flush();
    process.exitCode = 1;
    return;
  }

  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now');
      logger.flush();
      process.exit(130);
    }
    stopping = true;
    logger.info({ signal }, 'shutting down (send the signal again to exit at once)');
    gateway.stop().then(
      () => {
        logger.flush();
        process.exit(0);
      },
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed');
        logger.flush();
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}

function withOverrides(config: GatewayConfig, options: RunOptions): GatewayConfig {
  return {
    ...config,
    mqtt: { ...config.mqtt, ...(options.mqttPort === undefined ? {} : { port: options.mqttPort }) },
    admin: { ...config.admin, ...(options.adminPort === undefined ? {} : { port: options.adminPort }) },
    log: { ...config.log, ...(options.logLevel === undefined ? {} : { level: options.logLevel as GatewayConfig['log']['level'] }) },
    ...(options.dataDir === undefined ? {} : { dataDirPath: resolve(options.dataDir) }),
  };
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
