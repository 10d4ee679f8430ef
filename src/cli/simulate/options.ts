import { UsageError } from './usage-error.ts';

/** The options as commander hands them over: strings, unchecked. */
export interface SimulateOptions {
  readonly profile: string;
  readonly url: string;
  readonly devices: string;
  readonly rate: string;
  readonly qos: string;
  readonly mqtt: string;
  readonly window: string;
  readonly duration?: string;
  readonly count?: string;
  readonly username?: string;
  readonly passwordEnv?: string;
  readonly json?: boolean;
}

export interface SimulateSettings {
  readonly profile: string;
  readonly url: string;
  readonly devices: number;
  readonly ratePerSec: number;
  readonly qos: 0 | 1 | 2;
  /** mqtt.js' protocolVersion: 4 is MQTT 3.1.1. */
  readonly protocolVersion: 4 | 5;
  readonly window: number;
  /** Exactly one of the two ends the run. */
  readonly durationMs?: number;
  readonly count?: number;
  readonly username?: string;
  readonly password?: string;
  readonly json: boolean;
}

const DEFAULT_DURATION = '30s';

export function parseSettings(options: SimulateOptions, env: NodeJS.ProcessEnv): SimulateSettings {
  if (options.duration !== undefined && options.count !== undefined) throw new UsageError('give --duration or --count, not both');
  const qos = Number(options.qos);
  if (qos !== 0 && qos !== 1 && qos !== 2) throw new UsageError(`--qos: expected 0, 1 or 2, got '${options.qos}'`);
  const protocolVersion = ({ '3.1.1': 4, '5': 5, '5.0': 5 } as const)[options.mqtt as '3.1.1' | '5' | '5.0'];
  if (protocolVersion === undefined) throw new UsageError(`--mqtt: expected 3.1.1 or 5, got '${options.mqtt}'`);
  const settings: SimulateSettings = {
    profile: options.profile,
    url: parseUrl(options.url),
    devices: wholeNumber('--devices', options.devices, 1),
    ratePerSec: rate(options.rate),
    qos,
    protocolVersion,
    window: wholeNumber('--window', options.window, 1),
    json: options.json === true,
    ...(options.count === undefined ? { durationMs: parseDuration(options.duration ?? DEFAULT_DURATION) } : { count: wholeNumber('--count', options.count, 1) }),
    ...login(options, env),
  };
  return settings;
}

/** `500ms`, `30s`, `2m`, `1h`; a bare number is seconds. */
export function parseDuration(text: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;
  const ms = match === null ? Number.NaN : Number(match[1]) * unit[(match[2] ?? 's') as keyof typeof unit];
  if (!(ms > 0)) throw new UsageError(`--duration: expected a time such as 30s, 2m or 500ms, got '${text}'`);
  return ms;
}

function parseUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`--url: expected mqtt://host:port, got '${text}'`);
  }
  if (!['mqtt:', 'tcp:', 'mqtts:'].includes(url.protocol) || url.hostname === '') throw new UsageError(`--url: expected mqtt://host:port (or mqtts://), got '${text}'`);
  return text;
}

function wholeNumber(flag: string, text: string, min: number): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < min) throw new UsageError(`${flag}: expected a whole number of at least ${min}, got '${text}'`);
  return value;
}

function rate(text: string): number {
  const value = Number(text);
  if (!Number.isFinite(value) || value < 0 || text.trim() === '') throw new UsageError(`--rate: expected messages per second (0 for as fast as possible), got '${text}'`);
  return value;
}

function login(options: SimulateOptions, env: NodeJS.ProcessEnv): { username?: string; password?: string } {
  if (options.passwordEnv === undefined) return options.username === undefined ? {} : { username: options.username };
  if (options.username === undefined) throw new UsageError('--password-env needs --username');
  const password = env[options.passwordEnv];
  if (password === undefined) throw new UsageError(`--password-env: environment variable ${options.passwordEnv} is not set`);
  return { username: options.username, password };
}
