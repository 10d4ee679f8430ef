import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import { type AnyBridgeConfig, runsHandlers } from '../config/bridge-module.ts';
import { type GatewayConfig, loadGatewayConfig } from '../config/load.ts';
import { FerryError } from '../core/errors.ts';
import { steadyNow } from '../core/steady-clock.ts';
import { DEFER_CHECK_ABOVE_BYTES, checkBufferLater, openBuffer } from '../buffer/open.ts';
import type { BackgroundCheck } from '../sqlite/background-check.ts';
import type { BufferStore } from '../buffer/store.ts';
import { BufferWriter } from '../buffer/writer.ts';
import { DeviceAuthenticator } from '../mqtt/auth.ts';
import { EmbeddedBroker } from '../mqtt/embedded-broker.ts';
import { CounterRegistry } from '../observability/counters.ts';
import type { GatewayStatus } from './gateway-status.ts';
import { renderGatewayMetrics } from '../observability/gateway-metrics.ts';
import type { MetricsFormat } from '../observability/openmetrics.ts';
import { Vitals } from '../observability/vitals.ts';
import type { LogBridge } from '../observability/log-bridge.ts';
import { type Observability, startObservability } from './observability.ts';
import { StatusSeries } from './status-page/series.ts';
import { AdminServer } from './admin-server.ts';
import { brokerSettings } from './broker-options.ts';
import { type Health, HealthWatch, refusal } from './health.ts';
import type { GatewayBridge } from './bridge.ts';
import { createBridge } from './create-bridge.ts';
import { Databases } from './databases.ts';
import { componentKinds } from './registry.ts';
import { settlesWithin } from './bridge-swap.ts';
import type { ReloadResult } from './reload-plan.ts';
import { GatewayReloader } from './gateway-reload.ts';

export type { GatewayStatus };

/** How long the last telemetry export may take at shutdown once the drain deadline has passed. */
const TELEMETRY_GRACE_MS = 1000;

export interface GatewayOptions {
  /** Reads the config again for a reload; throws a ConfigError. By default loadGatewayConfig on the same file. */
  readonly load?: () => Promise<GatewayConfig>;
  /** The logger's hooks for trace ids and OTLP log export (see createLogger). */
  readonly logBridge?: LogBridge;
  /** Called once when storage cannot be trusted until the process restarts (the buffer found corrupt after the start by the check, an append, a sink's read or the upkeep, or a sync of the buffer's or the history's WAL failed, or broker.db or a history another bridge holds found corrupt); `ferry run` then stops and exits 75, so that a service manager starts it again. */
  readonly onRestartNeeded?: (why: string) => void;
}

/** The running gateway: the embedded broker, the bridges of the config and the admin server. `start` resolves once devices can connect; `stop` drains in-flight messages first. */
export class Gateway {
  readonly counters = new CounterRegistry();
  readonly #logger: Logger;
  readonly #version: string;
  /** By the steady clock: a step of the wall clock moves no uptime (nor makes it negative). */
  readonly #startedAt = steadyNow();
  #config: GatewayConfig;
  #broker: EmbeddedBroker | undefined;
  #auth: DeviceAuthenticator | undefined;
  #store: BufferStore | undefined;
  #writer: BufferWriter | undefined;
  #health: HealthWatch | undefined;
  #movedAside: string | undefined;
  #bufferCheck: BackgroundCheck | undefined; // the buffer's integrity check, when the start left it for later
  #admin: AdminServer | undefined;
  #databases: Databases | undefined;
  #vitals: Vitals | undefined;
  #observability: Observability | undefined;
  readonly #logBridge: LogBridge | undefined;
  #onRestartNeeded: ((why: string) => void) | undefined;
  #series: StatusSeries | undefined;
  #bridges: GatewayBridge[] = [];
  readonly #reloader: GatewayReloader;
  #state: GatewayStatus['state'] = 'running';
  /** The start, once called: a stop waits for it, as the start would go on to open what the stop closed. */
  #starting: Promise<void> | undefined;
  #startupMs = 0;

  constructor(config: GatewayConfig, logger: Logger, version: string, options: GatewayOptions = {}) {
    this.#config = config;
    this.#logger = logger;
    this.#version = version;
    this.#logBridge = options.logBridge;
    this.#onRestartNeeded = options.onRestartNeeded;
    this.#reloader = new GatewayReloader({
      load: options.load ?? (() => loadGatewayConfig(config.file, { kinds: componentKinds })),
      logger,
      counters: this.counters,
      running: () => ({ state: this.#state, broker: this.#broker, config: this.#config, bridges: this.#bridges, databases: this.#databases, auth: this.#auth, admin: this.#admin }),
      createBridge: (bridge, broker, startAfter, commitAfter) => this.#createBridge(bridge, broker, startAfter, commitAfter),
      adopt: (next, bridges) => {
        this.#config = next;
        this.#bridges = bridges;
      },
    });
  }

  /** The config running: the one started with, with the bridges and devices of the last reload. */
  get config(): GatewayConfig {
    return this.#config;
  }

  get mqttPort(): number {
    return this.#broker?.port ?? 0;
  }

  get adminPort(): number {
    return this.#admin?.port ?? 0;
  }

  /** Starts everything; `since` is the moment startup began (performance.now() scale). */
  start(since = performance.now()): Promise<void> {
    this.#starting = this.#start(since);
    return this.#starting;
  }

  async #start(since: number): Promise<void> {
    const { config } = this;
    mkdirSync(config.dataDirPath, { recursive: true });
    this.#databases = new Databases(config.databases, {
      logger: this.#logger.child({ component: 'databases' }),
      counters: this.counters,
      configDir: dirname(config.file),
      dataDir: config.dataDirPath,
      applicationName: config.gateway.name,
    });
    if (runsHandlers(config.bridgeConfigs)) await this.#databases.load();
    this.#vitals = new Vitals({ dataDir: config.dataDirPath, logger: this.#logger.child({ component: 'host' }), counters: this.counters });
    const vitals = this.#vitals;
    this.#series = new StatusSeries({ counters: this.counters, devices: () => this.#broker?.connectedClients ?? 0, vitals: () => vitals.latest() });
    let releaseAcks: ((passed: boolean) => void) | undefined;
    // Sinks read the buffer once the broker listens: a backlog's first window loads kafkajs (~50 ms).
    const listening = Promise.withResolvers<void>();
    try {
      const opened = openBuffer(config.dataDirPath, this.#logger, { deferCheckAbove: DEFER_CHECK_ABOVE_BYTES });
      this.#store = opened.store;
      this.#movedAside = opened.movedAside;
      if (opened.movedAside !== undefined) this.counters.count('buffer.recovered_from_corruption');
      this.#writer = new BufferWriter(opened.store, config.buffer, this.#logger.child({ component: 'buffer' }), this.counters);
      if (opened.checkDeferred) releaseAcks = this.#writer.holdAcks(); // until the check after the start
      this.#writer.onRestartNeeded = (why) => this.#restartNeeded(why);
      const observed = { logger: this.#logger, counters: this.counters, status: () => this.status(), version: this.#version };
      this.#observability = await startObservability(config, { ...observed, ...(this.#logBridge === undefined ? {} : { logBridge: this.#logBridge }) });
      this.#writer.tracing = this.#observability.tracing;
      this.#health = new HealthWatch({
        bridges: () => this.#bridges,
        store: () => this.#store,
        settings: () => this.#config.health,
        logger: this.#logger.child({ component: 'health' }),
        counters: this.counters,
      });
      if (config.admin.enabled) {
        this.#admin = await AdminServer.start(
          config.admin.host,
          config.admin.port,
          {
            ready: () => this.health(),
            status: () => this.status(),
            reload: () => this.reload(),
            metrics: (format) => this.metrics(format),
            series: (after) => this.#series?.since(after),
          },
          { ...(config.adminToken === undefined ? {} : { token: config.adminToken }), openMetrics: config.admin.openMetrics },
          { logger: this.#logger.child({ component: 'admin' }), counters: this.counters },
        );
      }
      // The broker listens only after the bridges tapped it, so no early message goes untapped.
      this.#broker = await EmbeddedBroker.start({
        ...this.#reloader.certificates.watch(brokerSettings(config, () => this.#restartNeeded('the broker state database is corrupt'))),
        auth: (this.#auth = new DeviceAuthenticator({
          profiles: config.deviceProfiles,
          allowAnonymous: config.mqtt.allowAnonymous,
          anonymousAcl: config.mqtt.anonymousAcl,
          maxConnectionsPerAddress: config.mqtt.maxConnectionsPerAddress,
          maxAuthFailures: config.mqtt.maxAuthFailures,
          loginChecks: config.mqtt.loginChecks,
          counters: this.counters,
        })),
        logger: this.#logger.child({ component: 'mqtt' }),
        counters: this.counters,
        beforeListen: (broker) => this.#startBridges(broker, listening.promise),
      });
    } catch (error) {
      // The sinks read the buffer only once the broker listens: none has anything to finish.
      await this.#closeAll(steadyNow(), false);
      throw error;
    }
    this.#startupMs = Math.round(performance.now() - since);
    this.#logger.info(
      {
        mqtt: `${config.mqtt.host}:${this.mqttPort}`,
        admin: this.#admin === undefined ? 'off' : `http://${config.admin.host}:${this.adminPort}`,
        listeners: this.#broker?.listeners.map((l) => `${l.protocol}://${l.host}:${l.port}`),
        bridges: this.#bridges.map((b) => b.config.name),
        startupMs: this.#startupMs,
      },
      `accepting MQTT connections on ${config.mqtt.host}:${this.mqttPort} (ready in ${this.#startupMs} ms)`,
    );
    listening.resolve();
    this.#observability?.startCollector();
    if (releaseAcks)
      this.#bufferCheck = checkBufferLater(config.dataDirPath, this.#logger.child({ component: 'buffer' }), this.counters, releaseAcks, () =>
        this.#restartNeeded('the integrity check after the start found the buffer corrupt'),
      );
  }

  /** Once, while running, in a turn of its own (not inside the writer's commit): a restart checks the buffer before it opens it (moving a corrupt one aside) and SQLite recovers its WAL from the disk. */
  #restartNeeded(why: string): void {
    const notify = this.#onRestartNeeded;
    this.#onRestartNeeded = undefined;
    if (notify !== undefined) setImmediate(() => this.#state === 'running' && notify(why));
  }

  /** Stops taking connections, waits up to the drain timeout for in-flight messages, then closes. */
  async stop(): Promise<boolean> {
    // A start that failed closed what it had opened: nothing is left to drain.
    const started = await (this.#starting?.then(
      () => true,
      () => false,
    ) ?? true);
    if (this.#state !== 'running') return true;
    if (!started) {
      this.#state = 'stopped';
      return true;
    }
    this.#state = 'draining';
    const timeout = this.config.shutdown.drainTimeoutMs;
    this.#logger.info({ inFlight: this.#broker?.inFlight ?? 0, timeoutMs: timeout }, 'draining');
    // By the steady clock: a step of the wall clock while draining neither cuts the sinks' time nor lengthens it.
    const deadline = steadyNow() + timeout;
    const drained = (await this.#broker?.drain(timeout)) ?? true;
    if (!drained) this.#logger.warn({ inFlight: this.#broker?.inFlight }, 'drain timed out; unacknowledged messages will be sent again by their devices');
    // Sinks finish the windows they hold; what they did not confirm stays buffered for the next start.
    this.#health?.warnStuck(Math.max(0, Math.round(deadline - steadyNow())));
    await this.#closeAll(deadline);
    this.#state = 'stopped';
    this.#logger.info('stopped');
    return drained;
  }

  /**
   * Ready while the gateway takes device traffic: not while it starts or drains, nor while the
   * buffer refuses device messages (a bridge full under `refuse`, a full or failing disk). Trouble
   * upstream (a sink down or hung, an old backlog, a handler holding or failing) is listed as
   * degraded without making the gateway unready: devices are still acknowledged.
   */
  health(): Health {
    const degraded = this.#health?.check() ?? [];
    const reason = refusal(this.#state, this.#broker !== undefined, this.#writer);
    return { ready: reason === undefined, ...(reason === undefined ? {} : { reason }), degraded };
  }

  status(): GatewayStatus {
    const listeners: GatewayStatus['listeners'][number][] = [];
    for (const l of this.#broker?.listeners ?? []) listeners.push({ protocol: l.protocol, host: l.host, port: l.port, clients: l.connections });
    if (this.#admin !== undefined) listeners.push({ protocol: 'http', host: this.config.admin.host, port: this.#admin.port });
    return {
      gateway: this.config.gateway.name,
      version: this.#version,
      state: this.#state,
      uptimeSeconds: Math.round((steadyNow() - this.#startedAt) / 1000),
      startupMs: this.#startupMs,
      dataDir: this.config.dataDirPath,
      listeners,
      bridges: this.#bridges.map((b) => b.status()),
      inFlight: this.#broker?.inFlight ?? 0,
      buffer: {
        state: this.#writer?.state ?? 'ok',
        held: this.#writer?.held ?? 0,
        ...(this.#movedAside === undefined ? {} : { movedAside: this.#movedAside }),
        bridges: this.#bridges.map((b) => (this.#store as BufferStore).stats(b.config.name, { kept: true })),
      },
      health: this.health(),
      counters: this.counters.snapshot(),
      ...(this.#vitals?.latest() ?? { host: null, eventLoop: null }),
    };
  }

  /** Counters and the current state (buffer depth per bridge and sink, dead letters, devices connected, messages awaiting their acknowledgement) in the Prometheus text format, or OpenMetrics. */
  metrics(format: MetricsFormat = 'prometheus'): string {
    return renderGatewayMetrics(this.status(), this.counters, Date.now(), format);
  }

  /** Reads the config files again and applies what changed, or refuses it with every problem found (gateway-reload.ts). */
  reload(): Promise<ReloadResult> {
    return this.#reloader.reload();
  }

  #startBridges(broker: EmbeddedBroker, startAfter: Promise<void>): void {
    if (this.#config.bridgeModules.length > 0)
      throw new FerryError('CONFIG_INVALID', `TypeScript bridges not loaded (${this.#config.bridgeModules.join(', ')}): load the config with loadGatewayConfig`);
    for (const bridge of this.#config.bridgeConfigs) {
      if (!bridge.enabled) {
        this.#logger.info({ bridge: bridge.name, file: bridge.file }, 'bridge disabled');
        continue;
      }
      this.#bridges.push(this.#createBridge(bridge, broker, startAfter));
    }
  }

  /** A running bridge; with `startAfter`, its sinks read the buffer once that settles. */
  #createBridge(config: AnyBridgeConfig, broker: EmbeddedBroker, startAfter?: Promise<void>, commitAfter?: Promise<void>): GatewayBridge {
    return createBridge(config, {
      broker,
      store: this.#store as BufferStore,
      writer: this.#writer as BufferWriter,
      logger: this.#logger,
      counters: this.counters,
      dataDir: this.#config.dataDirPath,
      restartNeeded: (why) => this.#restartNeeded(why),
      ...(this.#databases === undefined ? {} : { databases: this.#databases }),
      ...(startAfter === undefined ? {} : { startAfter }),
      ...(commitAfter === undefined ? {} : { commitAfter }),
    });
  }

  /** Closes everything; the sinks and the last telemetry export get until `deadline` (a steadyNow() value). */
  async #closeAll(deadline: number, sinksRead = true): Promise<void> {
    this.#health?.stop();
    this.#series?.stop();
    this.#bufferCheck?.stop();
    this.#vitals?.stop();
    this.#writer?.flushNow();
    const bridges = [...this.#bridges, ...this.#reloader.retiring.keys()];
    const stopping = [...this.#bridges.map((b) => b.stop()), ...this.#reloader.retiring.values()];
    const timedOut = !(await settlesWithin(Promise.all(stopping), Math.max(0, deadline - steadyNow())));
    if (timedOut && sinksRead) this.#logger.warn('sinks did not finish in time; their unconfirmed messages stay buffered');
    for (const bridge of bridges) bridge.abort();
    // The last export reads the status, which needs the buffer open. A collector that is down or
    // hangs would hold it for each exporter's retries and timeout: it gets what is left of the
    // drain deadline, or a short grace when the sinks used all of it.
    const telemetryMs = Math.max(Math.round(deadline - steadyNow()), TELEMETRY_GRACE_MS);
    if (this.#observability !== undefined && !(await settlesWithin(this.#observability.stop(), telemetryMs)))
      this.#logger.warn({ timeoutMs: telemetryMs }, `the last telemetry export did not finish within ${telemetryMs} ms; the spans, metrics and logs it held are dropped`);
    this.#writer?.close();
    await this.#databases?.close();
    await this.#broker?.close();
    await this.#admin?.close();
    this.#store?.close();
  }
}
