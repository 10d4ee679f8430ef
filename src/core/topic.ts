/**
 * MQTT topic filter matching (MQTT 3.1.1 §4.7): `+` matches one level, a trailing `#`
 * matches the parent and every level below. Topics starting with `$` are matched only by
 * filters that start with the same `$` level.
 */
export function topicMatches(filter: string, topic: string): boolean {
  const f = filter.split('/');
  const t = topic.split('/');
  if (topic.startsWith('$') && !filter.startsWith('$')) return false;
  for (let i = 0; i < f.length; i++) {
    const level = f[i];
    if (level === '#') return true;
    if (i >= t.length) return false;
    if (level !== '+' && level !== t[i]) return false;
  }
  return f.length === t.length;
}

/** Why a topic filter is invalid, or undefined when it is valid. */
export function invalidFilterReason(filter: string): string | undefined {
  if (filter.length === 0) return 'a topic filter must not be empty';
  if (filter.includes('\u0000')) return 'a topic filter must not contain NUL';
  const levels = filter.split('/');
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i] as string;
    if (level.includes('#') && (level !== '#' || i !== levels.length - 1)) {
      return "'#' must be a whole level and the last one";
    }
    if (level.includes('+') && level !== '+') return "'+' must be a whole level";
  }
  return undefined;
}

export interface TopicLimits {
  /** Most UTF-8 bytes in a topic or filter. */
  readonly maxLength: number;
  /** Most levels (parts between slashes). */
  readonly maxLevels: number;
}

/** Why a PUBLISH topic is invalid, or undefined when it is valid. */
export function invalidTopicReason(topic: string, limits: TopicLimits): string | undefined {
  if (topic.length === 0) return 'a topic must not be empty';
  if (topic.includes('+') || topic.includes('#')) return 'a topic must not contain wildcards';
  return invalidCommon(topic, limits);
}

/** Why a SUBSCRIBE filter is invalid under the limits, or undefined when it is valid. */
export function invalidFilterWithin(filter: string, limits: TopicLimits): string | undefined {
  return invalidFilterReason(filter) ?? invalidCommon(filter, limits);
}

function invalidCommon(topic: string, limits: TopicLimits): string | undefined {
  if (topic.includes('\u0000')) return 'NUL is not allowed';
  if (Buffer.byteLength(topic) > limits.maxLength) return `longer than ${limits.maxLength} bytes`;
  if (topic.split('/').length > limits.maxLevels) return `deeper than ${limits.maxLevels} levels`;
  return undefined;
}
