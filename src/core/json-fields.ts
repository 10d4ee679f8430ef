/**
 * Field selection on decoded JSON for the `keep` and `drop` steps. A path is a list of
 * object keys (`meta.debug` is ['meta', 'debug']); paths go through objects only, not into
 * arrays. Neither function changes its input.
 */

type JsonObject = Record<string, unknown>;

const isObject = (value: unknown): value is JsonObject => typeof value === 'object' && value !== null && !Array.isArray(value);

/** A copy of `value` with only the fields at `paths` (and the objects leading to them); missing paths are skipped. */
export function keepFields(value: JsonObject, paths: readonly (readonly string[])[]): JsonObject {
  const out: JsonObject = {};
  for (const path of paths) {
    let from: unknown = value;
    for (const key of path) from = isObject(from) && Object.hasOwn(from, key) ? from[key] : undefined;
    if (from === undefined) continue;
    let to = out;
    path.slice(0, -1).forEach((key) => {
      if (!isObject(to[key])) to[key] = {};
      to = to[key] as JsonObject;
    });
    to[path.at(-1) as string] = from;
  }
  return out;
}

/** A copy of `value` without the fields at `paths`; objects on the way are copied, the rest shared. */
export function dropFields(value: JsonObject, paths: readonly (readonly string[])[]): JsonObject {
  let out = value;
  for (const path of paths) out = dropOne(out, path);
  return out;
}

function dropOne(value: JsonObject, path: readonly string[]): JsonObject {
  const [key, ...rest] = path as [string, ...string[]];
  if (!Object.hasOwn(value, key)) return value;
  if (rest.length === 0) {
    const { [key]: _dropped, ...others } = value;
    return others;
  }
  const child = value[key];
  if (!isObject(child)) return value;
  const dropped = dropOne(child, rest);
  return dropped === child ? value : { ...value, [key]: dropped };
}

export function splitPath(path: string): string[] {
  return path.split('.');
}

export { isObject as isJsonObject };
