import { topicMatches } from '../core/topic.ts';

/** Who a connected client is, as far as the ACL is concerned. */
export interface Identity {
  readonly clientId: string;
  readonly username: string | undefined;
  /** The device profile that let it in, or undefined for an anonymous client. */
  readonly profile: string | undefined;
  readonly publish: readonly string[];
  readonly subscribe: readonly string[];
}

/** Replaces %c (client id) and %u (username) in an ACL pattern. */
export function expandPattern(pattern: string, identity: Pick<Identity, 'clientId' | 'username'>): string {
  if (!pattern.includes('%')) return pattern;
  return pattern.replace(/%[cu]/g, (p) => (p === '%c' ? identity.clientId : (identity.username ?? '')));
}

/** May this client publish to `topic`? `$` topics need a pattern that names them. */
export function mayPublish(identity: Identity, topic: string): boolean {
  return identity.publish.some((pattern) => topicMatches(expandPattern(pattern, identity), topic));
}

/** May this client subscribe to `filter`: is every topic it can match allowed by one pattern? */
export function maySubscribe(identity: Identity, filter: string): boolean {
  return identity.subscribe.some((pattern) => filterWithin(filter, expandPattern(pattern, identity)));
}

/** Each identity's subscribe patterns with %c and %u filled in, for mayReceive. */
const receivePatterns = new WeakMap<Identity, readonly string[]>();

/**
 * May a message on `topic` be sent to this client: does one of its subscribe patterns match
 * the topic? Checked for every message sent, so a subscription made or saved under an older
 * ACL cannot carry messages the current one refuses.
 */
export function mayReceive(identity: Identity, topic: string): boolean {
  let patterns = receivePatterns.get(identity);
  if (patterns === undefined) {
    patterns = identity.subscribe.map((pattern) => expandPattern(pattern, identity));
    receivePatterns.set(identity, patterns);
  }
  for (const pattern of patterns) if (topicMatches(pattern, topic)) return true;
  return false;
}

/**
 * True when every topic `filter` matches is also matched by `pattern`. A trailing `#` matches
 * its parent level too (MQTT 3.1.1 §4.7.1.2), so `a/#` allows the filters `a` and `a/#`.
 */
export function filterWithin(filter: string, pattern: string): boolean {
  if (filter.startsWith('$') !== pattern.startsWith('$')) return false;
  const f = filter.split('/');
  const p = pattern.split('/');
  for (let i = 0; i < f.length; i++) {
    const pl = p[i];
    const fl = f[i] as string;
    if (pl === '#') return true;
    if (pl === undefined || fl === '#') return false;
    if (pl === '+') continue;
    if (fl === '+' || fl !== pl) return false;
  }
  return f.length === p.length || (p.length === f.length + 1 && p[f.length] === '#');
}

/**
 * Shell-style glob (`*`, `?`) over a whole string. %c and %u stand for the client id and
 * username taken literally: a `*` in someone's username is not a wildcard.
 */
export function globMatches(glob: string, value: string, identity?: Pick<Identity, 'clientId' | 'username'>): boolean {
  const literal = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const source = glob
    .split(/(%[cu])/)
    .map((part) => {
      if (identity !== undefined && part === '%c') return literal(identity.clientId);
      if (identity !== undefined && part === '%u') return literal(identity.username ?? '');
      return literal(part).replace(/\\\*/g, '.*').replace(/\\\?/g, '.');
    })
    .join('');
  return new RegExp(`^${source}$`, 's').test(value);
}
