import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Logger } from 'pino';
import { stringify } from 'yaml';
import { withOverrides, type RunOptions } from '../cli/run.ts';
import { VERSION } from '../cli/version.ts';
import { type GatewayConfig, loadGatewayConfig } from '../config/load.ts';
import { createLogger } from '../observability/logger.ts';
import { Gateway, type GatewayStatus } from '../runtime/gateway.ts';
import type { ReloadResult } from '../runtime/reload-plan.ts';
import { componentKinds } from '../runtime/registry.ts';
import { absolutePaths } from '../config/embedded-config.ts';
import { DataDirLock, lockPath } from '../runtime/data-dir-lock.ts';
import { FerryError } from '../core/errors.ts';

export type { GatewayStatus } from '../runtime/gateway.ts';
export type { ReloadResult } from '../runtime/reload-plan.ts';

/** What `ferry run`'s flags override: `0` for a port picks a free one. */
export type GatewayOverrides = Omit<RunOptions, 'config'>;

export type StartGatewayOptions = (
  | {
      /** A gateway config file (config/gateway.yaml), with the bridges and devices it names. */
      readonly configPath: string;
      readonly config?: undefined;
    }
  | {
      /**
       * The contents of a gateway config file, as an object. Relative paths in it
       * (`gateway.dataDir`, `bridges`, `devices`, TLS and token files, a PostgreSQL database's
       * password and TLS files) are relative to `baseDir`; without them, the data directory is
       * `<baseDir>/data` and there are no bridge or device files.
       */
      readonly config: Readonly<Record<string, unknown>>;
      readonly baseDir?: string;
      readonly configPath?: undefined;
    }
) & {
  readonly overrides?: GatewayOverrides;
  /** Where the gateway logs; by default pino JSON lines on standard output at the config's `log.level`. */
  readonly logger?: Logger;
  /**
   * Called once when storage cannot be trusted until the gateway starts again: the integrity
   * check after the start, an append, a sink's read or the upkeep found the buffer corrupt, or a sync of its WAL failed
   * (nothing is acknowledged from then on), or a sync of the history's WAL failed (the history is not
   * written), or a write found broker.db (sessions, retained messages) corrupt. Stop the gateway and start a new one (with the same data directory), which moves a
   * corrupt buffer aside first. `ferry run` exits 75 for its service manager.
   */
  readonly onRestartNeeded?: (why: string) => void;
};

export interface GatewayHandle {
  /** Resolves once devices can connect (rejects when the gateway cannot start). */
  readonly ready: Promise<void>;
  /** The MQTT and admin ports the gateway listens on (0 before `ready`). */
  readonly mqttPort: number;
  readonly adminPort: number;
  /** What `GET /api/status` answers: bridges, buffer depths, health, counters. */
  status(): GatewayStatus;
  /** Reads the config again and applies what changed, as SIGHUP does; refused with every problem listed. */
  reload(): Promise<ReloadResult>;
  /**
   * Drains in-flight messages and stops; resolves true when everything drained in time. Called
   * before `ready` settled, it waits for the start to end first.
   */
  stop(): Promise<boolean>;
}

/**
 * Starts a gateway in this process, as `ferry run` does: the embedded broker, the bridges of
 * the config and the admin server. The config is validated first: an invalid one rejects
 * `startGateway` with a ConfigError listing every problem by file, line and key path.
 *
 * ```ts
 * const gateway = await startGateway({ configPath: 'config/gateway.yaml', overrides: { mqttPort: 0, adminPort: 0 } });
 * await gateway.ready;
 * console.log(gateway.status().bridges);
 * await gateway.stop();
 * ```
 */
export async function startGateway(options: StartGatewayOptions): Promise<GatewayHandle> {
  const overrides: RunOptions = { config: '', ...options.overrides };
  let cleanup = () => {};
  let configPath: string;
  if (options.configPath !== undefined) {
    configPath = resolve(options.configPath);
  } else {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-gateway-'));
    cleanup = () => rmSync(dir, { recursive: true, force: true });
    configPath = join(dir, 'gateway.yaml');
    writeFileSync(configPath, stringify(absolutePaths(options.config, resolve(options.baseDir ?? process.cwd()))));
  }
  const load = async (): Promise<GatewayConfig> => withOverrides(await loadGatewayConfig(configPath, { kinds: componentKinds }), overrides);
  let config: GatewayConfig;
  try {
    config = await load();
  } catch (error) {
    cleanup();
    throw error;
  }
  // The data directory's lock, as `ferry run` takes it: a second gateway on the directory would
  // deliver the same buffer and take the first one's connected sessions for a crash's leftovers.
  let lock: DataDirLock | undefined;
  try {
    lock = DataDirLock.acquire(config.dataDirPath);
  } catch (error) {
    cleanup();
    throw error;
  }
  if (lock === undefined) {
    cleanup();
    throw new FerryError(
      'CONFIG_INVALID',
      `the data directory ${config.dataDirPath} is in use by another gateway (it holds ${lockPath(config.dataDirPath)}): give this one a directory of its own`,
    );
  }
  const held = lock;
  const previousCleanup = cleanup;
  cleanup = () => {
    held.release();
    previousCleanup();
  };
  const logger = options.logger ?? createLogger({ level: config.log.level, pretty: 'never', name: config.gateway.name });
  const gateway = new Gateway(config, logger, VERSION, { load, ...(options.onRestartNeeded === undefined ? {} : { onRestartNeeded: options.onRestartNeeded }) });
  const ready = gateway.start();
  ready.catch(() => cleanup());
  return {
    ready,
    get mqttPort() {
      return gateway.mqttPort;
    },
    get adminPort() {
      return gateway.adminPort;
    },
    status: () => gateway.status(),
    reload: () => gateway.reload(),
    // A stop while the gateway starts waits for the start to end: the gateway's own stop, run
    // halfway through its start, closed the buffer and returned while the start went on to open
    // the listeners, which then stayed open on a closed buffer. A start that failed closed
    // everything it opened: nothing is left to drain.
    stop: async () => {
      try {
        const started = await ready.then(
          () => true,
          () => false,
        );
        return started ? await gateway.stop() : true;
      } finally {
        cleanup();
      }
    },
  };
}
