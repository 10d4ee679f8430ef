/**
 * MQTT topic filter matching (MQTT 3.1.1 §4.7): `+` matches one level, a trailing `#`
 * matches the parent and every level below. Topics starting with `$` are matched only by
 * filters that start with the same `$` level.
 */
export function topicMatches(filter: string, topic: string): boolean {
  if (topic.startsWith('$') && !filter.startsWith('$')) return false;
  // Level by level without splitting: this runs for every message and every tap.
  let f = 0;
  let t = 0;
  for (;;) {
    const fEnd = levelEnd(filter, f);
    if (fEnd - f === 1 && filter.charCodeAt(f) === HASH) return true;
    if (t > topic.length) return false;
    const tEnd = levelEnd(topic, t);
    const plus = fEnd - f === 1 && filter.charCodeAt(f) === PLUS;
    if (!plus && !sameLevel(filter, f, fEnd, topic, t, tEnd)) return false;
    f = fEnd + 1;
    t = tEnd + 1;
    if (f > filter.length) return t > topic.length;
  }
}

const HASH = 0x23;
const PLUS = 0x2b;

function sameLevel(a: string, aFrom: number, aEnd: number, b: string, bFrom: number, bEnd: number): boolean {
  if (aEnd - aFrom !== bEnd - bFrom) return false;
  for (let i = 0; i < aEnd - aFrom; i++) if (a.charCodeAt(aFrom + i) !== b.charCodeAt(bFrom + i)) return false;
  return true;
}

/** Index of the '/' ending the level that starts at `from`, or the string's length. */
function levelEnd(s: string, from: number): number {
  const at = s.indexOf('/', from);
  return at === -1 ? s.length : at;
}

/** What every topic a filter matches begins with: its levels before the first wildcard one. */
export function filterHead(filter: string): string {
  const levels = filter.split('/');
  const wild = levels.findIndex((level) => level === '+' || level === '#');
  return wild === -1 ? filter : levels.slice(0, wild).join('/');
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

/**
 * NUL, control characters (U+0001-U+001F, U+007F-U+009F) and U+FFFD. MQTT requires closing the
 * connection on ill-formed UTF-8 (overlong encodings, surrogates) and on NUL, and allows it on
 * control characters; a newline in a topic would also forge lines in logs and `ferry history`.
 * The packet parser decodes ill-formed UTF-8 to U+FFFD, so a topic with it is refused, also the
 * rare one that held a well-formed U+FFFD.
 */
const UNWANTED = /[\u0000-\u001f\u007f-\u009f\ufffd]/;

function invalidCommon(topic: string, limits: TopicLimits): string | undefined {
  const unwanted = UNWANTED.exec(topic);
  if (unwanted !== null) {
    const c = unwanted[0];
    if (c === '\u0000') return 'NUL is not allowed';
    if (c === '\ufffd') return 'not well-formed UTF-8 (or U+FFFD, which marks bytes that were not)';
    return `control characters are not allowed (U+${c.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')})`;
  }
  if (Buffer.byteLength(topic) > limits.maxLength) return `longer than ${limits.maxLength} bytes`;
  if (levelCount(topic) > limits.maxLevels) return `deeper than ${limits.maxLevels} levels`;
  return undefined;
}

function levelCount(topic: string): number {
  let count = 1;
  for (let at = topic.indexOf('/'); at !== -1; at = topic.indexOf('/', at + 1)) count += 1;
  return count;
}
