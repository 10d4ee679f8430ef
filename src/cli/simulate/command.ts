import { existsSync } from 'node:fs';
import { BrokerUnreachableError, Fleet } from './fleet.ts';
import { parseSettings, type SimulateOptions } from './options.ts';
import { TelemetryPayloads } from './payload.ts';
import { clientIdsOf, loadProfile } from './profile.ts';
import { startProgress } from './progress.ts';
import { formatSummary, summarize } from './summary.ts';
import { UsageError } from './usage-error.ts';

const DRAIN_TIMEOUT_MS = 5_000;

export async function simulateCommand(options: SimulateOptions): Promise<void> {
  try {
    await simulate(options);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`ferry: ${error.message}\n`);
    process.exitCode = 1;
  }
}

async function simulate(options: SimulateOptions): Promise<void> {
  const settings = parseSettings(options, process.env);
  if (!existsSync(settings.profile)) throw new UsageError(`profile not found: ${settings.profile} (--profile)`);
  const profile = loadProfile(settings.profile);
  const payloads = new TelemetryPayloads(profile.telemetry, settings.devices);
  const login = {
    ...(settings.username === undefined ? {} : { username: settings.username }),
    ...(settings.password === undefined ? {} : { password: settings.password }),
  };
  const fleet = new Fleet({
    url: settings.url,
    clientIds: clientIdsOf(profile.clientId, settings.devices),
    login,
    qos: settings.qos,
    protocolVersion: settings.protocolVersion,
    ratePerSec: settings.ratePerSec,
    window: settings.window,
    ...(settings.count === undefined ? {} : { count: settings.count }),
    topic: (clientId) => profile.telemetry.topic.replaceAll('%c', clientId),
    payload: (device, seq) => payloads.next(device, seq),
    drainTimeoutMs: DRAIN_TIMEOUT_MS,
  });
  try {
    await fleet.connect();
  } catch (error) {
    if (error instanceof BrokerUnreachableError) throw new UsageError(unreachable(settings.url, error.cause));
    throw error;
  }

  // Ctrl-C stops publishing and still reports; a second one exits at once.
  const interrupt = () => {
    fleet.stop();
    process.once('SIGINT', () => process.exit(130));
  };
  process.once('SIGINT', interrupt);
  const deadline = settings.durationMs === undefined ? undefined : setTimeout(() => fleet.stop(), settings.durationMs);
  const progress = startProgress(fleet);
  const result = await fleet.run();
  progress.stop();
  clearTimeout(deadline);
  process.off('SIGINT', interrupt);

  const summary = summarize(profile.name, settings.url, settings.qos, result);
  process.stdout.write(settings.json ? `${JSON.stringify(summary)}\n` : formatSummary(summary));
  if (summary.failed > 0 || summary.connectionErrors > 0 || summary.acked < summary.sent) process.exitCode = 1;
}

function unreachable(url: string, cause: Error): string {
  const code = (cause as { code?: unknown }).code;
  if (typeof code === 'number') return `the MQTT broker at ${url} (--url) refused the connection: ${cause.message} (check --username and --password-env)`;
  return `cannot reach the MQTT broker at ${url} (--url): ${cause.message}`;
}
