import { BRIDGE, type MetricSpec, SINK } from './spec.ts';

/** Bridges (YAML and TypeScript), their sinks, rate limits and config reloads. */
export const bridgeMetrics = [
  { name: 'bridge.messages.in', type: 'counter', unit: 'messages', labels: { bridge: BRIDGE }, help: 'Messages a bridge took from its source that passed its rate limit and transform steps.' },
  {
    name: 'bridge.messages.rejected',
    type: 'counter',
    unit: 'messages',
    labels: {
      bridge: BRIDGE,
      reason: { meaning: 'the step that refused it', values: ['not_json', 'not_object', 'schema', 'rate_limited', 'failed'] },
    },
    help: 'Messages a transform step or the rate limit (`onExceed: reject`) refused: acknowledged to the device and kept in the bridge\'s dead letters.',
  },
  { name: 'bridge.source.failed', type: 'counter', unit: 'events', labels: { bridge: BRIDGE }, help: 'Times a bridge\'s source gave up (a TLS file it cannot read, say) and took no more messages until a reload.' },
  { name: 'sink.messages.written', type: 'counter', unit: 'messages', labels: { bridge: BRIDGE, sink: SINK }, help: 'Messages a sink wrote and the system behind it confirmed.' },
  { name: 'sink.messages.failed', type: 'counter', unit: 'messages', labels: { bridge: BRIDGE, sink: SINK }, help: 'Messages in sink writes that failed (retried from the buffer, or dead-lettered when no retry can help).' },
  {
    name: 'ratelimit.overflow',
    type: 'counter',
    unit: 'messages',
    labels: { bridge: BRIDGE },
    help: 'Messages refused unacknowledged because `maxWaiting` messages of the bridge were already waiting for the rate limit (their devices send them again).',
  },
  {
    name: 'ratelimit.unavailable',
    type: 'counter',
    unit: 'messages',
    labels: { bridge: BRIDGE },
    help: 'Messages let through without a limit because Redis could not be reached (`failOpen: true`).',
  },
  { name: 'handler.errors', type: 'counter', unit: 'errors', labels: { bridge: BRIDGE }, help: 'Failures of a TypeScript bridge\'s pipeline (an exception in an operator); the message it failed on is dead-lettered, the others it held are handed to the restarted pipeline.' },
  { name: 'handler.restarts', type: 'counter', unit: 'events', labels: { bridge: BRIDGE }, help: 'Times a TypeScript bridge\'s `handle` was called anew after its pipeline failed.' },
  {
    name: 'handler.rejected',
    type: 'counter',
    unit: 'messages',
    labels: { bridge: BRIDGE },
    help: 'Messages of a TypeScript bridge dead-lettered: by `message.reject(reason)`, or as the cause of a pipeline failure (an error thrown while the message was handled, `json()` on a payload that is not JSON).',
  },
  {
    name: 'handler.outputs.skipped',
    type: 'counter',
    unit: 'messages',
    labels: { bridge: BRIDGE, sink: SINK },
    help: 'Outputs a restarted pipeline built again for a message whose earlier run had sent them already: not sent twice.',
  },
  {
    name: 'handler.outputs.after_settle',
    type: 'counter',
    unit: 'messages',
    labels: { bridge: BRIDGE, sink: SINK },
    help: 'Outputs built from a message that had settled already (use `message.keep()` for messages you build later outputs from): sent, but a crash before they are written loses them.',
  },
  {
    name: 'handler.held_too_long',
    type: 'counter',
    unit: 'messages',
    labels: { bridge: BRIDGE, action: { meaning: 'what `onHoldTimeout` did', values: ['warn', 'ack', 'deadLetter'] } },
    help: 'Messages a TypeScript bridge\'s handler held longer than its `maxHoldMs`, by what was done with them.',
  },
  {
    name: 'handler.outputs.lost',
    type: 'counter',
    unit: 'messages',
    labels: { bridge: BRIDGE, sink: SINK },
    help: 'Outputs built from no message (`tools.to(sink, [])`) that their sink failed: with no input to deliver again, they are lost.',
  },
  {
    name: 'config.reloads',
    type: 'counter',
    unit: 'reloads',
    labels: { result: { meaning: 'what became of the reload', values: ['applied', 'refused', 'not_running'] } },
    help: 'Config reloads (SIGHUP, `ferry reload`, `POST /api/reload`): applied, refused for a problem in the config, or asked while the gateway was not running.',
  },
] as const satisfies readonly MetricSpec[];
