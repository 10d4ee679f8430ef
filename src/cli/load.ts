import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { ConfigError, formatIssue } from '../config/issues.ts';
import { type GatewayConfig, loadConfig, loadGatewayConfig } from '../config/load.ts';
import { componentKinds } from '../runtime/registry.ts';

/**
 * Loads the config for a command, TypeScript bridges included, or prints every problem to
 * stderr and returns undefined.
 */
export async function loadForCommand(file: string): Promise<GatewayConfig | undefined> {
  if (!found(file)) return undefined;
  try {
    return await loadGatewayConfig(file, { kinds: componentKinds });
  } catch (error) {
    return reported(error);
  }
}

/**
 * The gateway's own settings (admin address, data directory) without importing TypeScript
 * bridges, or undefined with the problems printed to stderr.
 */
export function loadSettings(file: string): GatewayConfig | undefined {
  if (!found(file)) return undefined;
  try {
    return loadConfig(file, { kinds: componentKinds });
  } catch (error) {
    return reported(error);
  }
}

export interface DataDirOptions {
  readonly config: string;
  readonly dataDir?: string;
}

/**
 * The data directory a command works on: --data-dir when given, else the config's
 * gateway.dataDir. Undefined (with the config's problems printed) when the config does not
 * load. TypeScript bridges are not imported for this.
 */
export function resolveDataDir(options: DataDirOptions): string | undefined {
  if (options.dataDir !== undefined) return resolve(options.dataDir);
  if (!found(options.config)) return undefined;
  try {
    return loadConfig(options.config, { kinds: componentKinds }).dataDirPath;
  } catch (error) {
    return reported(error);
  }
}

function found(file: string): boolean {
  if (existsSync(file)) return true;
  process.stderr.write(`ferry: config file not found: ${file} (pass --config FILE)\n`);
  return false;
}

function reported(error: unknown): undefined {
  if (!(error instanceof ConfigError)) throw error;
  for (const issue of error.issues) process.stderr.write(`${formatIssue(issue)}\n`);
  const count = error.issues.length;
  process.stderr.write(`ferry: ${count} problem${count === 1 ? '' : 's'} in the config\n`);
  return undefined;
}
