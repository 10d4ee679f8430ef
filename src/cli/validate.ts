import { loadForCommand } from './load.ts';

export async function validateCommand(options: { config: string }): Promise<void> {
  const config = await loadForCommand(options.config);
  if (config === undefined) {
    process.exitCode = 1;
    return;
  }
  const enabled = config.bridgeConfigs.filter((b) => b.enabled).length;
  process.stdout.write(
    `${options.config}: ok (${config.bridgeConfigs.length} bridge${config.bridgeConfigs.length === 1 ? '' : 's'}, ${enabled} enabled; ${config.deviceProfiles.length} device profile${config.deviceProfiles.length === 1 ? '' : 's'})\n`,
  );
}
