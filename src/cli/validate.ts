import { relative } from 'node:path';
import { ConfigError, formatIssue } from '../config/issues.ts';
import { loadConfig } from '../config/load.ts';
import { typecheckBridges } from '../config/typecheck.ts';
import { componentKinds } from '../runtime/registry.ts';
import { loadForCommand } from './load.ts';

export async function validateCommand(options: { config: string }): Promise<void> {
  const typecheck = typecheckBridges(bridgeModules(options.config), display);
  const typeErrors = typecheck.checked ? typecheck.issues : [];
  // Before the config's own problems, which end with their count: every count comes last.
  for (const issue of typeErrors) process.stderr.write(`${formatIssue(issue)}\n`);
  const config = await loadForCommand(options.config);
  if (config === undefined || typeErrors.length > 0) {
    if (typeErrors.length > 0) process.stderr.write(`ferry: ${typeErrors.length} type error(s) in the TypeScript bridges\n`);
    process.exitCode = 1;
    return;
  }
  const enabled = config.bridgeConfigs.filter((b) => b.enabled).length;
  const modules = config.bridgeConfigs.length - config.bridgeConfigs.filter((b) => !('handle' in b)).length;
  const checked = modules === 0 ? '' : typecheck.checked ? '; TypeScript bridges type-checked' : `; TypeScript bridges not type-checked: ${typecheck.reason}`;
  process.stdout.write(
    `${options.config}: ok (${config.bridgeConfigs.length} bridge${config.bridgeConfigs.length === 1 ? '' : 's'}, ${enabled} enabled; ${config.deviceProfiles.length} device profile${config.deviceProfiles.length === 1 ? '' : 's'}${checked})\n`,
  );
}

/** The TypeScript bridges a config lists, without importing them (none when the config does not load: its problems are reported by the import). */
function bridgeModules(file: string): readonly string[] {
  try {
    return loadConfig(file, { kinds: componentKinds }).bridgeModules;
  } catch (error) {
    if (error instanceof ConfigError) return [];
    throw error;
  }
}

function display(path: string): string {
  const rel = relative(process.cwd(), path);
  return rel.startsWith('..') ? path : rel;
}
