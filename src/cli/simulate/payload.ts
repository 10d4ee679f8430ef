import type { Telemetry } from './profile.ts';

/**
 * Realistic readings: each device's fields start at a random point of their range and move by
 * a random step of up to 2% of the range per message, reflected at the bounds.
 */
export class TelemetryPayloads {
  readonly #fields: readonly (readonly [string, number, number])[];
  readonly #state: number[][];

  constructor(telemetry: Telemetry, devices: number) {
    this.#fields = Object.entries(telemetry.fields).map(([name, { min, max }]) => [name, Math.min(min, max), Math.max(min, max)] as const);
    this.#state = Array.from({ length: devices }, () => this.#fields.map(([, min, max]) => min + Math.random() * (max - min)));
  }

  next(device: number, seq: number): Buffer {
    const values = this.#state[device] as number[];
    const body: Record<string, number> = { ts: Date.now(), seq };
    this.#fields.forEach(([name, min, max], i) => {
      const span = max - min;
      let value = (values[i] as number) + (Math.random() * 2 - 1) * 0.02 * span;
      if (value > max) value = max - (value - max);
      if (value < min) value = min + (min - value);
      values[i] = value;
      body[name] = Math.round(value * 100) / 100;
    });
    return Buffer.from(JSON.stringify(body));
  }
}
