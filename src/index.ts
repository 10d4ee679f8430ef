/**
 * Ferry's public API for custom handlers: TypeScript bridges in `bridges/*.ts`.
 *
 * ```ts
 * import { defineBridge, type Message } from 'ferry';
 * ```
 */

// Defining a bridge
export { defineBridge } from './handler/define.ts';
export type { BridgeDefinition, BridgeTools, ComponentSpec } from './handler/define.ts';
export type { SinkConfigs, SinkSpec, SourceConfigs, SourceSpec } from './handler/specs.ts';

// What a handler receives and emits
export type { Message, Output, OutputInit } from './handler/define.ts';
export type { RedisSetOptions, RedisTools } from './redis/handler-tools.ts';

// Operators that settle what they drop
export { filterMessages } from './handler/operators.ts';
