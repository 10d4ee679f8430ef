import { FerryError } from '../core/errors.ts';

/** One thing wrong in a config file, with where it is. */
export interface ConfigIssue {
  readonly file: string;
  /** 1-based; 0 when the problem is the file as a whole. */
  readonly line: number;
  readonly column: number;
  /** Key path inside the file, e.g. "to[0].kafka.topic"; empty for the document. */
  readonly path: string;
  readonly message: string;
}

export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else out += out === '' ? String(key) : `.${String(key)}`;
  }
  return out;
}

export function formatIssue(issue: ConfigIssue): string {
  const where = issue.line > 0 ? `${issue.file}:${issue.line}:${issue.column}` : issue.file;
  const path = issue.path === '' ? '' : ` ${issue.path}:`;
  return `${where}:${path} ${issue.message}`;
}

/** Thrown when a config does not load; carries every issue found, not just the first. */
export class ConfigError extends FerryError {
  readonly issues: readonly ConfigIssue[];

  constructor(issues: readonly ConfigIssue[]) {
    const count = issues.length === 1 ? '1 problem' : `${issues.length} problems`;
    super('CONFIG_INVALID', `config has ${count}:\n${issues.map((i) => `  ${formatIssue(i)}`).join('\n')}`, {
      component: 'config',
    });
    this.issues = issues;
  }
}
