import { type AnyBridgeConfig, isHandlerBridge } from '../config/bridge-module.ts';
import { type BridgeDeps, type GatewayBridge, RunningBridge } from './bridge.ts';
import { HandlerBridge } from './handler-bridge.ts';

/** Starts a bridge from its config: a TypeScript bridge runs its handler behind the buffer. */
export function createBridge(config: AnyBridgeConfig, deps: BridgeDeps): GatewayBridge {
  return isHandlerBridge(config) ? new HandlerBridge(config, deps) : new RunningBridge(config, deps);
}
