import { type AnyBridgeConfig, isHandlerBridge } from '../config/bridge-module.ts';
import { type BridgeDeps, type BridgeStatus, RunningBridge } from './bridge.ts';
import { HandlerBridge } from './handler-bridge.ts';

/** What the gateway holds of a running bridge, YAML or TypeScript. */
export interface Bridge {
  readonly config: AnyBridgeConfig;
  /** Stops taking messages; resolves when every sink settled what it held. */
  stop(): Promise<void>;
  /** Tears everything down at once, without waiting for writes. */
  abort(): void;
  status(): BridgeStatus;
}

/** Starts a bridge from its config: a TypeScript bridge runs its handler behind the buffer. */
export function createBridge(config: AnyBridgeConfig, deps: BridgeDeps): Bridge {
  return isHandlerBridge(config) ? new HandlerBridge(config, deps) : new RunningBridge(config, deps);
}
