/**
 * `${VAR}`, `${VAR:-default}` (default when unset or empty) and `${VAR:+word}` (word when
 * set and non-empty, else empty) inside config strings; `$${` stands for a literal `${`.
 * Variable names are upper case (A-Z, 0-9, _): other `${...}`, such as `${1}` or `${topic}`,
 * are message templates and are left for the component that renders them.
 */
const pattern = /\$\$\{|\$\{([A-Z_][A-Z0-9_]*)(?:(:-|:\+)([^}]*))?\}/g;

export type Env = Readonly<Record<string, string | undefined>>;

export interface InterpolationResult {
  readonly value: string;
  /** Variables referenced without a default that are not set. */
  readonly missing: readonly string[];
}

export function interpolate(text: string, env: Env): InterpolationResult {
  const missing: string[] = [];
  const value = text.replace(pattern, (match, name: string | undefined, op: string | undefined, word = '') => {
    if (match === '$${') return '${';
    const current = env[name as string];
    const set = current !== undefined && current !== '';
    if (op === ':-') return set ? (current as string) : (word as string);
    if (op === ':+') return set ? (word as string) : '';
    if (current === undefined) {
      missing.push(name as string);
      return '';
    }
    return current;
  });
  return { value, missing };
}

export function hasInterpolation(text: string): boolean {
  return text.includes('${');
}
