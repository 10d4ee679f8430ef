import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { ConfigError, formatIssue } from '../config/issues.ts';
import { type GatewayConfig, loadConfig } from '../config/load.ts';
import { componentKinds } from '../runtime/registry.ts';

/** Loads the config for a command, or prints every problem to stderr and returns undefined. */
export function loadForCommand(file: string): GatewayConfig | undefined {
  if (!existsSync(file)) {
    process.stderr.write(`ferry: config file not found: ${file} (pass --config FILE)\n`);
    return undefined;
  }
  try {
    return loadConfig(file, { kinds: componentKinds });
  } catch (error) {
    if (error instanceof ConfigError) {
      for (const issue of error.issues) process.stderr.write(`${formatIssue(issue)}\n`);
      const count = error.issues.length;
      process.stderr.write(`ferry: ${count} problem${count === 1 ? '' : 's'} in the config\n`);
      return undefined;
    }
    throw error;
  }
}

export interface DataDirOptions {
  readonly config: string;
  readonly dataDir?: string;
}

/**
 * The data directory a command works on: --data-dir when given, else the config's
 * gateway.dataDir. Undefined (with the config's problems printed) when the config does not load.
 */
export function resolveDataDir(options: DataDirOptions): string | undefined {
  if (options.dataDir !== undefined) return resolve(options.dataDir);
  return loadForCommand(options.config)?.dataDirPath;
}
