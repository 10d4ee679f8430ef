import type { Logger } from 'pino';
import { type AnyBridgeConfig, runsHandlers } from '../config/bridge-module.ts';
import type { GatewayConfig } from '../config/load.ts';
import { ConfigError } from '../config/issues.ts';
import type { Counters } from '../core/component.ts';
import { describeError } from '../core/errors.ts';
import type { DeviceAuthenticator } from '../mqtt/auth.ts';
import type { EmbeddedBroker } from '../mqtt/embedded-broker.ts';
import type { AdminServer } from './admin-server.ts';
import type { GatewayBridge } from './bridge.ts';
import { retire, swapBridges } from './bridge-swap.ts';
import type { Databases } from './databases.ts';
import type { GatewayStatus } from './gateway-status.ts';
import { type ReloadResult, applied, fileIssue, planBridges, refusedReload, reloadChanges, reloadedConfig } from './reload-plan.ts';
import { ListenerCertificates } from './tls-reload.ts';

/** What the gateway runs at a moment: a reload reads it when it begins and again after each wait. */
export interface RunningGateway {
  /** A reload applies only while the gateway is 'running' and its broker listens. */
  readonly state: GatewayStatus['state'];
  readonly broker: EmbeddedBroker | undefined;
  readonly config: GatewayConfig;
  readonly bridges: readonly GatewayBridge[];
  readonly databases: Databases | undefined;
  /** Device logins: given the new profiles and anonymous access. */
  readonly auth: DeviceAuthenticator | undefined;
  /** The admin server, when enabled: given the new admin token. */
  readonly admin: AdminServer | undefined;
}

/** What gateway.ts gives its reloader. */
export interface ReloaderOptions {
  /** Reads the config files again; throws a ConfigError. */
  readonly load: () => Promise<GatewayConfig>;
  readonly logger: Logger;
  readonly counters: Counters;
  readonly running: () => RunningGateway;
  /** A bridge of the new config on `broker`; its sinks read the buffer once `startAfter` settles. */
  readonly createBridge: (config: AnyBridgeConfig, broker: EmbeddedBroker, startAfter?: Promise<void>, commitAfter?: Promise<void>) => GatewayBridge;
  /** Takes the config and the bridges of a reload once nothing refused it. */
  readonly adopt: (config: GatewayConfig, bridges: GatewayBridge[]) => void;
}

/**
 * Reloads of a running gateway: reads the config files again and applies the bridges, device
 * profiles, databases, TLS listener files and admin token that changed, without closing any
 * device connection. A config with problems is refused with all of them and nothing changes.
 * Gateway settings that need a restart are reported as warnings. Reloads run one at a time;
 * requests made while one runs share the next one.
 */
export class GatewayReloader {
  /** Bridges a reload replaced or removed, until their sinks finished: a stop waits for them. */
  readonly retiring = new Map<GatewayBridge, Promise<void>>();
  /** The MQTT TLS listener's certificate, key and CA: renewed when their files changed. */
  readonly certificates = new ListenerCertificates();
  readonly #options: ReloaderOptions;
  /** The reload running (or done); the next one starts after it. */
  #reloading: Promise<unknown> = Promise.resolve();
  /** A reload waiting for the running one: later requests share it. */
  #queued: Promise<ReloadResult> | undefined;

  constructor(options: ReloaderOptions) {
    this.#options = options;
  }

  reload(): Promise<ReloadResult> {
    if (this.#queued !== undefined) return this.#queued;
    const next = this.#reloading.then(() => {
      this.#queued = undefined;
      return this.#reloadNow();
    });
    this.#queued = next;
    this.#reloading = next.catch(() => {});
    return next;
  }

  async #reloadNow(): Promise<ReloadResult> {
    const { counters, logger, running: now } = this.#options;
    const { state, broker, config: running, databases: current } = now();
    if (state !== 'running' || broker === undefined) return this.#notRunning();
    const began = performance.now();
    let next: GatewayConfig;
    try {
      next = await this.#options.load();
      if (runsHandlers(next.bridgeConfigs)) await current?.load(next.databases);
    } catch (error) {
      const errors = error instanceof ConfigError ? error.issues : [fileIssue(running.file, String(error))];
      return refusedReload({ ok: false, errors }, counters, logger);
    }
    // Loading takes a while (TypeScript bridges are imported): the gateway may have begun to stop meanwhile.
    const { state: after, bridges, auth, admin } = now();
    if (after !== 'running') return this.#notRunning();
    const failed = new Set(bridges.filter((b) => b.status().state === 'failed').map((b) => b.config.name));
    const plan = planBridges(running.bridgeConfigs, next.bridgeConfigs, failed);
    const loadedMs = Math.round(performance.now() - began);
    const changes = reloadChanges(running, next);
    const tls = this.certificates.renewal(running, next);
    if ('errors' in tls) return refusedReload({ ok: false, errors: tls.errors }, counters, logger);
    // New bridges get the new databases; the old instances close once the bridges they served stopped.
    const databases = current?.change(next.databases, changes.databases);
    const swap = swapBridges(bridges, plan, (config, startAfter, commitAfter) => this.#options.createBridge(config, broker, startAfter, commitAfter));
    if ('cause' in swap) {
      // Refused: the running bridges keep the databases as they were.
      await databases?.revert();
      const { config, cause } = swap;
      const errors = [fileIssue(config.file, `bridge '${config.name}' could not start: ${describeError(cause)}`)];
      return refusedReload({ ok: false, errors }, counters, logger);
    }
    const reloaded = reloadedConfig(running, next);
    this.#options.adopt(reloaded, swap.bridges);
    tls.apply();
    for (const { bridge, stopped } of swap.retired) this.retiring.set(bridge, stopped);
    if (changes.devices) auth?.updateAccess({ profiles: next.deviceProfiles, allowAnonymous: next.mqtt.allowAnonymous, anonymousAcl: next.mqtt.anonymousAcl });
    // Requests let in before (this reload's own among them) get their answers; the next ones need the new token.
    if (changes.adminToken !== undefined) admin?.replaceToken(reloaded.adminToken);
    // Answer once the old bridges finished, so that a second reload sees a settled gateway.
    const finished = Promise.all(swap.retired.map((r) => retire(r, reloaded.shutdown.drainTimeoutMs, logger).then(() => this.retiring.delete(r.bridge))));
    await finished;
    await databases?.commit(finished);
    counters.count('config.reloads', { result: 'applied' });
    const { result, message } = applied(plan, { ...changes, warnings: [...changes.warnings, ...tls.warnings] });
    logger[result.warnings.length === 0 ? 'info' : 'warn'](
      { reload: 'applied', ...result.applied, warnings: result.warnings, loadMs: loadedMs, ms: Math.round(performance.now() - began) },
      message,
    );
    return result;
  }

  /** A reload refused because the gateway is starting, draining or stopped. */
  #notRunning(): ReloadResult {
    const { state, config } = this.#options.running();
    const message = `the gateway is ${state === 'running' ? 'starting' : state}`;
    return refusedReload({ ok: false, notRunning: true, errors: [fileIssue(config.file, message)] }, this.#options.counters, this.#options.logger);
  }
}
