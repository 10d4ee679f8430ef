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

// Streams: the contract every source, sink and operator of ferry/kafka, ferry/mqtt,
// ferry/buffer, ferry/redis, ferry/postgres and ferry/sqlite keeps
export type { Delivery } from './core/delivery.ts';
export type { Envelope, EnvelopeInit, Origin } from './core/envelope.ts';
export type { DeliveryOperator, Sink, SinkEvent, Source } from './core/stream.ts';
export { createEnvelope } from './core/envelope.ts';
export { createDelivery } from './core/delivery.ts';
export type { DeliveryHandlers } from './core/delivery.ts';
export type { StreamOptions } from './lib/component.ts';

// Errors: decide by `code`
export { ConfigError } from './config/issues.ts';
export type { ConfigIssue } from './config/issues.ts';
export { FerryError, isFerryError } from './core/errors.ts';
export type { ErrorCode } from './core/errors.ts';

// A gateway in this process
export { startGateway } from './lib/gateway.ts';
export type { GatewayHandle, GatewayOverrides, GatewayStatus, ReloadResult, StartGatewayOptions } from './lib/gateway.ts';
