import { type RedisConnections, resolveRedisReference } from '../redis/connection-config.ts';
import type { ConfigIssue } from './issues.ts';
import { formatPath } from './issues.ts';
import type { Loaded } from './payload-schemas.ts';
import type { BridgeConfig } from './schema.ts';

/**
 * Resolves the Redis a YAML bridge names (`rateLimit.redis`, `lookup.redis`: a connection
 * name from gateway.yaml's `redis:`, or a URL) into the connection settings, set as their
 * `connection`. A name that is not declared is a problem at its line. The settings are part
 * of the bridge's config, so a reload that changes a connection restarts the bridges using it.
 */
export function resolveRedisRefs(bridges: readonly Loaded<BridgeConfig>[], connections: RedisConnections, issues: ConfigIssue[]): Loaded<BridgeConfig>[] {
  return bridges.map((loaded) => {
    const { value: bridge, yaml } = loaded;
    const resolve = (reference: string, at: (string | number)[]) => {
      const settings = resolveRedisReference(reference, connections);
      if (settings === undefined && bridge.enabled) {
        const declared = Object.keys(connections);
        issues.push({
          file: bridge.file,
          ...yaml.locate(at),
          path: formatPath(at),
          message: `no Redis connection named '${reference}' under \`redis:\` in gateway.yaml (${declared.length === 0 ? 'none is declared' : `declared: ${declared.join(', ')}`}); give its name or a redis:// URL`,
        });
      }
      return settings;
    };
    let changed = bridge;
    if (bridge.rateLimit !== undefined) {
      const connection = resolve(bridge.rateLimit.redis, ['rateLimit', 'redis']);
      if (connection !== undefined) changed = { ...changed, rateLimit: { ...bridge.rateLimit, connection } };
    }
    if (bridge.transform?.some((step) => 'lookup' in step)) {
      const transform = bridge.transform.map((step, index) => {
        if (!('lookup' in step)) return step;
        const connection = resolve(step.lookup.redis, ['transform', index, 'lookup', 'redis']);
        return connection === undefined ? step : { lookup: { ...step.lookup, connection } };
      });
      changed = { ...changed, transform };
    }
    return changed === bridge ? loaded : { ...loaded, value: changed };
  });
}
