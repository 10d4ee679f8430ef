/** A topic's wildcard captures, `${1}` to `${n}` and `${#}`, as templates and handlers read them. */

/** What a topic's match with a list of filters captured: `captures[0]` is `${1}`, `rest` is `${#}`. */
export interface TopicCaptures {
  captures: string[];
  rest: string | undefined;
}

/** Captures by topic, per list of filters: a device publishes to the same few topics, message after message. */
const capturesByFilters = new WeakMap<readonly string[], Map<string, TopicCaptures>>();
const NO_CAPTURES: TopicCaptures = { captures: [], rest: undefined };
/** Topics remembered per list of filters, of at most CAPTURED_TOPIC_LENGTH characters (a few MB at most); past it the memory starts over. */
const CAPTURES_KEPT = 4096;
const CAPTURED_TOPIC_LENGTH = 256;

/** `topicCaptures`, remembered: for templates, which only read the result. */
export function sharedCaptures(filters: readonly string[], topic: string): TopicCaptures {
  if (filters.length === 0) return NO_CAPTURES;
  if (topic.length > CAPTURED_TOPIC_LENGTH) return topicCaptures(filters, topic);
  let byTopic = capturesByFilters.get(filters);
  if (byTopic === undefined) capturesByFilters.set(filters, (byTopic = new Map()));
  let found = byTopic.get(topic);
  if (found === undefined) {
    if (byTopic.size >= CAPTURES_KEPT) byTopic.clear();
    found = topicCaptures(filters, topic);
    byTopic.set(topic, found);
  }
  return found;
}

/**
 * The levels of `topic` matched by the wildcards of the first of `filters` that matches it:
 * `captures[0]` is `${1}`, `rest` is `${#}`. Empty when no filter matches.
 */
export function topicCaptures(filters: readonly string[], topic: string): TopicCaptures {
  const levels = topic.split('/');
  for (const filter of filters) {
    const found = capture(filter.split('/'), levels);
    if (found !== undefined) return found;
  }
  return { captures: [], rest: undefined };
}

function capture(filter: readonly string[], topic: readonly string[]): TopicCaptures | undefined {
  const captures: string[] = [];
  for (let i = 0; i < filter.length; i++) {
    const level = filter[i];
    if (level === '#') return { captures, rest: topic.slice(i).join('/') };
    if (i >= topic.length) return undefined;
    if (level === '+') captures.push(topic[i] as string);
    else if (level !== topic[i]) return undefined;
  }
  return filter.length === topic.length ? { captures, rest: undefined } : undefined;
}
