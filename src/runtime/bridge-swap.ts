import type { Logger } from 'pino';
import type { AnyBridgeConfig } from '../config/bridge-module.ts';
import type { GatewayBridge } from './bridge.ts';
import type { BridgePlan } from './reload-plan.ts';

/**
 * Builds and starts a bridge; with `startAfter`, its sinks read the buffer once that settles;
 * with `commitAfter`, it removes cursors of sinks it does not have only once that settles.
 */
export type BridgeFactory = (config: AnyBridgeConfig, startAfter?: Promise<void>, commitAfter?: Promise<void>) => GatewayBridge;

/** A bridge leaving in a reload: its stop, and the gate of the bridge replacing it. */
export interface Retired {
  readonly bridge: GatewayBridge;
  readonly stopped: Promise<void>;
  readonly open?: () => void;
}

export interface BridgeStartError {
  readonly config: AnyBridgeConfig;
  readonly cause: unknown;
}

/**
 * Starts the added bridges and the new versions of the changed ones, then stops the replaced
 * and removed ones, in one synchronous run: the broker hands device messages to its taps only
 * from its own callbacks on later turns of the event loop, so a message on a topic both an
 * old and a new bridge cover reaches exactly one of them, and no message finds the topic
 * untapped. A changed bridge keeps its name, so the new version appends to the same log; its
 * sinks start reading their cursors only once the old version is retired (see `retire`).
 *
 * Returns the bridges now running and those to retire, or, when a new bridge could not be
 * built, which one and why (the bridges built before it are torn down, the old ones run on).
 * Building a bridge must therefore not wait: a kind that needs asynchronous setup does it
 * inside, after it tapped the broker (as sinks open their connections on first write).
 */
export function swapBridges(running: readonly GatewayBridge[], plan: BridgePlan, create: BridgeFactory): { bridges: GatewayBridge[]; retired: Retired[] } | BridgeStartError {
  const started: GatewayBridge[] = [];
  const gates = new Map<string, () => void>();
  // An added bridge may have been removed before, its old cursors still in the buffer: it
  // prunes them only once the whole reload was built (a changed one once its old version retired).
  let built = () => {};
  const allBuilt = new Promise<void>((resolve) => (built = resolve));
  for (const config of [...plan.added, ...plan.changed]) {
    const gate = plan.changed.includes(config) ? new Promise<void>((open) => gates.set(config.name, open)) : undefined;
    try {
      started.push(create(config, gate, gate ?? allBuilt));
    } catch (cause) {
      // The bridges built so far never take over: they go, with what they registered.
      for (const bridge of started) bridge.discard();
      return { config, cause };
    }
  }
  built();
  const leaving = new Set([...plan.removed, ...gates.keys()]);
  const retired = running
    .filter((b) => leaving.has(b.config.name))
    .map((bridge): Retired => {
      const open = gates.get(bridge.config.name);
      return { bridge, stopped: bridge.stop(), ...(open === undefined ? {} : { open }) };
    });
  const replacements = new Map(started.map((b) => [b.config.name, b]));
  const bridges = [
    ...running.filter((b) => !plan.removed.includes(b.config.name)).map((b) => replacements.get(b.config.name) ?? b),
    ...started.filter((b) => !gates.has(b.config.name)),
  ];
  return { bridges, retired };
}

/**
 * Waits for a replaced or removed bridge's sinks to finish their windows, up to `timeoutMs`,
 * else tears it down (what they did not confirm stays buffered and is sent again); then lets
 * its successor's sinks read.
 */
export async function retire({ bridge, stopped, open }: Retired, timeoutMs: number, logger: Logger): Promise<void> {
  if (!(await settlesWithin(stopped, timeoutMs))) {
    logger.warn({ bridge: bridge.config.name, timeoutMs }, 'sinks of the replaced bridge did not finish in time; their unconfirmed messages stay buffered');
    bridge.abort();
  }
  open?.();
}

/** True when `promise` settles (either way) within `ms`. */
export async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const settled = await Promise.race([
    promise.then(
      () => true,
      () => true,
    ),
    new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms))),
  ]);
  clearTimeout(timer);
  return settled;
}
