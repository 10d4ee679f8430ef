/**
 * `${VAR}`, `${VAR:-default}` (default when unset or empty) and `${VAR:+word}` (word when
 * set and non-empty, else empty) inside config strings; `$${` stands for a literal `${`. A
 * default or word is interpolated in turn, so `${DATA_DIR:-${HOME}/ferry}` nests as in a shell
 * (its braces are matched: a `${` in it opens one, a `$${` does not). Variable names are upper
 * case (A-Z, 0-9, _): other `${...}`, such as `${1}` or `${topic}`, are message templates and
 * are left for the component that renders them.
 */
const VARIABLE = /\$\{([A-Z_][A-Z0-9_]*)(:-|:\+|\})/y;

export type Env = Readonly<Record<string, string | undefined>>;

export interface InterpolationResult {
  readonly value: string;
  /** Variables referenced without a default that are not set. */
  readonly missing: readonly string[];
}

export function interpolate(text: string, env: Env): InterpolationResult {
  const missing: string[] = [];
  return { value: expand(text, env, missing), missing };
}

/**
 * The variables `text` names, each once, in order: those of a default or word too when it is
 * used (`${PORT:-${DEFAULT_PORT}}` names DEFAULT_PORT only while PORT is unset or empty).
 */
export function variablesOf(text: string, env: Env): string[] {
  const variables = new Set<string>();
  expand(text, env, [], variables);
  return [...variables];
}

function expand(text: string, env: Env, missing: string[], variables?: Set<string>): string {
  let out = '';
  let from = 0;
  for (let at = text.indexOf('$', from); at !== -1; at = text.indexOf('$', from)) {
    out += text.slice(from, at);
    if (text.startsWith('$${', at)) {
      out += '${';
      from = at + 3;
      continue;
    }
    VARIABLE.lastIndex = at;
    const variable = VARIABLE.exec(text);
    const name = variable?.[1];
    const op = variable?.[2];
    const close = op === undefined || op === '}' ? undefined : closingBrace(text, VARIABLE.lastIndex);
    if (name === undefined || (op !== '}' && close === undefined)) {
      // Not a variable (a message template such as ${topic}), or a default never closed: as it is.
      out += '$';
      from = at + 1;
      continue;
    }
    variables?.add(name);
    const current = env[name];
    const set = current !== undefined && current !== '';
    if (op === '}') {
      if (current === undefined) missing.push(name);
      out += current ?? '';
      from = VARIABLE.lastIndex;
      continue;
    }
    const word = text.slice(VARIABLE.lastIndex, close);
    if (op === ':-') out += set ? (current as string) : expand(word, env, missing, variables);
    else out += set ? expand(word, env, missing, variables) : '';
    from = (close as number) + 1;
  }
  return out + text.slice(from);
}

/** The index of the `}` that closes a default or word starting at `from`, or undefined. */
function closingBrace(text: string, from: number): number | undefined {
  let depth = 0;
  for (let i = from; i < text.length; i++) {
    if (text.startsWith('$${', i)) i += 2;
    else if (text.startsWith('${', i)) {
      depth += 1;
      i += 1;
    } else if (text[i] === '}') {
      if (depth === 0) return i;
      depth -= 1;
    }
  }
  return undefined;
}

export function hasInterpolation(text: string): boolean {
  return text.includes('${');
}
